// A raw image: guest offset = file offset; size = file size rounded up to whole 512-byte sectors, as
// qemu counts it (bdrv_getlength), the tail past the end of the file reading as zeros.
import { Image, st } from "./image";
import { readZeroFill, fileSize, flush } from "./io";
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
   * Without SEEK_DATA in the host API every byte of a raw file is reported as data; only the
   * sector tail past the end of the file is a hole (zero), as qemu's file driver reports it.
   */
  ownStatus(off: u64, bytes: u64): u64 {
    const end = fileSize(this.handle);
    st.offset = off;
    if (off >= end) {
      st.flags = ST_ZERO | ST_OFFSET_VALID;
      return bytes;
    }
    st.flags = ST_DATA | ST_OFFSET_VALID;
    return bytes < end - off ? bytes : end - off;
  }

  flush(): void { flush(this.handle); }
}
