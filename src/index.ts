// cowchain's public API. Internals are not reachable by deep imports (see package.json exports).
export { CowError, isCowError, ERROR_CODES, type CowErrorCode } from './errors.js';
export { type Backend, FileBackend, MemoryBackend } from './engine/backend.js';
export { Image } from './image/image.js';
export type { HeaderInfo, ImageFormat, MapEntry } from './image/types.js';
export { openImage, openImageOn, defaultResolveBacking, type OpenOptions, type BackingResolver } from './chain/open-chain.js';
export { qemuStyleInfo, type QemuStyleInfo } from './image/info.js';
export { convertToRaw } from './image/convert.js';
