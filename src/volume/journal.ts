/**
 * The intent record of a snapshot create or delete in progress: `volume-<vol>.journal`, written
 * (atomically, durably) before the first file changes and removed after the last.
 *
 * Why it is needed: some crash states of different operations look identical on disk. Example,
 * chain `volume-1234 <- .aaaa <- .bbbb` (active `.bbbb`), crash after the data moved but before
 * the info file was written:
 *  - detached delete of `aaaa` (commit `.aaaa` down into `volume-1234`, rebase `.bbbb` onto it);
 *  - attached delete of `bbbb` (the hypervisor pulled `.aaaa` into `.bbbb`, now backed by
 *    `volume-1234`).
 * Both leave `volume-1234 <- .bbbb`, an unreferenced `.aaaa`, and the old info file. The first
 * must end as `{bbbb: .bbbb}` (the base now holds bbbb's content), the second as `{aaaa: .bbbb}`
 * (the base still holds aaaa's content). Guessing wrong silently gives a surviving snapshot the
 * wrong data; the journal says which it was. Cinder ignores the file.
 */
import path from 'node:path';
import * as z from 'zod';
import { CowError } from '../errors.js';
import { lazy } from '../lazy.js';
import { writeFileAtomic } from './atomic-file.js';
import { describeIssues } from './info-file.js';
import { readSmallFile } from './small-file.js';
import type { VolumeFiles } from './volume-files.js';

/**
 * The journal's schemas, built at first use (lazy.ts): most commands never read or write one,
 * and a well-formed journal is written and read without them (wellFormedJournal).
 */
const schemas = lazy(() => {
  const Name = z.string().min(1);
  /**
   * The fencing token of the lock holder that wrote the journal (etcd: its lock key's create
   * revision; absent under the share lease). A holder with a lower token is superseded.
   */
  const Fence = z.string().regex(/^[0-9]{1,20}$/).optional();

  /** A snapshot create: `file` made (backed by `backing`, the active file), then the info file. */
  const create = z.strictObject({
    version: z.literal(1),
    op: z.literal('create-snapshot'),
    snapshot: Name,
    file: Name,
    backing: Name,
    /**
     * `overlay`: the hypervisor has not been asked (detached, or not yet): the guest, if any, is
     * still on `backing`. `hypervisor`: it has been asked to move the guest onto `file`.
     */
    phase: z.enum(['overlay', 'hypervisor']),
    /** The hypervisor accepted the request (its outcome was not seen yet): nothing may be undone. */
    accepted: z.boolean().optional(),
    fence: Fence,
  });

  /**
   * A snapshot delete. `commit`: we commit `file` into `base` and rebase `higher` (null: `file`
   * was active). `hypervisor-commit`: the hypervisor commits `file` into `base` and re-points
   * `higher`. `hypervisor-pull`: `file` is active; the hypervisor pulls `base` into it, after which
   * it is backed by `newBase`, and the snapshots in `remap` (those of `base`) map to `file`.
   * `unlink` is the file removed last.
   */
  const remove = z.strictObject({
    version: z.literal(1),
    op: z.literal('delete-snapshot'),
    snapshot: Name,
    method: z.enum(['commit', 'hypervisor-commit', 'hypervisor-pull']),
    file: Name,
    base: Name,
    higher: Name.nullable(),
    newBase: Name.nullable(),
    remap: z.array(Name),
    unlink: Name,
    /** The hypervisor accepted the merge (its outcome was not seen yet): nothing may be undone. */
    accepted: z.boolean().optional(),
    fence: Fence,
  });

  const journal = z.discriminatedUnion('op', [create, remove]);
  return { create, remove, journal };
});

export type Journal = z.infer<ReturnType<typeof schemas>['journal']>;
export type CreateJournal = z.infer<ReturnType<typeof schemas>['create']>;
export type DeleteJournal = z.infer<ReturnType<typeof schemas>['remove']>;

/** The journal schema (for the test of wellFormedJournal). */
export const journalSchema = () => schemas().journal;

/** The schemas' keys, in their order (zod's output order, so the written JSON's). */
const CREATE_KEYS = ['version', 'op', 'snapshot', 'file', 'backing', 'phase', 'accepted', 'fence'];
const DELETE_KEYS = ['version', 'op', 'snapshot', 'method', 'file', 'base', 'higher', 'newBase', 'remap', 'unlink', 'accepted', 'fence'];
const METHODS: readonly unknown[] = ['commit', 'hypervisor-commit', 'hypervisor-pull'];

const isName = (v: unknown): v is string => typeof v === 'string' && v.length > 0;

/**
 * `v` as the journal schema parses it (keys in the schema's order) when `v` is a plain object
 * the schema plainly accepts, else undefined (the schema then decides, and says why): a snapshot
 * create or delete writes its journal without building the schema. Exactly what the schema
 * accepts of what JSON.parse returns (test/volume/zod-fast-paths.test.ts checks it).
 */
export function wellFormedJournal(v: unknown): Journal | undefined {
  if (typeof v !== 'object' || v === null || Object.getPrototypeOf(v) !== Object.prototype) return undefined;
  const o = v as Record<string, unknown>;
  const keys = o.op === 'create-snapshot' ? CREATE_KEYS : o.op === 'delete-snapshot' ? DELETE_KEYS : undefined;
  if (!keys) return undefined;
  for (const key in o) if (!keys.includes(key) || !Object.hasOwn(o, key)) return undefined;
  if (o.version !== 1 || !isName(o.snapshot) || !isName(o.file)) return undefined;
  if (o.accepted !== undefined && typeof o.accepted !== 'boolean') return undefined;
  if (o.fence !== undefined && !(typeof o.fence === 'string' && /^[0-9]{1,20}$/.test(o.fence))) return undefined;
  if (o.op === 'create-snapshot') {
    if (!isName(o.backing) || (o.phase !== 'overlay' && o.phase !== 'hypervisor')) return undefined;
  } else {
    if (!METHODS.includes(o.method) || !isName(o.base) || !isName(o.unlink)) return undefined;
    if ((o.higher !== null && !isName(o.higher)) || (o.newBase !== null && !isName(o.newBase))) return undefined;
    const remap = o.remap;
    if (!Array.isArray(remap)) return undefined;
    for (let i = 0; i < remap.length; i++) if (!isName(remap[i])) return undefined;
  }
  const journal: Record<string, unknown> = {};
  for (const key of keys) if (o[key] !== undefined) journal[key] = key === 'remap' ? [...(o.remap as string[])] : o[key];
  return journal as Journal;
}

/** Largest journal read; ours are a few hundred bytes. */
export const MAX_JOURNAL_BYTES = 64 << 10;

/** What a human can do about a journal nothing can finish (said in every such error). */
const DISCARD_HINT = "look at it, then `cowchain volume fsck --discard-journal` drops it";

function journalPath(files: VolumeFiles): string {
  return path.join(files.dir, files.journalName);
}

/** The journal, or null when no operation is in progress. Invalid → ECOW_INFO_INVALID. */
export async function readJournal(files: VolumeFiles): Promise<Journal | null> {
  const file = journalPath(files);
  const bytes = readSmallFile(file, MAX_JOURNAL_BYTES, 'journal');
  if (bytes === null) return null;
  const invalid = (why: string, cause: unknown): never => {
    throw new CowError('ECOW_INFO_INVALID', `journal ${file} is invalid: ${why}; ${DISCARD_HINT}`, { cause });
  };
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    return invalid(`not JSON (${(e as Error).message})`, e);
  }
  let journal = wellFormedJournal(raw);
  if (!journal) {
    const parsed = schemas().journal.safeParse(raw);
    if (!parsed.success) return invalid(describeIssues(parsed.error), parsed.error);
    journal = parsed.data;
  }
  // Its names are about to be opened and unlinked: this volume's chain names only.
  const names = journal.op === 'create-snapshot' ? [journal.file, journal.backing] : [journal.file, journal.base, journal.higher, journal.newBase, journal.unlink];
  for (const n of names) if (n !== null) files.snapshotIdOf(n);
  checkFence(files, journal);
  return journal;
}

/** A journal written by a later holder of the lock means this holder was superseded: stop. */
function checkFence(files: VolumeFiles, journal: Journal): void {
  if (files.fence === undefined || journal.fence === undefined) return;
  if (BigInt(journal.fence) > BigInt(files.fence)) {
    throw new CowError(
      'ECOW_LOCK_LOST',
      `volume ${files.volumeId}: the journal was written by a later lock holder (fence ${journal.fence}; this holder's is ${files.fence}): this holder was superseded and changes nothing more`,
    );
  }
}

/** Record an operation before its first change; durable when this returns. */
export async function writeJournal(files: VolumeFiles, journal: Journal): Promise<void> {
  const { mode } = await files.fileModes();
  if (files.fence !== undefined) await readJournal(files); // a later holder's journal stops us here
  const fenced = files.fence === undefined ? journal : { ...journal, fence: files.fence };
  await writeFileAtomic(files.dir, files.journalName, files.journalTempPrefix, JSON.stringify(wellFormedJournal(fenced) ?? schemas().journal.parse(fenced), null, 1), 'journal', files.guard, mode);
}

/** The operation is over (done or undone): drop its record, durably. */
export async function clearJournal(files: VolumeFiles): Promise<void> {
  await files.unlink(files.journalName);
}
