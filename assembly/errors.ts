// Engine errors. AssemblyScript has no exceptions, so an error records its code and message in
// globals and traps; the host catches the trap, reads both through `lastErrorCode/Message`, and
// throws a CowError. The codes are mirrored by src/errors.ts (test/engine/boundary.test.ts fails
// when an engine code is missing there).

export const E_BAD_MAGIC = "ECOW_BAD_MAGIC";
export const E_BAD_VERSION = "ECOW_BAD_VERSION";
export const E_BAD_CLUSTER_BITS = "ECOW_BAD_CLUSTER_BITS";
export const E_BAD_HEADER_LENGTH = "ECOW_BAD_HEADER_LENGTH";
export const E_BAD_BACKING_NAME = "ECOW_BAD_BACKING_NAME";
export const E_UNSUPPORTED_FEATURE = "ECOW_UNSUPPORTED_FEATURE";
export const E_BAD_COMPRESSION = "ECOW_BAD_COMPRESSION";
export const E_BAD_REFCOUNT_ORDER = "ECOW_BAD_REFCOUNT_ORDER";
export const E_BAD_REFCOUNT_TABLE = "ECOW_BAD_REFCOUNT_TABLE";
export const E_BAD_L1_TABLE = "ECOW_BAD_L1_TABLE";
export const E_BAD_SIZE = "ECOW_BAD_SIZE";
export const E_BAD_SNAPSHOT_TABLE = "ECOW_BAD_SNAPSHOT_TABLE";
export const E_BAD_CRYPT_METHOD = "ECOW_BAD_CRYPT_METHOD";
export const E_BAD_EXTENSION = "ECOW_BAD_EXTENSION";
export const E_BAD_BITMAPS = "ECOW_BAD_BITMAPS";
export const E_CORRUPT = "ECOW_CORRUPT";
export const E_ENCRYPTED = "ECOW_ENCRYPTED";
export const E_BAD_LUKS_HEADER = "ECOW_BAD_LUKS_HEADER";
export const E_READ_ONLY = "ECOW_READ_ONLY";
export const E_INTERNAL_SNAPSHOTS = "ECOW_INTERNAL_SNAPSHOTS";
export const E_MARKED_CORRUPT = "ECOW_MARKED_CORRUPT";
export const E_DIRTY = "ECOW_DIRTY";
export const E_DECOMPRESS = "ECOW_DECOMPRESS";
export const E_RANGE = "ECOW_RANGE";
export const E_IO = "ECOW_IO";
export const E_BAD_ARGUMENT = "ECOW_BAD_ARGUMENT";
export const E_INTERNAL = "ECOW_INTERNAL";

export let lastCode: string = "";
export let lastMessage: string = "";

/** Record the error and unwind to the host. Never returns. */
export function fail(code: string, message: string): void {
  lastCode = code;
  lastMessage = message;
  unreachable();
}

/** Hex rendering for offsets in messages. */
export function hex(v: u64): string {
  return "0x" + v.toString(16);
}

/** Forget the last error once the host has read it, so a later foreign trap is not misreported. */
export function clearError(): void {
  lastCode = "";
  lastMessage = "";
}
