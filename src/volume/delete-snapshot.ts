/**
 * Delete snapshot S (docs/volume-semantics.md, "Delete a snapshot S"). F = info[S], B = F's backing file,
 * H = the file backed by F (none when F is active).
 *
 *  detached, F active:      commit F into B; info: -S, active = B; unlink F
 *  detached, F not active:  commit F into B; rebase H onto B (unsafe); info: -S; unlink F
 *  attached, F active:      hypervisor pulls B into F (F then backed by B's backing);
 *                           info: -S, snapshots of B -> F; unlink B
 *  attached, F not active:  hypervisor commits F into B (H then backed by B); info: -S; unlink F
 *
 * Order for crash safety (docs/volume-semantics.md): the data move first (the base is durable before anything
 * else changes), then H's header, then the info file (atomic), then the unlink — so at every
 * instant the chain opens and the info file names files that exist. A journal written before
 * the first change tells recovery which delete it was (journal.ts); recovery then either finishes
 * the bookkeeping (the data had moved) or runs the delete again from the current state (every
 * state before the move is a normal chain in which the move is idempotent).
 */
import { validateSnapshotId } from './names.js';
import { quoteBounded } from './small-file.js';
import { CowError } from '../errors.js';
import type { VolumeInfo } from './info-file.js';
import { clearJournal, writeJournal, type DeleteJournal } from './journal.js';
import type { NovaOutcome, Recovery } from './recovery.js';
import { needHypervisor, type OperationContext } from './context.js';
import { needsFsck, provesFailure } from './hypervisor-outcome.js';
import { isAttached, type VolumeStatus } from './status.js';
import { snapshotsMapping, withoutSnapshot } from './volume-files.js';
import type { ChainLink, VolumeChain } from './volume-chain.js';
import { commitLive } from '../image/live.js';
import { beforeJob } from './job-request.js';

export interface DeleteSnapshotOptions {
  /** The volume's status: `in-use` goes through the hypervisor. The driver checks it (checkStatus). */
  status: VolumeStatus;
}

/**
 * `deleted`: S's data were merged away and its entry removed. `not-found`: S was not in the
 * info file (nothing to do: success). `stale`: S's file has no backing file (or is not in the
 * chain) — S held no data of its own; its entry was dropped, the file removed only if nothing
 * uses it.
 */
export type DeleteOutcome = 'deleted' | 'not-found' | 'stale';

export interface DeleteSnapshotResult {
  snapshotId: string;
  outcome: DeleteOutcome;
  /** The info file afterwards. */
  info: VolumeInfo;
  /** Files removed. */
  removed: string[];
}

/**
 * Delete snapshot `snapshotId`; `options.status` was checked by the caller (the driver's
 * checkStatus). The live chain is opened once: it is validated from its links, and a detached
 * delete whose jobs run in this thread commits on these very images.
 */
export async function deleteSnapshot(ctx: OperationContext, snapshotId: string, options: DeleteSnapshotOptions): Promise<DeleteSnapshotResult> {
  const { files } = ctx;
  const { status } = options;
  validateSnapshotId(snapshotId);
  const { info } = await files.readInfo();
  if (!Object.hasOwn(info, snapshotId)) return { snapshotId, outcome: 'not-found', info, removed: [] };
  const file = info[snapshotId];
  // Two snapshots on one file: deleting either would take the other's data with it.
  const sharing = snapshotsMapping(info, file).filter((s) => s !== snapshotId);
  if (sharing.length > 0) {
    throw new CowError(
      'ECOW_INFO_INVALID',
      `volume ${files.volumeId}: snapshots ${snapshotId} and ${sharing.map((s) => quoteBounded(s)).join(', ')} both map to ${file} in the info file; deleting one would lose the other's data. Nothing was changed; fsck reports it`,
    );
  }

  if (!files.exists(file)) return dropMissing(ctx, snapshotId, info);
  const commitHere = !isAttached(status) && ctx.jobsInThread;
  const chain = files.openChain(info.active, commitHere ? { commitInto: file } : {});
  let journal: DeleteJournal;
  try {
    const live = chain.links;
    const at = live.findIndex((l) => l.name === file);
    // Not in the live chain: its own header still has to open (and name a valid backing file).
    const own = at < 0 ? files.header(file) : live[at];
    if (own.backing === null || at < 0) {
      chain.close();
      return await dropStale(ctx, snapshotId, info, live);
    }
    files.needKey(live, `snapshot delete ${snapshotId}`);
    const base = live[at + 1];
    const higher = at > 0 ? live[at - 1].name : null;

    const common = { version: 1, op: 'delete-snapshot', snapshot: snapshotId, file, base: base.name } as const;
    if (!isAttached(status)) {
      journal = { ...common, method: 'commit', higher, newBase: null, remap: [], unlink: file };
    } else {
      needHypervisor(ctx, `snapshot delete ${snapshotId}`);
      journal =
        higher === null
          ? { ...common, method: 'hypervisor-pull', higher: null, newBase: base.backing, remap: snapshotsMapping(info, base.name), unlink: base.name }
          : { ...common, method: 'hypervisor-commit', higher, newBase: null, remap: [], unlink: file };
    }
    // What this process writes itself (a hypervisor writes its own files): checked before the journal.
    files.checkWritable(journal.method === 'commit' ? [journal.base, ...(journal.higher === null ? [] : [journal.higher])] : [], `snapshot delete ${snapshotId}`);
    await writeJournal(files, journal);
    ctx.step('delete:journal');
    await moveData(ctx, journal, base, chain);
  } finally {
    chain.close();
  }
  return finishDelete(ctx, journal, info);
}

/**
 * The data move of a journaled delete, run from a normal (pre-move) chain. A hypervisor error
 * leaves everything as it was: the journal is dropped unless the hypervisor did move the data
 * (then recovery finishes the bookkeeping). `chain`: the live chain the delete opened; a commit
 * runs on it when its base was opened for writing, else in a job that opens the files itself
 * (the chain is closed first: its image locks would stand in the job's way).
 */
async function moveData(ctx: OperationContext, journal: DeleteJournal, base: ChainLink, chain: VolumeChain): Promise<void> {
  const { files } = ctx;
  if (journal.method === 'commit') {
    // keepTop: F stays as it is until it is unlinked, so until then H -> F -> B reads the same
    // whether or not the commit finished.
    const onProgress = (done: number, total: number) => {
      ctx.job.onProgress?.(done, total);
      ctx.step('delete:commit-progress');
    };
    const top = chain.image(journal.file);
    if (ctx.jobsInThread && top?.backing?.writable) {
      const hooks = { ...ctx.job, onProgress };
      await ctx.runHere(() => {
        beforeJob('commit', hooks);
        commitLive(top, 1, hooks);
      });
    } else {
      chain.close();
      await ctx.runJob({ op: 'commit', top: files.resolve(journal.file), format: files.formatOf(journal.file), keepTop: true, policy: files.policy, keySecret: files.keySecret }, { onProgress });
    }
    chain.close(); // the base flushed and its lock released before H's header names it
    ctx.step('delete:commit');
    if (journal.higher !== null) {
      // A header write and its flush: in the worker too, as a flush can wait long on a busy disk.
      await ctx.runJob({ op: 'rebase', file: files.resolve(journal.higher), newBacking: journal.base, unsafe: true, backingFormat: base.format, policy: files.policy, keySecret: files.keySecret });
      ctx.step('delete:rebase');
    }
    return;
  }
  chain.close();
  const hypervisor = needHypervisor(ctx, `snapshot delete ${journal.snapshot}`);
  const deleteInfo =
    journal.method === 'hypervisor-pull'
      ? { type: 'qcow2' as const, file_to_merge: journal.newBase, merge_target_file: null, volume_id: files.volumeId }
      : { type: 'qcow2' as const, file_to_merge: journal.file, merge_target_file: journal.base, volume_id: files.volumeId };
  let accepted = false;
  const onAccepted = async () => {
    accepted = true;
    await writeJournal(files, { ...journal, accepted: true });
    ctx.step('delete:accepted');
  };
  try {
    await hypervisor.deleteSnapshot(files.volumeId, journal.snapshot, deleteInfo, { signal: ctx.signal, onAccepted });
  } catch (e) {
    // Accepted and not proven failed: the merge may still run; fsck decides.
    if (accepted && !provesFailure(e)) throw needsFsck(ctx, `snapshot delete ${journal.snapshot}`, e);
    try {
      ctx.lock.assertHeld();
      if (!dataMoved(ctx, journal)) await clearJournal(files);
    } catch {
      // the journal stays; recovery decides from the chain
    }
    throw e;
  }
  ctx.step('delete:hypervisor');
}

/**
 * Whether a journaled delete's data move is complete, read from the headers it changes last:
 * H backed by B (commits), F backed by B's old backing file (pull). A detached delete of the
 * active file changes no header: it counts as not moved, and its commit simply runs again.
 */
function dataMoved(ctx: OperationContext, journal: DeleteJournal): boolean {
  const { files } = ctx;
  if (journal.method === 'hypervisor-pull') {
    return files.exists(journal.file) && files.header(journal.file).backing === journal.newBase;
  }
  if (journal.higher === null) return false;
  return files.exists(journal.higher) && files.header(journal.higher).backing === journal.base;
}

/** After the move: info file (S gone; active / remapped snapshots as the method says), then unlink. */
async function finishDelete(ctx: OperationContext, journal: DeleteJournal, info: VolumeInfo): Promise<DeleteSnapshotResult> {
  const { files } = ctx;
  const next = withoutSnapshot(info, journal.snapshot);
  if (journal.method === 'commit' && journal.higher === null) next.active = journal.base;
  for (const s of journal.remap) next[s] = journal.file;
  await files.writeInfo(next);
  ctx.step('delete:info');
  const removed = (await files.unlink(journal.unlink)) ? [journal.unlink] : [];
  ctx.step('delete:unlink');
  await clearJournal(files);
  ctx.step('delete:done');
  return { snapshotId: journal.snapshot, outcome: 'deleted', info: next, removed };
}

/** Whether `name` is used: the active file, mapped by a snapshot, or in the live chain. */
function inUse(name: string, info: VolumeInfo, live: readonly ChainLink[]): boolean {
  return name === info.active || Object.values(info).includes(name) || live.some((l) => l.name === name || l.backing === name);
}

/**
 * S's file has no backing file, or is not in the chain of the active file: S holds no data of
 * the volume's chain. Drop the entry; delete the file only if nothing else uses it (Cinder
 * deletes it whenever it is not active — which can delete the bottom of a live chain).
 */
async function dropStale(ctx: OperationContext, snapshotId: string, info: VolumeInfo, live: readonly ChainLink[]): Promise<DeleteSnapshotResult> {
  const { files } = ctx;
  const file = info[snapshotId];
  const next = withoutSnapshot(info, snapshotId);
  await files.writeInfo(next);
  const removed = !inUse(file, next, live) && (await files.unlink(file)) ? [file] : [];
  return { snapshotId, outcome: 'stale', info: next, removed };
}

/** S's file is gone. If the chain is whole, S's entry is all that is left of it. */
async function dropMissing(ctx: OperationContext, snapshotId: string, info: VolumeInfo): Promise<DeleteSnapshotResult> {
  const { files } = ctx;
  try {
    files.chain(info.active);
  } catch (e) {
    throw new CowError('ECOW_BACKING_MISSING', `snapshot ${snapshotId}: its file ${info[snapshotId]} is missing and the chain of ${info.active} does not open (${(e as Error).message}); run fsck`, { cause: e });
  }
  const next = withoutSnapshot(info, snapshotId);
  await files.writeInfo(next);
  return { snapshotId, outcome: 'stale', info: next, removed: [] };
}

/**
 * Recovery of an interrupted delete. The info file no longer maps S to F → only the unlink was
 * left. The data had moved (headers say so) → write the info file and unlink. Otherwise run the
 * delete again from the current chain, through the hypervisor if the volume is attached now —
 * unless Nova accepted a merge that never reported and the volume is still attached: then only
 * fsck decides, from the chain or from `novaOutcome`.
 */
export async function recoverDeleteSnapshot(ctx: OperationContext, journal: DeleteJournal, status: VolumeStatus, novaOutcome?: NovaOutcome): Promise<Recovery> {
  const { files } = ctx;
  const { info } = await files.readInfo();
  const { snapshot } = journal;
  if (info[snapshot] !== journal.file) {
    // The info file was written: only the unlink (and the journal) were left. Unlink only what
    // nothing uses (the chain must open to tell).
    const live = files.chain(info.active);
    if (!inUse(journal.unlink, info, live)) await files.unlink(journal.unlink);
    await clearJournal(files);
    return { journal, action: 'completed', detail: `snapshot ${snapshot} delete had written the info file; removed ${journal.unlink}` };
  }
  const moved = dataMoved(ctx, journal);
  const running = journal.accepted === true && !moved && isAttached(status);
  if (running && novaOutcome === undefined) {
    throw new CowError(
      'ECOW_NEEDS_FSCK',
      `interrupted delete of snapshot ${snapshot} (${journal.method}) of attached volume ${files.volumeId}: Nova accepted the merge and never reported its outcome, and the headers do not show it done (${journal.method === 'hypervisor-pull' ? `${journal.file} is not backed by ${journal.newBase ?? 'nothing'}` : `${journal.higher} is not backed by ${journal.base}`}); it may still be running. Run fsck with --nova-outcome failed once Nova's job is gone (the snapshot is kept), or detach the volume and run fsck`,
    );
  }
  if (!moved && novaOutcome === 'done') {
    throw new CowError('ECOW_INVALID_STATE', `interrupted delete of snapshot ${snapshot}: --nova-outcome done, but the headers do not show the merge done; nothing changed`);
  }
  if (!moved && journal.accepted && novaOutcome === 'failed') {
    await clearJournal(files);
    return { journal, action: 'rolled-back', detail: `snapshot ${snapshot} delete (${journal.method}): Nova's merge failed (--nova-outcome failed) and nothing had moved; the snapshot is kept` };
  }
  // A commit killed mid-way leaves allocated but unreferenced clusters in its target; free them,
  // but not while attached: the guest's qemu holds every file of its chain (image locks).
  let leaks = '';
  if (files.exists(journal.base) && !isAttached(status)) {
    const { leaksFixed } = files.checkLeaks(journal.base, true);
    if (leaksFixed > 0) leaks = `; freed ${leaksFixed} leaked cluster(s) in ${journal.base}`;
  }
  if (moved) {
    await finishDelete(ctx, journal, info);
    return { journal, action: 'finished', detail: `snapshot ${snapshot} delete (${journal.method}) had moved the data; wrote the info file and removed ${journal.unlink}${leaks}` };
  }
  await deleteSnapshot(ctx, snapshot, { status: isAttached(status) ? 'in-use' : 'available' });
  return { journal, action: 'rerun', detail: `snapshot ${snapshot} delete (${journal.method}) interrupted before the data moved: ran it again (volume ${status})${leaks}` };
}
