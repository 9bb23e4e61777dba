/**
 * The shapes exchanged on the Nova path, as zod values: what we send to Nova's
 * `os-assisted-volume-snapshots` API, what Nova answers, and what Nova sends back through
 * Cinder's `os-update_snapshot_status` action. Nova's and Cinder's APIs validate strictly
 * (unknown keys → 400), so the request shapes here are strict too.
 */
import * as z from 'zod';
import type { CreateInfo, DeleteInfo } from '../volume/hypervisor.js';

export type { CreateInfo, DeleteInfo };

const nonEmpty = z.string().min(1);

/**
 * `create_info` of `POST /os-assisted-volume-snapshots`: switch the guest onto `new_file`. The
 * type is the volume layer's (src/volume/hypervisor.ts); the schema must produce exactly it.
 */
export const createInfoSchema = z.strictObject({
  type: z.literal('qcow2'),
  new_file: nonEmpty,
  snapshot_id: nonEmpty,
}) satisfies z.ZodType<CreateInfo>;

/**
 * `delete_info` of `DELETE /os-assisted-volume-snapshots/{id}`. `merge_target_file: null` asks
 * for a blockRebase (pull `file_to_merge`'s data into the active file; `file_to_merge: null`
 * pulls everything and drops the backing file); a non-null target asks for a blockCommit of
 * `file_to_merge` into it.
 */
export const deleteInfoSchema = z.strictObject({
  type: z.literal('qcow2'),
  file_to_merge: nonEmpty.nullable(),
  merge_target_file: nonEmpty.nullable(),
  volume_id: nonEmpty,
}) satisfies z.ZodType<DeleteInfo>;

/**
 * Nova's answer to a create. `id` echoes `create_info.id`, which we never send, so Nova
 * answers `null`; the schema still accepts a string.
 */
export const createSnapshotResponseSchema = z.strictObject({
  snapshot: z.strictObject({
    id: z.string().nullable(),
    volumeId: nonEmpty,
  }),
});
export type CreateSnapshotResponse = z.infer<typeof createSnapshotResponseSchema>;

/** Nova's answer to a delete has no body (status 204 today; 202 in older deployments). */
export const deleteSnapshotResponseSchema = z.literal('');

/**
 * An OpenStack fault body: a single key naming the fault class (`badRequest`, `itemNotFound`,
 * `forbidden`, …) whose value carries the human-readable `message`.
 */
export const novaErrorSchema = z
  .record(z.string(), z.looseObject({ message: z.string(), code: z.number().optional() }))
  .refine((body) => Object.keys(body).length === 1, 'a fault body has exactly one key');
export type NovaError = z.infer<typeof novaErrorSchema>;

/** Cinder's snapshot statuses (`cinder.objects.fields.SnapshotStatus`). */
export const SNAPSHOT_STATUSES = [
  'error',
  'available',
  'creating',
  'deleting',
  'deleted',
  'updating',
  'error_deleting',
  'unmanaging',
  'backing-up',
  'restoring',
] as const;
export const snapshotStatusSchema = z.enum(SNAPSHOT_STATUSES);
export type SnapshotStatus = z.infer<typeof snapshotStatusSchema>;

/**
 * Cinder's `progress` format: an integer percentage 0..100 followed by `%`. Cinder also
 * accepts an empty string and then leaves the stored progress unchanged.
 */
export const progressSchema = z
  .string()
  .regex(/^(?:\d{1,3}%)?$/, 'progress must be an integer percentage like "90%"')
  .refine((p) => p === '' || Number.parseInt(p, 10) <= 100, 'progress must be at most 100%');

/**
 * Body of Cinder's `POST /v3/{project}/snapshots/{id}/action` that Nova uses to report. The
 * status is any string here: whether it is acceptable depends on the current status.
 */
export const updateSnapshotStatusSchema = z.strictObject({
  'os-update_snapshot_status': z.strictObject({
    status: z.string(),
    progress: progressSchema.optional(),
  }),
});
export type UpdateSnapshotStatus = z.infer<typeof updateSnapshotStatusSchema>;
