/**
 * `cowchain`: qcow2 images (create, open, read and write, commit, rebase, stream, convert, check),
 * the same jobs in engine worker threads, and the volume driver (everything `cowchain/volume`
 * exports). The Nova path is `cowchain/nova`, test doubles are `cowchain/testing`. Nothing else
 * is reachable: package.json's `exports` names these four entry points only.
 * @module cowchain
 */
export { CowError, isCowError, ERROR_CODES, type CowErrorCode } from './errors.js';
export { type Backend, FileBackend, MemoryBackend } from './engine/backend.js';
export type { LockMode } from './engine/image-lock.js';
export { Image } from './image/image.js';
export type { HeaderInfo, ImageFormat, MapEntry } from './image/types.js';
export { openImage, openImageOn, defaultResolveBacking, type OpenOptions, type BackingResolver, type BackingFormatPolicy, type KeySecrets } from './image/open-chain.js';
export { qemuStyleInfo, type QemuStyleInfo } from './image/info.js';
export { convertImage, convertToRaw, type ConvertOptions } from './image/convert.js';
export { createImage, createQcow2On, type CreateOptions, type Qcow2LayoutOptions } from './image/create.js';
export { commitImage, type CommitOptions } from './image/commit.js';
export { rebaseImage, streamImage, type RebaseOptions, type StreamOptions } from './image/rebase.js';
export type { JobOptions, ProgressCallback } from './image/job.js';
export { checkImage, type CheckOutcome, type CheckOptions, type QemuCheckResult, type RepairMode } from './image/check.js';
export { engineMemoryBytes, setEngineSource, type EngineSource } from './engine/engine.js';
export { parseSize } from './size.js';
// The async API: the same jobs in worker threads (README, "Which API").
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
// The volume driver and what a caller types against (cowchain/volume).
export * from './volume/index.js';
