// cowchain's public API. Internals are not reachable by deep imports (see package.json exports).
export { CowError, isCowError, ERROR_CODES, type CowErrorCode } from './errors.js';
export { type Backend, FileBackend, MemoryBackend } from './engine/backend.js';
export { Image } from './image/image.js';
export type { HeaderInfo, ImageFormat, MapEntry } from './image/types.js';
export { openImage, openImageOn, defaultResolveBacking, type OpenOptions, type BackingResolver } from './image/open-chain.js';
export { qemuStyleInfo, type QemuStyleInfo } from './image/info.js';
export { convertImage, convertToRaw, type ConvertOptions } from './image/convert.js';
export { createImage, createQcow2On, CreateOptionsSchema, type CreateOptions } from './image/create.js';
export { commitImage, type CommitOptions } from './image/commit.js';
export { rebaseImage, streamImage, type RebaseOptions, type StreamOptions } from './image/rebase.js';
export type { JobOptions, ProgressCallback } from './image/job.js';
export { engineMemoryBytes, setEngineSource, type EngineSource } from './engine/engine.js';
export { checkImage, type CheckOutcome, type CheckOptions, type QemuCheckResult, type RepairMode } from './image/check.js';
// The async API: the same jobs in worker threads (see README, "Which API").
export {
  commit,
  rebase,
  stream,
  convert,
  check,
  create,
  type AsyncJobOptions,
  type AsyncCommitOptions,
  type AsyncRebaseOptions,
  type AsyncStreamOptions,
  type AsyncConvertOptions,
  type AsyncCheckOptions,
} from './worker/async-jobs.js';
export { EnginePool, defaultEnginePool, type EnginePoolOptions, type PoolJobOptions } from './worker/pool.js';
export type { JobRequest, JobResult, JobHooks, JobRunner } from './volume/job-request.js';
export { streamLive, commitLive, dropCommitted } from './image/live.js';
export {
  VolumeDriver,
  type VolumeDriverOptions,
  type OperationOptions,
  type CreateVolumeOptions,
  type CloneVolumeOptions,
  type VolumeDescription,
  type AttachInfo,
} from './volume/driver.js';
export type { Hypervisor, HypervisorCallOptions } from './volume/hypervisor.js';
export type { CreateSnapshotOptions, CreateSnapshotResult } from './volume/create-snapshot.js';
export type { DeleteSnapshotOptions, DeleteSnapshotResult, DeleteOutcome } from './volume/delete-snapshot.js';
export type { FlattenOptions, FlattenResult } from './volume/flatten.js';
export type { FsckOptions, FsckReport, FsckAction, FsckActionKind } from './volume/fsck.js';
export type { DriverStep } from './volume/context.js';
export type { Journal } from './volume/journal.js';
export { MAX_ATTACHED_CHAIN_DEPTH, MAX_CHAIN_DEPTH, MAX_SNAPSHOT_CHAIN_DEPTH, type ChainLink } from './volume/volume-files.js';
export { VOLUME_STATUSES, VolumeStatusSchema, ACCEPTED_STATUSES, type VolumeStatus } from './volume/status.js';
export { withVolumeLock, shareLease, type VolumeLockOptions } from './volume/lock.js';
export type { VolumeCoordinator, VolumeLockHandle, AcquireOptions } from './volume/coordination.js';
export { etcdCoordinator, DEFAULT_ETCD_LOCK_OPTIONS, type EtcdLockOptions } from './volume/etcd-lock.js';
export { parseEtcdUrl, type EtcdTarget } from './volume/etcd-target.js';
export { readInfo, writeInfo, serializeInfo, VolumeInfoSchema, type VolumeInfo } from './volume/info-file.js';
export {
  NovaClient,
  NovaHypervisor,
  LoopbackNova,
  SimulatedGuest,
  SnapshotStatusStore,
  startStatusServer,
  createStatusHandler,
  waitForProgress,
  type NovaClientOptions,
  type NovaHypervisorOptions,
  type LoopbackNovaOptions,
} from './nova/index.js';
