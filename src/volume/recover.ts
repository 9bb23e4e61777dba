/**
 * Finish or undo the operation a journal records (a crash, a kill, a lost lock). Every
 * operation that changes a volume runs this first, under the lock, so none ever starts from a
 * half-done state; fsck reports what it did. Re-running the interrupted operation itself
 * therefore finishes it. Each operation's recovery lives with the operation
 * (recoverCreateSnapshot, recoverDeleteSnapshot); this file removes temp files and dispatches.
 *
 * A request the hypervisor accepted (journal `accepted`) and never reported on is never undone or
 * rerun while the volume is attached: the guest may be on the new overlay, a merge may be
 * running. Only fsck decides it, from the chain (data in the overlay, moved headers) or from
 * `novaOutcome`, what Nova did as the operator found out (its logs, the domain's disks).
 */
import type { OperationContext } from './context.js';
import { recoverCreateSnapshot } from './create-snapshot.js';
import { recoverDeleteSnapshot } from './delete-snapshot.js';
import { readJournal } from './journal.js';
import type { NovaOutcome, Recovery } from './recovery.js';
import type { VolumeStatus } from './status.js';

export type { NovaOutcome, Recovery };

/**
 * Remove this driver's temp files (an atomic write or a new file that a crash interrupted: under
 * the lock nobody else is writing them), then recover the journaled operation, if any.
 * `status`: the volume's status now. `removed` collects the temp files removed.
 */
export async function recover(ctx: OperationContext, status: VolumeStatus, removed: string[] = [], novaOutcome?: NovaOutcome): Promise<Recovery | null> {
  for (const t of (await ctx.files.list()).tempFiles) if (await ctx.files.unlink(t)) removed.push(t);
  const journal = await readJournal(ctx.files);
  if (!journal) return null;
  return journal.op === 'create-snapshot' ? recoverCreateSnapshot(ctx, journal, status, novaOutcome) : recoverDeleteSnapshot(ctx, journal, status, novaOutcome);
}
