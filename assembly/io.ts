// The engine's only window on the world: host imports on numeric handles. The host throws (a JS
// exception unwinds through wasm) when the OS reports an error, so these return plain counts.
// Offsets cross the boundary as f64: exact for every integer below 2^53 (8 PiB), and no BigInt
// conversion on the hot path.
import { fail, E_CORRUPT, hex } from "./errors";

@external("host", "read") declare function hostRead(handle: i32, ptr: usize, len: i32, offset: f64): i32;
@external("host", "write") declare function hostWrite(handle: i32, ptr: usize, len: i32, offset: f64): void;
@external("host", "size") declare function hostSize(handle: i32): f64;
/** From `offset`, at most `len` bytes: n > 0 bytes of data, or a hole of -n bytes (reads as zeros). */
@external("host", "extent") declare function hostExtent(handle: i32, offset: f64, len: f64): f64;
/** Bytes the file takes on its device (st_blocks * 512); -1 when the host cannot tell. */
@external("host", "allocated") declare function hostAllocated(handle: i32): f64;
@external("host", "truncate") declare function hostTruncate(handle: i32, size: f64): void;
@external("host", "flush") declare function hostFlush(handle: i32): void;
/** Inflate `srcLen` bytes into exactly `dstLen` bytes; returns bytes produced, -1 on bad data. */
@external("host", "decompress") declare function hostDecompress(type: i32, src: usize, srcLen: i32, dst: usize, dstLen: i32): i32;
/**
 * AES-ECB in place on `len` bytes (whole 16-byte blocks) with a key of image `handle`'s LUKS
 * master key (XTS's two halves): `which` is ECB_TWEAK (encrypt with the tweak key), ECB_DECRYPT
 * or ECB_ENCRYPT (the data key). XTS itself is assembly/cipher.ts.
 */
@external("host", "ecb") declare function hostEcb(handle: i32, which: i32, ptr: usize, len: i32): void;
/** Compress `srcLen` bytes into at most `dstCap` bytes; returns the length, -1 when it does not fit. */
@external("host", "compress") declare function hostCompress(type: i32, src: usize, srcLen: i32, dst: usize, dstCap: i32): i32;

/**
 * Offsets from 2^53 on cannot cross the boundary exactly (the host refuses them) and lie past the
 * end of any file: such reads (a damaged entry's offset, up to 2^56) are past-the-end reads.
 */
const MAX_READ_OFFSET: u64 = 1 << 53;

function readAt(handle: i32, ptr: usize, len: i32, offset: u64): i32 {
  return offset >= MAX_READ_OFFSET ? 0 : hostRead(handle, ptr, len, <f64>offset);
}

/** Read up to len bytes; whatever lies past the end of the file reads as zeros. */
export function readZeroFill(handle: i32, ptr: usize, len: i32, offset: u64): void {
  const n = readAt(handle, ptr, len, offset);
  if (n < len) memory.fill(ptr + <usize>n, 0, <usize>(len - n));
}

/** Read exactly len bytes of metadata; a short read means a reference past the end of the file. */
export function readExact(handle: i32, ptr: usize, len: i32, offset: u64, what: string): void {
  const n = readAt(handle, ptr, len, offset);
  if (n != len) fail(E_CORRUPT, what + " at " + hex(offset) + " lies past the end of the file");
}

/**
 * Read a metadata table. One that starts past the end of the file is corruption (qemu-img check:
 * "exceeding the end of the file"); one the end of the file cuts off reads as zeros from there,
 * as qemu reads it.
 */
export function readTable(handle: i32, ptr: usize, len: i32, offset: u64, what: string): void {
  if (offset >= fileEnd(handle)) fail(E_CORRUPT, what + " at " + hex(offset) + " lies past the end of the file");
  readZeroFill(handle, ptr, len, offset);
}

/** The block layer refuses any request reaching past this (INT64_MAX aligned down to 1 GiB). */
const BDRV_MAX_LENGTH: u64 = 0x7fffffffc0000000;

/** A read qemu's block layer would refuse with EIO (the bytes past the file itself read as zeros). */
export function refusedRead(off: u64, len: u64): bool {
  return off > BDRV_MAX_LENGTH || len > BDRV_MAX_LENGTH - off;
}

export function writeAt(handle: i32, ptr: usize, len: i32, offset: u64): void {
  hostWrite(handle, ptr, len, <f64>offset);
}

export function fileSize(handle: i32): u64 {
  return <u64>hostSize(handle);
}

/**
 * From `off` (below the file's size), at most `len` bytes: n > 0 bytes of data, or a hole of -n
 * bytes that reads as zeros (the host asks the file system; without an answer, all data).
 */
export function fileExtent(handle: i32, off: u64, len: u64): i64 {
  const n = <i64>hostExtent(handle, <f64>off, <f64>len);
  // The host's answer is bounded and non-zero; anything else is data, the safe reading.
  return n == 0 || n > <i64>len || n < -<i64>len ? <i64>len : n;
}

/** Bytes the file takes on its device, as qemu's bdrv_get_allocated_file_size; -1: unknown. */
export function fileAllocated(handle: i32): i64 {
  const n = hostAllocated(handle);
  return n >= 0 ? <i64>n : -1;
}

/**
 * The end of the file as qemu's block layer sees it: whole 512-byte sectors (the partial last
 * sector reads as zeros). What counts as "past the end of the file" is measured from here.
 */
export function fileEnd(handle: i32): u64 {
  return (fileSize(handle) + 511) & ~(<u64>511);
}

export function truncateTo(handle: i32, size: u64): void {
  hostTruncate(handle, <f64>size);
}

export function flush(handle: i32): void {
  hostFlush(handle);
}

export function decompress(type: i32, src: usize, srcLen: i32, dst: usize, dstLen: i32): i32 {
  return hostDecompress(type, src, srcLen, dst, dstLen);
}

export function compress(type: i32, src: usize, srcLen: i32, dst: usize, dstCap: i32): i32 {
  return hostCompress(type, src, srcLen, dst, dstCap);
}

export const ECB_TWEAK: i32 = 0;
export const ECB_DECRYPT: i32 = 1;
export const ECB_ENCRYPT: i32 = 2;

export function ecb(handle: i32, which: i32, ptr: usize, len: i32): void {
  hostEcb(handle, which, ptr, len);
}
