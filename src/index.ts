// cowchain's public API. Internals are not reachable by deep imports (see package.json exports).
export { CowError, isCowError, ERROR_CODES, type CowErrorCode } from './errors.js';
export { type Backend, FileBackend, MemoryBackend } from './engine/backend.js';
export { Image } from './image/image.js';
export type { HeaderInfo, ImageFormat, MapEntry } from './image/types.js';
export { openImage, openImageOn, defaultResolveBacking, type OpenOptions, type BackingResolver } from './chain/open-chain.js';
export { qemuStyleInfo, type QemuStyleInfo } from './image/info.js';
export { convertImage, convertToRaw, type ConvertOptions } from './image/convert.js';
export { createImage, createQcow2On, CreateOptionsSchema, type CreateOptions } from './image/create.js';
export { commitImage, type CommitOptions } from './image/commit.js';
export { rebaseImage, streamImage, type RebaseOptions, type StreamOptions } from './image/rebase.js';
export type { JobOptions, ProgressCallback } from './image/job.js';
export { engineMemoryBytes } from './engine/engine.js';
export { checkImage } from './image/check.js';
export { streamLive, commitLive, dropCommitted } from './image/live.js';
export { VolumeDriver, type VolumeDriverOptions } from './volume/driver.js';
export type { Hypervisor } from './volume/hypervisor.js';
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
