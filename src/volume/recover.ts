/**
 * Finish or undo the operation a journal records (a crash, a kill, a lost lock). Every
 * operation that changes a volume runs this first, under the lock, so none ever starts from a
 * half-done state; fsck reports what it did. Re-running the interrupted operation itself
 * therefore finishes it.
 *
 * Create: the info file records S → done. Otherwise the overlay goes, unless the hypervisor was
 * asked to move the guest onto it and it may be there: data in the overlay prove the guest
 * wrote to it (kept and recorded as the active file, "adopted"); an empty overlay of a detached
 * volume can go; an empty overlay of an attached volume is undecidable without asking the
 * hypervisor (ECOW_INVALID_STATE, nothing changed).
 *
 * Delete: the info file no longer maps S to F → only the unlink was left. The data had moved
 * (headers say so) → write the info file and unlink. Otherwise run the delete again from the
 * current chain, through the hypervisor if the volume is attached now.
 *
 * A request the hypervisor accepted (journal `accepted`) and never reported on is never undone or
 * rerun while the volume is attached: the guest may be on the new overlay, a merge may be
 * running. Only fsck decides it, from the chain (data in the overlay, moved headers) or from
 * `novaOutcome`, what Nova did as the operator found out (its logs, the domain's disks).
 */
import { CowError } from '../errors.js';
import type { OperationContext } from './context.js';
import { dataMoved, deleteSnapshot, finishDelete, inUse } from './delete-snapshot.js';
import { clearJournal, readJournal, type CreateJournal, type DeleteJournal, type Journal } from './journal.js';
import { isAttached, type VolumeStatus } from './status.js';

/** What Nova did with an accepted request that never reported, as the operator knows it. */
export type NovaOutcome = 'done' | 'failed';

export interface Recovery {
  journal: Journal;
  /**
   * `completed`: it had finished; only the journal was left. `rolled-back`: a create undone.
   * `adopted`: a create kept and recorded (the guest was on the new file). `finished`: a
   * delete's remaining steps done. `rerun`: a delete run again from the current chain.
   */
  action: 'completed' | 'rolled-back' | 'adopted' | 'finished' | 'rerun';
  detail: string;
}

/**
 * Remove this driver's temp files (an atomic write or a new file that a crash interrupted: under
 * the lock nobody else is writing them), then recover the journaled operation, if any.
 * `status`: the volume's status now. `removed` collects the temp files removed.
 */
export async function recover(ctx: OperationContext, status: VolumeStatus, removed: string[] = [], novaOutcome?: NovaOutcome): Promise<Recovery | null> {
  for (const t of (await ctx.files.list()).tempFiles) if (await ctx.files.unlink(t)) removed.push(t);
  const journal = await readJournal(ctx.files);
  if (!journal) return null;
  return journal.op === 'create-snapshot' ? recoverCreate(ctx, journal, status, novaOutcome) : recoverDelete(ctx, journal, status, novaOutcome);
}

async function recoverCreate(ctx: OperationContext, journal: CreateJournal, status: VolumeStatus, novaOutcome?: NovaOutcome): Promise<Recovery> {
  const { files } = ctx;
  const { info } = await files.readInfo();
  const { snapshot, file } = journal;
  const done = async (action: Recovery['action'], detail: string): Promise<Recovery> => {
    await clearJournal(files);
    return { journal, action, detail };
  };
  if (info[snapshot] === file) return done('completed', `snapshot ${snapshot} create had completed (${file})`);
  if (!files.exists(file)) return done('rolled-back', `snapshot ${snapshot} create interrupted before ${file} existed`);
  const hypervisor = journal.phase === 'hypervisor';
  const data = hypervisor && safeHoldsData(ctx, file);
  const accepted = journal.accepted ? 'Nova accepted the request and never reported its outcome' : 'Nova was asked to move the guest';
  if (data && novaOutcome === 'failed') {
    throw new CowError('ECOW_INVALID_STATE', `interrupted create of snapshot ${snapshot}: --nova-outcome failed, but ${file} holds data: the guest wrote to it, so it runs on it; nothing changed`);
  }
  if (data || (hypervisor && novaOutcome === 'done')) {
    // The guest is on the overlay (it wrote into it, or Nova did switch): record it as active.
    if (info.active !== journal.backing || files.header(file).backing !== journal.backing) {
      throw new CowError('ECOW_INVALID_STATE', `interrupted create of snapshot ${snapshot}: the guest is on ${file} but the chain changed since (active ${info.active}); resolve by hand`);
    }
    await files.writeInfo({ ...info, active: file, [snapshot]: file });
    const why = data ? 'it holds data' : 'Nova did the switch (--nova-outcome done)';
    return done('adopted', `snapshot ${snapshot} create interrupted after the guest moved onto ${file} (${why}): recorded it as the active file`);
  }
  if (hypervisor && isAttached(status) && novaOutcome !== 'failed') {
    throw new CowError(
      'ECOW_NEEDS_FSCK',
      `interrupted create of snapshot ${snapshot} of attached volume ${files.volumeId}: ${accepted}; ${file} holds no data and the info file's active is still ${info.active}, so whether the guest moved onto ${file} cannot be told from the files. Run fsck with --nova-outcome done (the guest is on ${file}) or failed (it is not: ${file} is removed), or detach the volume and run fsck`,
    );
  }
  await files.unlink(file);
  return done('rolled-back', `snapshot ${snapshot} create interrupted before the info file recorded it: removed ${file}`);
}

/** An overlay that does not even open (a partial header) holds nothing. */
function safeHoldsData(ctx: OperationContext, file: string): boolean {
  try {
    return ctx.files.holdsData(file);
  } catch {
    return false;
  }
}

async function recoverDelete(ctx: OperationContext, journal: DeleteJournal, status: VolumeStatus, novaOutcome?: NovaOutcome): Promise<Recovery> {
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
  // A commit killed mid-way leaves allocated but unreferenced clusters in its target; free them
  // (never in a file a guest may be writing: the active file of an attached volume).
  let leaks = '';
  if (files.exists(journal.base) && (!isAttached(status) || journal.base !== info.active)) {
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
