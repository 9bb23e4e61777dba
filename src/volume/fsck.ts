/**
 * fsck: reconcile a volume's info file with the chain on disk after a crash, never losing a
 * snapshot's data, and say what was done.
 *
 *  1. this driver's temp files (info/journal writes, new volumes) are removed;
 *  2. a journaled create/delete is finished or undone (recover.ts);
 *  3. every file of the volume is scanned (headers only, names validated) into a graph;
 *  4. a missing active file or a missing link of the active chain — what Cinder's own driver
 *     leaves when it dies between deleting a committed file and rewriting the info file /
 *     the next header — is bridged when exactly one candidate (the top of the remaining
 *     fragment, which holds the committed data) exists;
 *  5. info entries naming files that are gone are dropped (their data went with the file);
 *  6. files nothing needs (not in the active chain, not under any snapshot's file) and nothing
 *     backs onto: an overlay on the active file that holds data is adopted as the active file
 *     (an attached create the guest had moved onto), an empty one removed (a create that never
 *     got recorded); one hanging off the kept chains is removed (a deleted snapshot's file whose
 *     data are already merged). Anything else unaccounted for is reported, not touched;
 *  7. leftover temporary (clone) snapshots are deleted;
 *  8. leaked clusters (allocated, unreferenced: a crash mid-allocation) are freed.
 * Anything ambiguous or hostile is reported as a problem and left alone.
 */
import { CowError, isCowError } from '../errors.js';
import { rebaseImage } from '../image/rebase.js';
import type { ImageFormat } from '../image/types.js';
import type { OperationContext } from './context.js';
import { deleteSnapshot } from './delete-snapshot.js';
import type { VolumeInfo } from './info-file.js';
import { readJournal } from './journal.js';
import { recover, type NovaOutcome } from './recover.js';
import { isAttached, type VolumeStatus } from './status.js';
import { MAX_CHAIN_DEPTH, snapshotsMapping, withoutSnapshot } from './volume-files.js';

export interface FsckOptions {
  /** The volume's status (default `available`): decides whether a guest may be using a file. */
  status?: VolumeStatus;
  /** Report what would be done, change nothing. */
  dryRun?: boolean;
  /**
   * What Nova did with a request it accepted and never reported on (recover.ts), when the
   * chain cannot tell: `done` (the guest is on the new overlay / the merge finished) or `failed`.
   */
  novaOutcome?: NovaOutcome;
}

export type FsckActionKind =
  | 'removed-temp-file'
  | 'recovered'
  | 'set-active'
  | 'bridged-missing-file'
  | 'dropped-entry'
  | 'adopted-orphan'
  | 'removed-orphan'
  | 'removed-unreferenced'
  | 'deleted-temporary-snapshot'
  | 'repaired-leaks';

export interface FsckAction {
  kind: FsckActionKind;
  /** Files concerned (bare names). */
  files: string[];
  detail: string;
}

export interface FsckReport {
  volumeId: string;
  dryRun: boolean;
  /** What was done (or, dry run, would be done), in order. */
  actions: FsckAction[];
  /** What needs a human: left as found. */
  problems: string[];
  /** Facts worth knowing that need no repair. */
  notes: string[];
  /** The info file afterwards (null: none). */
  info: VolumeInfo | null;
  /** No actions and no problems. */
  clean: boolean;
}

interface Node {
  backing: string | null;
  backingFormat: ImageFormat | null;
  format: ImageFormat;
}

export async function fsck(ctx: OperationContext, options: FsckOptions = {}): Promise<FsckReport> {
  const { files } = ctx;
  const status = options.status ?? 'available';
  const dryRun = options.dryRun ?? false;
  const actions: FsckAction[] = [];
  const problems: string[] = [];
  const notes: string[] = [];
  const act = (kind: FsckActionKind, names: string[], detail: string) => actions.push({ kind, files: names, detail });
  const report = async (): Promise<FsckReport> => {
    let info: VolumeInfo | null = null;
    try {
      info = (await files.readInfo()).info;
    } catch {
      // reported as a problem already
    }
    return { volumeId: files.volumeId, dryRun, actions, problems, notes, info, clean: actions.length === 0 && problems.length === 0 };
  };

  // 1. is there a volume at all?
  const listing = await files.list();
  const { exists: hasInfo } = await files.readInfo().catch(() => ({ exists: true }));
  if (listing.chainFiles.length === 0 && !hasInfo && !files.exists(files.journalName)) {
    throw new CowError('ECOW_NOT_FOUND', `volume ${files.volumeId} has no files in ${files.dir}`);
  }
  // 2. journal (recover() removes the temp files first)
  try {
    if (dryRun) {
      for (const t of listing.tempFiles) act('removed-temp-file', [t], 'leftover of an interrupted atomic write');
      const j = await readJournal(files);
      if (j) {
        // What follows depends on the recovery's outcome: stop here.
        act('recovered', [], `would recover an interrupted ${j.op} of snapshot ${j.snapshot}${j.accepted ? ' (Nova accepted it and never reported its outcome)' : ''}`);
        return report();
      }
    } else {
      const temps: string[] = [];
      const r = await recover(ctx, status, temps, options.novaOutcome).finally(() => {
        for (const t of temps) act('removed-temp-file', [t], 'leftover of an interrupted atomic write');
      });
      if (r) act('recovered', [], `${r.action}: ${r.detail}`);
    }
  } catch (e) {
    problems.push(`interrupted operation not recovered: ${(e as Error).message}`);
    return report();
  }

  // 3. scan
  let info: VolumeInfo;
  let infoExists: boolean;
  try {
    ({ info, exists: infoExists } = await files.readInfo());
  } catch (e) {
    problems.push((e as Error).message);
    return report();
  }
  const original = { ...info };
  const graph = new Map<string, Node>();
  const broken = new Set<string>();
  // Formats are never probed (VolumeFiles.formatOf): a raw base whose guest wrote a qcow2
  // header into sector 0 must stay raw.
  const names = (await files.list()).chainFiles;
  const scan = (name: string, format?: ImageFormat) => {
    try {
      const h = files.header(name, format);
      graph.set(name, { backing: h.backing, backingFormat: h.backingFormat, format: h.format });
    } catch (e) {
      broken.add(name);
      problems.push(`${name}: ${(e as Error).message}`);
    }
  };
  for (const n of names) if (n !== files.base) scan(n);
  if (names.includes(files.base)) {
    // Given or recorded at creation wins; else what an overlay on it records (never probed).
    const recorded = [...graph.values()].find((g) => g.backing === files.base && g.backingFormat !== null);
    scan(files.base, files.baseFormat.known ?? recorded?.backingFormat ?? undefined);
  }
  const exists = (n: string) => graph.has(n) || broken.has(n);
  const namedAsBacking = (n: string) => [...graph.values()].some((g) => g.backing === n);
  const tops = () => [...graph.keys()].filter((n) => !namedAsBacking(n));

  // 4. the active file and the active chain
  if (!exists(info.active)) {
    const candidates = tops();
    if (candidates.length !== 1) {
      problems.push(`active file ${info.active} is missing and there is no single top image to take its place (${candidates.join(', ') || 'none'})`);
      return report();
    }
    const dropped = snapshotsMapping(info, info.active);
    act('set-active', [candidates[0]], `active file ${info.active} missing (a delete interrupted after the unlink): active is now ${candidates[0]}${dropped.length ? `, dropped ${dropped.join(', ')}` : ''}`);
    for (const s of dropped) delete info[s];
    info.active = candidates[0];
  }
  const live: string[] = [];
  for (let name: string | null = info.active; name !== null; ) {
    if (live.includes(name)) {
      problems.push(`ECOW_CHAIN_LOOP: the chain of ${info.active} loops back to ${name}`);
      return report();
    }
    if (live.length >= MAX_CHAIN_DEPTH) {
      problems.push(`ECOW_CHAIN_TOO_DEEP: the chain of ${info.active} is deeper than ${MAX_CHAIN_DEPTH}`);
      return report();
    }
    if (broken.has(name)) return report();
    live.push(name);
    const node: Node = graph.get(name)!;
    if (node.backing === null || exists(node.backing)) {
      name = node.backing;
      continue;
    }
    // A missing link: bridge it to the single fragment top outside the chain walked so far.
    const missing: string = node.backing;
    const candidates = tops().filter((n) => !live.includes(n));
    if (candidates.length !== 1) {
      problems.push(`${name} is backed by the missing ${missing} and there is no single image to take its place (${candidates.join(', ') || 'none'})`);
      return report();
    }
    const target = candidates[0];
    const format = graph.get(target)!.format;
    if (!dryRun) {
      files.guard();
      rebaseImage(files.resolve(name), target, { unsafe: true, backingFormat: format });
    }
    node.backing = target;
    const dropped = snapshotsMapping(info, missing);
    for (const s of dropped) delete info[s];
    act('bridged-missing-file', [name, target], `${name} was backed by the missing ${missing} (a delete interrupted after the unlink): now backed by ${target}${dropped.length ? `, dropped ${dropped.join(', ')}` : ''}`);
    name = target;
  }

  // 5. entries naming missing files
  for (const s of Object.keys(info)) {
    if (s !== 'active' && !exists(info[s])) {
      act('dropped-entry', [info[s]], `snapshot ${s} named ${info[s]}, which does not exist`);
      delete info[s];
    }
  }

  // 6. what is needed, what is not
  const needed = new Set(live);
  for (const s of Object.keys(info)) {
    if (s === 'active' || live.includes(info[s])) continue;
    notes.push(`snapshot ${s}: its file ${info[s]} is not in the active chain (kept, with its own chain)`);
    for (let n: string | null = info[s], d = 0; n !== null && exists(n) && !needed.has(n) && d < MAX_CHAIN_DEPTH; d++) {
      needed.add(n);
      n = graph.get(n)?.backing ?? null;
    }
  }
  // Only what a crash can leave is removed: a file nothing backs onto, hanging off the kept
  // chains (a merged file after the info file dropped it) or off nothing (a stale entry's file).
  // Anything else unaccounted for — e.g. a whole chain above an info file that went missing —
  // is reported and kept.
  const unneeded = [...graph.keys()].filter((n) => !needed.has(n));
  const toRemove: string[] = [];
  const orphans: string[] = [];
  for (const n of unneeded) {
    const backing = graph.get(n)!.backing;
    if (namedAsBacking(n)) problems.push(`${n} is not used by the info file but backs another file; left alone (was the info file lost?)`);
    else if (backing === info.active && files.snapshotIdOf(n) !== null) orphans.push(n);
    else if (backing === null || needed.has(backing)) toRemove.push(n);
    else problems.push(`${n} is not used by the info file and hangs off ${backing}, which is not used either; left alone`);
  }
  for (const n of orphans) {
    const snap = files.snapshotIdOf(n)!;
    let data = false;
    try {
      data = files.holdsData(n);
    } catch (e) {
      problems.push(`${n}: ${(e as Error).message}`);
      continue;
    }
    if (data && orphans.length === 1 && !Object.hasOwn(info, snap)) {
      info.active = n;
      info[snap] = n;
      act('adopted-orphan', [n], `overlay ${n} on the active file holds data (a guest moved onto it before its snapshot was recorded): recorded as snapshot ${snap} and the active file`);
    } else if (data) {
      problems.push(`overlay ${n} on the active file holds data but is not recorded; left alone`);
    } else if (isAttached(status)) {
      problems.push(`empty overlay ${n} on the active file is not recorded, and the volume is attached: the guest may be on it; detach and run fsck again`);
    } else {
      toRemove.push(n);
    }
  }

  // Headers are fixed; now the info file (the commit point), then the unlinks.
  if (!sameInfo(original, info) || (!infoExists && Object.keys(info).length > 1)) {
    if (!dryRun) {
      await files.writeInfo(info);
    }
  }
  for (const n of toRemove) {
    const orphan = orphans.includes(n);
    if (!dryRun) await files.unlink(n);
    act(orphan ? 'removed-orphan' : 'removed-unreferenced', [n], orphan ? `empty overlay ${n} on the active file, never recorded (an interrupted snapshot create)` : `${n} is used by no snapshot and not in the active chain (an interrupted delete's leftover)`);
  }

  // 7. temporary snapshots of interrupted clones
  for (const s of Object.keys(info).filter((k) => k.startsWith('tmp-snap-'))) {
    if (dryRun) {
      act('deleted-temporary-snapshot', [info[s]], `would delete leftover temporary snapshot ${s}`);
      continue;
    }
    try {
      await deleteSnapshot(ctx, s, { status: isAttached(status) ? 'in-use' : 'available' });
      act('deleted-temporary-snapshot', [info[s]], `leftover temporary snapshot ${s} of an interrupted clone`);
    } catch (e) {
      problems.push(`leftover temporary snapshot ${s} not deleted: ${(e as Error).message}`);
    }
  }

  // 8. leaked clusters (a crash in the middle of an allocation) are freed, corruptions reported;
  // never in the active file of an attached volume (the guest is writing it).
  const final = dryRun ? info : (await files.readInfo()).info;
  const keep = dryRun ? [...needed].filter((n) => !toRemove.includes(n)) : (await files.list()).chainFiles;
  for (const n of keep) {
    if (broken.has(n)) continue;
    const guestWrites = isAttached(status) && n === final.active;
    try {
      const r = files.checkLeaks(n, !dryRun && !guestWrites);
      if (r.corruptions > 0) problems.push(`${n}: qemu-img check finds ${r.corruptions} corruption(s); not repaired (img check -r all, with care)`);
      if (r.leaksFixed > 0 || (dryRun && r.leaks > 0)) act('repaired-leaks', [n], `${r.leaks} leaked cluster(s) freed in ${n} (left by an allocation a crash interrupted)`);
      else if (r.leaks > 0) notes.push(`${n}: ${r.leaks} leaked cluster(s), not repaired while the guest writes this file`);
    } catch (e) {
      problems.push(`${n}: ${(e as Error).message}`);
    }
  }

  // The result must open under the policy.
  if (!dryRun) {
    try {
      const now = (await files.readInfo()).info;
      files.chain(now.active);
    } catch (e) {
      problems.push(`after repair, the active chain does not open: ${isCowError(e) ? e.message : String(e)}`);
    }
  }
  return report();
}

function sameInfo(a: VolumeInfo, b: VolumeInfo): boolean {
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k] === b[k]);
}

