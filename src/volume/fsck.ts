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
 * Anything ambiguous or hostile is reported as a problem and left alone. Each step is a function
 * below, in this order; a step that finds the volume beyond repair ends the run with the report.
 */
import { CowError, isCowError } from '../errors.js';
import { rebaseImage } from '../image/rebase.js';
import type { ImageFormat } from '../image/types.js';
import type { OperationContext } from './context.js';
import { deleteSnapshot } from './delete-snapshot.js';
import type { VolumeInfo } from './info-file.js';
import { readJournal } from './journal.js';
import { isSnapshotId } from './names.js';
import { quoteBounded } from './small-file.js';
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
  /**
   * Drop the journal unrecovered, then reconcile as if there had been none: the way out of a
   * journal nothing can finish (invalid, or naming files that are gone), after a human has
   * looked at it.
   */
  discardJournal?: boolean;
}

export type FsckActionKind =
  | 'removed-temp-file'
  | 'discarded-journal'
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

/** One fsck run: the volume, its options, and the report the steps build. */
class FsckRun {
  readonly status: VolumeStatus;
  readonly dryRun: boolean;
  readonly actions: FsckAction[] = [];
  readonly problems: string[] = [];
  readonly notes: string[] = [];

  constructor(
    readonly ctx: OperationContext,
    readonly options: FsckOptions,
  ) {
    this.status = options.status ?? 'available';
    this.dryRun = options.dryRun ?? false;
  }

  get files() {
    return this.ctx.files;
  }

  act(kind: FsckActionKind, names: string[], detail: string): void {
    this.actions.push({ kind, files: names, detail });
  }

  async report(): Promise<FsckReport> {
    let info: VolumeInfo | null = null;
    try {
      info = (await this.files.readInfo()).info;
    } catch {
      // reported as a problem already
    }
    const { actions, problems, notes, dryRun } = this;
    return { volumeId: this.files.volumeId, dryRun, actions, problems, notes, info, clean: actions.length === 0 && problems.length === 0 };
  }
}

/** The chain on disk as step 3 found it, and the info file as the steps change it. */
interface Scan {
  info: VolumeInfo;
  infoExists: boolean;
  /** The info file as read, to tell whether it must be written. */
  original: VolumeInfo;
  graph: Map<string, Node>;
  /** Files whose header does not open. */
  broken: Set<string>;
}

/** What step 6 decided. */
interface Sorting {
  needed: Set<string>;
  toRemove: string[];
  orphans: string[];
}

export async function fsck(ctx: OperationContext, options: FsckOptions = {}): Promise<FsckReport> {
  const run = new FsckRun(ctx, options);
  await requireVolume(run);
  if (!(await recoverJournal(run))) return run.report();
  const scan = await scanChain(run);
  if (!scan) return run.report();
  if (!checkInfoMap(run, scan.info)) return run.report();
  const live = repairActiveChain(run, scan);
  if (!live) return run.report();
  dropMissingEntries(run, scan);
  const sorting = sortUnneeded(run, scan, live);
  await writeInfoThenUnlink(run, scan, sorting);
  await deleteTemporarySnapshots(run, scan.info);
  await repairLeaks(run, scan, sorting);
  await verifyChainOpens(run);
  return run.report();
}

const exists = (scan: Scan, n: string) => scan.graph.has(n) || scan.broken.has(n);
const namedAsBacking = (scan: Scan, n: string) => [...scan.graph.values()].some((g) => g.backing === n);
const tops = (scan: Scan) => [...scan.graph.keys()].filter((n) => !namedAsBacking(scan, n));

/** 1. Is there a volume at all? */
async function requireVolume({ files }: FsckRun): Promise<void> {
  const listing = await files.list();
  const { exists: hasInfo } = await files.readInfo().catch(() => ({ exists: true }));
  if (listing.chainFiles.length === 0 && !hasInfo && !files.exists(files.journalName)) {
    throw new CowError('ECOW_NOT_FOUND', `volume ${files.volumeId} has no files in ${files.dir}`);
  }
}

/** 2. Temp files and the journal (recover() removes the temp files first). False: stop here. */
async function recoverJournal(run: FsckRun): Promise<boolean> {
  const { files } = run;
  if (run.options.discardJournal && files.exists(files.journalName)) {
    if (!run.dryRun) await files.unlink(files.journalName);
    run.act('discarded-journal', [files.journalName], 'dropped unrecovered, as asked (--discard-journal)');
  }
  try {
    if (run.dryRun) {
      for (const t of (await files.list()).tempFiles) run.act('removed-temp-file', [t], 'leftover of an interrupted atomic write');
      const j = run.options.discardJournal ? null : await readJournal(files);
      if (j) {
        // What follows depends on the recovery's outcome: stop here.
        run.act('recovered', [], `would recover an interrupted ${j.op} of snapshot ${j.snapshot}${j.accepted ? ' (Nova accepted it and never reported its outcome)' : ''}`);
        return false;
      }
    } else {
      const temps: string[] = [];
      const r = await recover(run.ctx, run.status, temps, run.options.novaOutcome).finally(() => {
        for (const t of temps) run.act('removed-temp-file', [t], 'leftover of an interrupted atomic write');
      });
      if (r) run.act('recovered', [], `${r.action}: ${r.detail}`);
    }
    return true;
  } catch (e) {
    run.problems.push(`interrupted operation not recovered: ${(e as Error).message}`);
    return false;
  }
}

/**
 * 3a. The info file's map itself: every key a snapshot id (a uuid or tmp-snap-<uuid>), and no two
 * snapshots on one file — deleting either would take the other's data with it (a delete refuses
 * it too). Reported, never guessed at. False: stop here. (Each file must also be in the active
 * chain: step 6 reports one that is not.)
 */
function checkInfoMap(run: FsckRun, info: VolumeInfo): boolean {
  const before = run.problems.length;
  const owner = new Map<string, string>();
  for (const [id, file] of Object.entries(info)) {
    if (id === 'active') continue;
    if (!isSnapshotId(id)) run.problems.push(`info file key ${quoteBounded(id)} is not a snapshot id (a uuid or tmp-snap-<uuid>)`);
    const other = owner.get(file);
    if (other !== undefined) run.problems.push(`snapshots ${other} and ${quoteBounded(id)} both map to ${file}: each snapshot needs a file of its own`);
    else owner.set(file, id);
  }
  return run.problems.length === before;
}

/** 3. Every file of the volume, headers only, into a graph. Null: the info file is unreadable. */
async function scanChain(run: FsckRun): Promise<Scan | null> {
  const { files } = run;
  let info: VolumeInfo;
  let infoExists: boolean;
  try {
    ({ info, exists: infoExists } = await files.readInfo());
  } catch (e) {
    run.problems.push((e as Error).message);
    return null;
  }
  const scan: Scan = { info, infoExists, original: { ...info }, graph: new Map(), broken: new Set() };
  // Formats are never probed (VolumeFiles.formatOf): a raw base whose guest wrote a qcow2
  // header into sector 0 must stay raw.
  const names = (await files.list()).chainFiles;
  const read = (name: string, format?: ImageFormat) => {
    try {
      const h = files.header(name, format);
      scan.graph.set(name, { backing: h.backing, backingFormat: h.backingFormat, format: h.format });
    } catch (e) {
      scan.broken.add(name);
      run.problems.push(`${name}: ${(e as Error).message}`);
    }
  };
  for (const n of names) if (n !== files.base) read(n);
  if (names.includes(files.base)) {
    // Given or recorded at creation wins; else what an overlay on it records (never probed).
    const recorded = [...scan.graph.values()].find((g) => g.backing === files.base && g.backingFormat !== null);
    read(files.base, files.baseFormat.known ?? recorded?.backingFormat ?? undefined);
  }
  return scan;
}

/**
 * 4. The active file and the active chain: a missing active file or a missing link is bridged to
 * the single top of what remains. Returns the active chain, top first; null: beyond repair.
 */
function repairActiveChain(run: FsckRun, scan: Scan): string[] | null {
  const { files } = run;
  const { info, graph, broken } = scan;
  if (!exists(scan, info.active)) {
    const candidates = tops(scan);
    if (candidates.length !== 1) {
      run.problems.push(`active file ${info.active} is missing and there is no single top image to take its place (${candidates.join(', ') || 'none'})`);
      return null;
    }
    const dropped = snapshotsMapping(info, info.active);
    run.act('set-active', [candidates[0]], `active file ${info.active} missing (a delete interrupted after the unlink): active is now ${candidates[0]}${dropped.length ? `, dropped ${dropped.join(', ')}` : ''}`);
    for (const s of dropped) delete info[s];
    info.active = candidates[0];
  }
  const live: string[] = [];
  for (let name: string | null = info.active; name !== null; ) {
    if (live.includes(name)) {
      run.problems.push(`ECOW_CHAIN_LOOP: the chain of ${info.active} loops back to ${name}`);
      return null;
    }
    if (live.length >= MAX_CHAIN_DEPTH) {
      run.problems.push(`ECOW_CHAIN_TOO_DEEP: the chain of ${info.active} is deeper than ${MAX_CHAIN_DEPTH}`);
      return null;
    }
    if (broken.has(name)) return null;
    live.push(name);
    const node: Node = graph.get(name)!;
    if (node.backing === null || exists(scan, node.backing)) {
      name = node.backing;
      continue;
    }
    // A missing link: bridge it to the single fragment top outside the chain walked so far.
    const missing: string = node.backing;
    const candidates = tops(scan).filter((n) => !live.includes(n));
    if (candidates.length !== 1) {
      run.problems.push(`${name} is backed by the missing ${missing} and there is no single image to take its place (${candidates.join(', ') || 'none'})`);
      return null;
    }
    const target = candidates[0];
    const format = graph.get(target)!.format;
    if (!run.dryRun) {
      rebaseImage(files.resolve(name), target, { unsafe: true, backingFormat: format, guardIo: files.guard });
    }
    node.backing = target;
    const dropped = snapshotsMapping(info, missing);
    for (const s of dropped) delete info[s];
    run.act('bridged-missing-file', [name, target], `${name} was backed by the missing ${missing} (a delete interrupted after the unlink): now backed by ${target}${dropped.length ? `, dropped ${dropped.join(', ')}` : ''}`);
    name = target;
  }
  return live;
}

/** 5. Info entries naming files that are gone (their data went with the file). */
function dropMissingEntries(run: FsckRun, scan: Scan): void {
  const { info } = scan;
  for (const s of Object.keys(info)) {
    if (s !== 'active' && !exists(scan, info[s])) {
      run.act('dropped-entry', [info[s]], `snapshot ${s} named ${info[s]}, which does not exist`);
      delete info[s];
    }
  }
}

/**
 * 6. What is needed, what is not. Only what a crash can leave is removed: a file nothing backs
 * onto, hanging off the kept chains (a merged file after the info file dropped it) or off nothing
 * (a stale entry's file); an overlay on the active file is adopted when it holds data, removed
 * when empty (never while attached). Anything else unaccounted for — e.g. a whole chain above an
 * info file that went missing — is reported and kept.
 */
function sortUnneeded(run: FsckRun, scan: Scan, live: string[]): Sorting {
  const { files } = run;
  const { info, graph } = scan;
  const needed = new Set(live);
  for (const s of Object.keys(info)) {
    if (s === 'active' || live.includes(info[s])) continue;
    // A snapshot is a point in the active file's history: off that chain, the map is wrong.
    run.problems.push(`snapshot ${quoteBounded(s)}: its file ${info[s]} is not in the active chain of ${info.active}; left alone, with the chain below it`);
    for (let n: string | null = info[s], d = 0; n !== null && exists(scan, n) && !needed.has(n) && d < MAX_CHAIN_DEPTH; d++) {
      needed.add(n);
      n = graph.get(n)?.backing ?? null;
    }
  }
  const toRemove: string[] = [];
  const orphans: string[] = [];
  for (const n of [...graph.keys()].filter((x) => !needed.has(x))) {
    const backing = graph.get(n)!.backing;
    if (namedAsBacking(scan, n)) run.problems.push(`${n} is not used by the info file but backs another file; left alone (was the info file lost?)`);
    else if (backing === info.active && files.snapshotIdOf(n) !== null) orphans.push(n);
    else if (backing === null || needed.has(backing)) toRemove.push(n);
    else run.problems.push(`${n} is not used by the info file and hangs off ${backing}, which is not used either; left alone`);
  }
  for (const n of orphans) {
    const snap = files.snapshotIdOf(n)!;
    let data = false;
    try {
      data = files.holdsData(n);
    } catch (e) {
      run.problems.push(`${n}: ${(e as Error).message}`);
      continue;
    }
    if (data && orphans.length === 1 && !Object.hasOwn(info, snap)) {
      info.active = n;
      info[snap] = n;
      run.act('adopted-orphan', [n], `overlay ${n} on the active file holds data (a guest moved onto it before its snapshot was recorded): recorded as snapshot ${snap} and the active file`);
    } else if (data) {
      run.problems.push(`overlay ${n} on the active file holds data but is not recorded; left alone`);
    } else if (isAttached(run.status)) {
      run.problems.push(`empty overlay ${n} on the active file is not recorded, and the volume is attached: the guest may be on it; detach and run fsck again`);
    } else {
      toRemove.push(n);
    }
  }
  return { needed, toRemove, orphans };
}

/** Headers are fixed by now; the info file (the commit point), then the unlinks. */
async function writeInfoThenUnlink(run: FsckRun, scan: Scan, { toRemove, orphans }: Sorting): Promise<void> {
  const { files } = run;
  const { info } = scan;
  if (!sameInfo(scan.original, info) || (!scan.infoExists && Object.keys(info).length > 1)) {
    if (!run.dryRun) await files.writeInfo(info);
  }
  for (const n of toRemove) {
    const orphan = orphans.includes(n);
    if (!run.dryRun) await files.unlink(n);
    run.act(orphan ? 'removed-orphan' : 'removed-unreferenced', [n], orphan ? `empty overlay ${n} on the active file, never recorded (an interrupted snapshot create)` : `${n} is used by no snapshot and not in the active chain (an interrupted delete's leftover)`);
  }
}

/** 7. Temporary snapshots of interrupted clones. */
async function deleteTemporarySnapshots(run: FsckRun, info: VolumeInfo): Promise<void> {
  for (const s of Object.keys(info).filter((k) => k.startsWith('tmp-snap-'))) {
    if (run.dryRun) {
      run.act('deleted-temporary-snapshot', [info[s]], `would delete leftover temporary snapshot ${s}`);
      continue;
    }
    try {
      await deleteSnapshot(run.ctx, s, { status: isAttached(run.status) ? 'in-use' : 'available' });
      run.act('deleted-temporary-snapshot', [info[s]], `leftover temporary snapshot ${s} of an interrupted clone`);
    } catch (e) {
      run.problems.push(`leftover temporary snapshot ${s} not deleted: ${(e as Error).message}`);
    }
  }
}

/**
 * 8. Leaked clusters (a crash in the middle of an allocation) are freed, corruptions reported;
 * never while the volume is attached: the guest writes its active file, and its qemu does not let
 * anyone write the files below (its image locks; a leak is harmless until the volume is detached).
 */
async function repairLeaks(run: FsckRun, scan: Scan, { needed, toRemove }: Sorting): Promise<void> {
  const { files, dryRun } = run;
  const keep = dryRun ? [...needed].filter((n) => !toRemove.includes(n)) : (await files.list()).chainFiles;
  for (const n of keep) {
    if (scan.broken.has(n)) continue;
    const guestWrites = isAttached(run.status);
    try {
      const r = files.checkLeaks(n, !dryRun && !guestWrites);
      if (r.corruptions > 0) run.problems.push(`${n}: qemu-img check finds ${r.corruptions} corruption(s); not repaired (img check -r all, with care)`);
      // After a repair qemu's `leaks` counts what is left (0): the freed ones are `leaks-fixed`.
      if (r.leaksFixed > 0) run.act('repaired-leaks', [n], `${r.leaksFixed} leaked cluster(s) freed in ${n} (left by an allocation a crash interrupted)`);
      else if (dryRun && r.leaks > 0) run.act('repaired-leaks', [n], `${r.leaks} leaked cluster(s) to free in ${n} (left by an allocation a crash interrupted)`);
      else if (r.leaks > 0) run.notes.push(`${n}: ${r.leaks} leaked cluster(s), not repaired while the volume is attached`);
    } catch (e) {
      run.problems.push(`${n}: ${(e as Error).message}`);
    }
  }
}

/** The result must open under the policy. */
async function verifyChainOpens(run: FsckRun): Promise<void> {
  if (run.dryRun) return;
  try {
    const now = (await run.files.readInfo()).info;
    run.files.chain(now.active);
  } catch (e) {
    run.problems.push(`after repair, the active chain does not open: ${isCowError(e) ? e.message : String(e)}`);
  }
}

function sameInfo(a: VolumeInfo, b: VolumeInfo): boolean {
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k] === b[k]);
}
