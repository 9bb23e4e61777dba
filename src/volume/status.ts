/**
 * Cinder volume statuses, and which of them each driver operation accepts. `in-use` means a
 * guest has the volume open: the hypervisor must do the live work, and the driver never writes a
 * file the guest may be using.
 */
import * as z from 'zod';
import { CowError } from '../errors.js';
import { lazy } from '../lazy.js';

/** `cinder.objects.fields.VolumeStatus`. */
export const VOLUME_STATUSES = [
  'creating',
  'available',
  'deleting',
  'error',
  'error_deleting',
  'error_managing',
  'managing',
  'attaching',
  'in-use',
  'detaching',
  'maintenance',
  'restoring-backup',
  'error_restoring',
  'reserved',
  'awaiting-transfer',
  'backing-up',
  'error_backing-up',
  'error_extending',
  'downloading',
  'uploading',
  'retyping',
  'extending',
  'reverting',
] as const;

/** The statuses as a zod schema, built at first use: `cowchain/volume` exports it as VolumeStatusSchema. */
export const volumeStatusSchema = lazy(() => z.enum(VOLUME_STATUSES));
export type VolumeStatus = (typeof VOLUME_STATUSES)[number];

/** One of VOLUME_STATUSES, as volumeStatusSchema() accepts it (without loading zod). */
function isVolumeStatus(v: unknown): v is VolumeStatus {
  return (VOLUME_STATUSES as readonly unknown[]).includes(v);
}

/** The statuses each operation accepts (Cinder's remotefs `_validate_state` lists). */
export const ACCEPTED_STATUSES = {
  createSnapshot: ['available', 'in-use', 'backing-up'],
  deleteSnapshot: ['available', 'in-use', 'backing-up', 'deleting', 'downloading'],
  cloneVolume: ['available', 'in-use', 'backing-up', 'downloading'],
  extendVolume: ['available', 'extending'],
  revertToSnapshot: ['available', 'reverting'],
  fsck: ['available', 'in-use', 'maintenance', 'error'],
} as const satisfies Record<string, readonly VolumeStatus[]>;

export type StatusCheckedOperation = keyof typeof ACCEPTED_STATUSES;

/** Whether a guest has the volume open: the hypervisor path. */
export function isAttached(status: VolumeStatus): boolean {
  return status === 'in-use';
}

/**
 * `status` parsed and accepted for `operation`; ECOW_BAD_ARGUMENT for a string that is no
 * volume status, ECOW_INVALID_STATE for a status the operation does not accept.
 */
export function checkStatus(operation: StatusCheckedOperation, status: unknown, volumeId: string): VolumeStatus {
  if (!isVolumeStatus(status)) {
    throw new CowError('ECOW_BAD_ARGUMENT', `volume status ${JSON.stringify(status)} is not a Cinder volume status (${VOLUME_STATUSES.join(', ')})`);
  }
  const accepted: readonly VolumeStatus[] = ACCEPTED_STATUSES[operation];
  if (!accepted.includes(status)) {
    const why = status === 'in-use' ? ' (refused while attached, as Cinder does)' : '';
    throw new CowError('ECOW_INVALID_STATE', `${operation} of volume ${volumeId} is not allowed while it is ${status}${why}; allowed: ${accepted.join(', ')}`);
  }
  return status;
}
