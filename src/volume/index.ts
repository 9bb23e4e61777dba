/**
 * `cowchain/volume`: the Cinder-semantics volume driver and everything a caller types against —
 * its options and results, the `Hypervisor` interface (implement it for a hypervisor other than
 * Nova), volume statuses, chain limits, file names and the info file's shape.
 * @module cowchain/volume
 */
export {
  VolumeDriver,
  type VolumeDriverOptions,
  type VolumeEncryption,
  type OperationOptions,
  type CreateVolumeOptions,
  type CloneVolumeOptions,
  type VolumeDescription,
  type AttachInfo,
} from './driver.js';
export type { Hypervisor, HypervisorCallOptions, CreateInfo, DeleteInfo } from './hypervisor.js';
export type { CreateSnapshotOptions, CreateSnapshotResult } from './create-snapshot.js';
export type { DeleteSnapshotOptions, DeleteSnapshotResult, DeleteOutcome } from './delete-snapshot.js';
export type { FlattenOptions, FlattenResult } from './flatten.js';
export type { FsckOptions, FsckReport, FsckAction, FsckActionKind } from './fsck.js';
export type { NovaOutcome } from './recovery.js';
export type { DriverStep } from './context.js';
export type { Journal } from './journal.js';
export type { JobRequest, JobResult, JobHooks, JobRunner } from './job-request.js';
export { shareLease, type VolumeLockOptions } from './lock.js';
export type { VolumeCoordinator, VolumeLockHandle, AcquireOptions } from './coordination.js';
export { etcdCoordinator, DEFAULT_ETCD_LOCK_OPTIONS, type EtcdLockOptions } from './etcd-lock.js';
export { parseEtcdUrl, type EtcdTarget } from './etcd-target.js';
export type { SecureFilePermissions } from './file-modes.js';
export { MAX_ATTACHED_CHAIN_DEPTH, MAX_CHAIN_DEPTH, MAX_SNAPSHOT_CHAIN_DEPTH, type ChainLink } from './volume-files.js';
export { VOLUME_STATUSES, ACCEPTED_STATUSES, type VolumeStatus } from './status.js';
export { readInfo, type VolumeInfo } from './info-file.js';
export { VolumeInfoSchema, VolumeStatusSchema } from './schemas.js';
export { isUuid, isSnapshotId, baseName as volumeFileName, snapshotFileName, parseChainName, type ParsedChainName } from './names.js';
