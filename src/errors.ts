/**
 * Every error cowchain throws is a CowError with a stable `code`. Callers branch on `code`,
 * never on the message text. Engine codes (raised inside the wasm) and host codes share one
 * namespace; the engine's are listed in assembly/errors.ts and mirrored here.
 */
export const ERROR_CODES = {
  // --- qcow2 header: qemu's open-time checks, one code per class ---
  ECOW_BAD_MAGIC: 'not a qcow2 image (bad magic)',
  ECOW_BAD_VERSION: 'qcow2 version is not 2 or 3',
  ECOW_BAD_CLUSTER_BITS: 'cluster_bits outside 9..21 (14..21 with extended L2)',
  ECOW_BAD_HEADER_LENGTH: 'header_length too short or larger than a cluster',
  ECOW_BAD_BACKING_NAME: 'backing file offset or name length out of range',
  ECOW_UNSUPPORTED_FEATURE: 'an incompatible feature bit we do not support (or unknown), or data-file-raw without a data file',
  ECOW_BAD_COMPRESSION: 'compression type and its feature bit disagree, or unknown type',
  ECOW_BAD_REFCOUNT_ORDER: 'refcount_order above 6 (or not 4 in a v2 image)',
  ECOW_BAD_REFCOUNT_TABLE: 'refcount table empty, unaligned, too large or overflowing',
  ECOW_BAD_L1_TABLE: 'L1 table unaligned, too small for the size, too large or overflowing',
  ECOW_BAD_SIZE: 'virtual size too large',
  ECOW_BAD_SNAPSHOT_TABLE: 'internal snapshot table unaligned, too large, or with an entry qemu refuses',
  ECOW_BAD_CRYPT_METHOD: 'unknown encryption method',
  ECOW_BAD_EXTENSION: 'a header extension overruns its area or has an invalid length',
  ECOW_BAD_BITMAPS: 'the persistent bitmaps (extension or directory) break the rules qemu checks on open',
  // --- run-time image state ---
  ECOW_CORRUPT: 'image metadata is inconsistent (qemu would mark it corrupt)',
  ECOW_ENCRYPTED: 'this kind of encrypted image is not supported (only LUKS)',
  ECOW_BAD_LUKS_HEADER: 'the LUKS header of an encrypted image is missing, damaged or not supported',
  ECOW_KEY_REQUIRED: 'the image is encrypted and no key secret was given for it',
  ECOW_BAD_SECRET: 'the secret unlocks no key slot of the encrypted image',
  ECOW_READ_ONLY: 'the image was opened read-only',
  ECOW_INTERNAL_SNAPSHOTS: 'image has internal snapshots; writing to it is not supported',
  ECOW_MARKED_CORRUPT: 'image has the corrupt bit set; it may only be opened read-only',
  ECOW_DIRTY: 'image has the dirty bit set (lazy refcounts); repair it first',
  ECOW_DECOMPRESS: 'a compressed cluster failed to decompress',
  ECOW_RANGE: 'offset or length outside the image',
  ECOW_IO: 'host I/O failed',
  ECOW_BAD_ARGUMENT: 'invalid argument',
  ECOW_USAGE: 'the command line is not one cowchain understands (an unknown option or command, a missing argument); exit status 2',
  ECOW_CHECK_UNSUPPORTED: 'the image format has no consistency check (raw); qemu-img check exits 63 there too',
  ECOW_CHECK_FAILED: 'the check could not complete (qemu-img check exit status 1)',
  ECOW_INTERNAL: 'internal engine error (a bug)',
  ECOW_CANCELLED: 'the operation was cancelled',
  ECOW_ENGINE_LOAD: 'the wasm engine could not be read, compiled or instantiated',
  ECOW_WORKER_DIED: 'an engine worker thread exited or failed while it ran a job',
  // --- host: chains, volumes, Nova ---
  ECOW_NOT_FOUND: 'file or object not found',
  ECOW_EXISTS: 'target already exists',
  ECOW_UNKNOWN_FORMAT: 'format not raw or qcow2',
  ECOW_FORMAT_UNKNOWN: "an image's format was neither given nor recorded, and is not guessed",
  ECOW_FORMAT_CONFLICT: 'the format given, recorded or stored in a header disagree',
  ECOW_BACKING_REJECTED: 'a backing file name failed validation',
  ECOW_BACKING_MISSING: 'a backing file does not exist',
  ECOW_CHAIN_LOOP: 'backing chain contains a loop',
  ECOW_CHAIN_TOO_DEEP: 'backing chain deeper than the limit',
  ECOW_INFO_INVALID: 'volume info file unreadable or invalid',
  ECOW_LOCKED: 'volume lock could not be acquired',
  ECOW_ACCESS: 'permission denied or a read-only file system: a file or directory the operation must write is not writable (checked before anything changes)',
  ECOW_IMAGE_LOCKED: 'another process holds a qemu image lock that conflicts (qemu, qemu-img, or another cowchain writer)',
  ECOW_LOCK_LOST: 'volume lock was lost while held (another process may have taken it over)',
  ECOW_COORDINATION_UNAVAILABLE: 'the coordination service (etcd) holding the volume locks cannot be reached or refused the request',
  ECOW_INVALID_STATE: 'operation not allowed in the volume or snapshot state',
  ECOW_HYPERVISOR_UNAVAILABLE: 'attached-volume operation needs a hypervisor (Nova) client',
  ECOW_NOVA_REQUEST: 'Nova rejected the request',
  ECOW_NOVA_UNAVAILABLE: 'Nova could not be reached or failed',
  ECOW_NOVA_STATUS: 'Nova reported an error status for the snapshot',
  ECOW_NOVA_TIMEOUT: 'Nova did not report progress in time',
  ECOW_STATUS_REJECTED: "the status endpoint refused Nova's progress report (token, URL or body)",
  ECOW_NEEDS_FSCK: 'Nova accepted the request but its outcome is unknown; nothing was undone: run fsck',
  ECOW_CONCURRENT_REQUEST: 'the snapshot was changed by a concurrent request',
  ECOW_BAD_STATUS_UPDATE: 'invalid snapshot status transition',
  ECOW_UNAUTHORIZED: 'token rejected',
} as const;

export type CowErrorCode = keyof typeof ERROR_CODES;

export class CowError extends Error {
  readonly code: CowErrorCode;
  constructor(code: CowErrorCode, message: string, options?: { cause?: unknown }) {
    super(`${code}: ${message}`, options);
    this.name = 'CowError';
    this.code = code;
  }
}

export function isCowError(e: unknown, code?: CowErrorCode): e is CowError {
  return e instanceof CowError && (code === undefined || e.code === code);
}
