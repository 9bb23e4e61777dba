// An open image. The base class is the interface every format offers the engine (guest reads,
// per-layer block status); qcow2.ts and raw.ts implement it.
import { fail, E_INTERNAL, E_BAD_ARGUMENT } from "./errors";
import { ST_ZERO, ST_DATA, ST_ALLOCATED } from "./layout";

/** Write zero bytes as data over [off, off+len) of `img`, a bounded buffer at a time. */
export function writeZeroData(img: Image, off: u64, len: u64): void {
  const chunk: u64 = 1 << 20;
  const size = <usize>(len < chunk ? len : chunk);
  const z = heap.alloc(size);
  memory.fill(z, 0, size);
  while (len > 0) {
    const n = len < chunk ? len : chunk;
    img.write(off, z, n);
    off += n; len -= n;
  }
  heap.free(z);
}

/** One layer's block-status answer for a run of bytes (see Image.status), set by the last call. */
export class Status {
  flags: i32 = 0;
  offset: u64 = 0;
}
export const lastStatus = new Status();

export class Image {
  backing: Image | null = null;
  constructor(public handle: i32, public writable: bool) {}

  virtualSize(): u64 { fail(E_INTERNAL, "virtualSize"); return 0; }
  formatName(): string { return ""; }

  /** Guest read of this layer and, where it has no data, its backing chain. Range within the image. */
  read(off: u64, ptr: usize, len: u64): void { fail(E_INTERNAL, "read"); }

  /** This layer's own status for [off, off+bytes): sets `lastStatus`, returns the run length. */
  ownStatus(off: u64, bytes: u64): u64 { fail(E_INTERNAL, "ownStatus"); return 0; }

  supportsBacking(): bool { return false; }

  /**
   * Block status as qemu's bdrv_co_block_status reports it for this layer: a run the layer does
   * not allocate reads as zero when nothing lies below it, or when the backing file ends before it.
   */
  status(off: u64, bytes: u64): u64 {
    const n = this.ownStatus(off, bytes);
    if ((lastStatus.flags & (ST_DATA | ST_ZERO)) != 0) {
      lastStatus.flags |= ST_ALLOCATED;
    } else if (this.supportsBacking()) {
      const b = this.backing;
      if (b == null || off >= b.virtualSize()) lastStatus.flags |= ST_ZERO;
    }
    return n;
  }

  /** Read [off, off+len) through the backing chain: zeros without a backing file or past its end. */
  readBacking(off: u64, ptr: usize, len: u64): void {
    const b = this.backing;
    if (b == null) { memory.fill(ptr, 0, <usize>len); return; }
    const bsize = b.virtualSize();
    if (off >= bsize) { memory.fill(ptr, 0, <usize>len); return; }
    const avail = bsize - off;
    if (avail >= len) { b.read(off, ptr, len); return; }
    b.read(off, ptr, avail);
    memory.fill(ptr + <usize>avail, 0, <usize>(len - avail));
  }

  /** Guest write; range already validated. */
  write(off: u64, ptr: usize, len: u64): void { fail(E_INTERNAL, "write"); }
  /** One whole guest cluster at `off`, stored compressed (qcow2 only; see Writer.writeCompressed). */
  writeCompressed(off: u64, ptr: usize, len: u64): void { fail(E_BAD_ARGUMENT, "compressed output needs a qcow2 target, not " + this.formatName()); }
  /** Cluster size of the format's allocation unit (0: none, e.g. raw). */
  allocationUnit(): u64 { return 0; }
  /** Make a guest range read as zeros; `unmap` may release the clusters behind it. */
  zero(off: u64, len: u64, unmap: bool): void { fail(E_INTERNAL, "zero"); }
  /** qemu-io's discard. */
  discard(off: u64, len: u64): void { fail(E_INTERNAL, "discard"); }
  /** Grow the virtual size (never shrinks). */
  grow(size: u64): void { fail(E_INTERNAL, "grow"); }

  flush(): void {}
  close(): void {}
}
