// A raw image: guest offset = file offset; size = file size rounded up to whole 512-byte sectors, as
// qemu counts it (bdrv_getlength), the tail past the end of the file reading as zeros.
import { Image, lastStatus, writeZeroData } from "./image";
import { readZeroFill, fileSize, fileExtent, flush, writeAt, truncateTo } from "./io";
import { fail, E_READ_ONLY } from "./errors";
import { ST_DATA, ST_ZERO, ST_OFFSET_VALID } from "./layout";

export class RawImage extends Image {
  size: u64;
  constructor(handle: i32, writable: bool) {
    super(handle, writable);
    this.size = (fileSize(handle) + 511) & ~(<u64>511);
  }

  virtualSize(): u64 { return this.size; }
  formatName(): string { return "raw"; }

  read(off: u64, ptr: usize, len: u64): void {
    // Chunked so that one host call never exceeds the i32 length of the import.
    while (len > 0) {
      const n: u64 = len < 0x40000000 ? len : 0x40000000;
      readZeroFill(this.handle, ptr, <i32>n, off);
      off += n; ptr += <usize>n; len -= n;
    }
  }

  /**
   * As qemu's file driver reports a raw file: a hole the host's file system knows of
   * (SEEK_DATA/SEEK_HOLE) and the sector tail past the end of the file are zero, the rest is data.
   * A host that cannot tell reports all data.
   */
  ownStatus(off: u64, bytes: u64): u64 {
    const end = fileSize(this.handle);
    lastStatus.offset = off;
    if (off >= end) {
      lastStatus.flags = ST_ZERO | ST_OFFSET_VALID;
      return bytes;
    }
    const run = fileExtent(this.handle, off, bytes < end - off ? bytes : end - off);
    if (run < 0) {
      lastStatus.flags = ST_ZERO | ST_OFFSET_VALID;
      return <u64>(-run);
    }
    lastStatus.flags = ST_DATA | ST_OFFSET_VALID;
    return <u64>run;
  }

  write(off: u64, ptr: usize, len: u64): void {
    if (!this.writable) fail(E_READ_ONLY, "raw image was opened read-only");
    while (len > 0) {
      const n: u64 = len < 0x40000000 ? len : 0x40000000;
      writeAt(this.handle, ptr, <i32>n, off);
      off += n; ptr += <usize>n; len -= n;
    }
    if (off > this.size) this.size = off;
  }

  /** Zeros written as data (a raw file has no metadata to say "zero"); discard does the same. */
  zero(off: u64, len: u64, unmap: bool = false): void {
    writeZeroData(this, off, len);
  }

  discard(off: u64, len: u64): void { this.zero(off, len); }

  /** Grow the file; new bytes read as zeros. */
  grow(size: u64): void {
    if (!this.writable) fail(E_READ_ONLY, "raw image was opened read-only");
    if (size <= this.size) return;
    truncateTo(this.handle, size);
    this.size = size;
  }

  flush(): void { flush(this.handle); }
}
