// Convert: the guest view of a whole chain into a fresh image (raw or qcow2). Ranges that read as
// zeros are not written, so the target stays sparse (raw) or unallocated (qcow2).
import { Image } from "./image";
import { Job, allocatedAbove, alloc, CHUNK } from "./job";

/** Zero detection granularity: qemu-img convert's default -S (4 KiB). */
const BLOCK: u64 = 4096;

function chainDepth(img: Image): i32 {
  let d = 0;
  for (let i: Image | null = img; i != null; i = i.backing) d++;
  return d;
}

export class ConvertJob extends Job {
  private depth: i32;
  constructor(public src: Image, public dst: Image) {
    super();
    this.total = src.virtualSize();
    this.depth = chainDepth(src);
    if (dst.virtualSize() < this.total) dst.grow(this.total);
    this.buffer();
  }

  step(budget: u64): bool {
    const end = this.cursor + budget < this.total ? this.cursor + budget : this.total;
    while (this.cursor < end) {
      const off = this.cursor;
      const n = allocatedAbove(this.src, this.depth, off, this.total - off < CHUNK ? this.total - off : CHUNK);
      if (alloc.depth >= 0 && !alloc.zero) this.copy(off, n);
      this.cursor = off + n;
    }
    if (this.cursor >= this.total) {
      this.dst.flush();
      this.done = true;
    }
    return this.done;
  }

  /** Read a run and write it in stretches, skipping aligned all-zero blocks. */
  private copy(off: u64, n: u64): void {
    const buf = this.buf;
    this.src.read(off, buf, n);
    let i: u64 = 0;
    while (i < n) {
      const blockEnd = ((off + i) / BLOCK + 1) * BLOCK - off;
      const len = (blockEnd < n ? blockEnd : n) - i;
      if (isZero(buf + <usize>i, len)) { i += len; continue; }
      let j = i + len;
      while (j < n) {
        const l2 = n - j < BLOCK ? n - j : BLOCK;
        if (isZero(buf + <usize>j, l2)) break;
        j += l2;
      }
      this.dst.write(off + i, buf + <usize>i, j - i);
      i = j;
    }
  }
}

function isZero(p: usize, n: u64): bool {
  let i: usize = 0;
  const end = <usize>n;
  while (i + 8 <= end) {
    if (load<u64>(p + i) != 0) return false;
    i += 8;
  }
  while (i < end) {
    if (load<u8>(p + i) != 0) return false;
    i++;
  }
  return true;
}
