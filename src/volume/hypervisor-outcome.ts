/**
 * What a failed hypervisor call leaves: after the hypervisor accepted a request, only an error
 * status it reported itself says that the work failed. Anything else (a time-out, a refused
 * progress report, a cancel, a lost lock) leaves the outcome unknown: the guest may be on the new
 * overlay, a merge may still be running. Then nothing is undone and the volume needs fsck.
 */
import { CowError, isCowError } from '../errors.js';
import type { OperationContext } from './context.js';

/** Whether `error`, thrown after the hypervisor accepted the request, proves the work failed. */
export function provesFailure(error: unknown): boolean {
  return isCowError(error, 'ECOW_NOVA_STATUS');
}

/** The error an operation fails with when the hypervisor's outcome is unknown. */
export function needsFsck(ctx: OperationContext, what: string, cause: unknown): CowError {
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new CowError(
    'ECOW_NEEDS_FSCK',
    `${what} of volume ${ctx.files.volumeId}: Nova accepted the request but its outcome is unknown (${reason}); every file and the journal were kept: run fsck (with --nova-outcome done|failed if Nova's result is known)`,
    { cause },
  );
}
