// Convert: the guest view of a whole chain into a fresh image (raw or qcow2). Ranges that read as
// zeros are not written, so the target stays sparse (raw) or unallocated (qcow2). With
// compression (qemu-img convert -c), every cluster holding data is stored compressed.
import { Image } from "./image";
import { Job, PassCache, allocatedAbove, allocatingLayer, CHUNK } from "./job";
import { fail, E_BAD_ARGUMENT } from "./errors";
import { ZERO_BLOCK, allZero, dataEnd } from "./zero-scan";

function chainDepth(img: Image): i32 {
  let d = 0;
  for (let i: Image | null = img; i != null; i = i.backing) d++;
  return d;
}

export class ConvertJob extends Job {
  private depth: i32;
  /** Cluster size of a compressing target, else 0. */
  private unit: u64 = 0;
  private clusterBuf: usize = 0;
  /** The source chain's runs, learnt within a step (the host may write to it between steps). */
  private passes: PassCache;
  constructor(public src: Image, public dst: Image, compressed: bool) {
    super();
    this.total = src.virtualSize();
    const depth = chainDepth(src);
    this.depth = depth;
    this.passes = new PassCache(depth);
    if (compressed) {
      this.unit = dst.allocationUnit();
      if (this.unit == 0) fail(E_BAD_ARGUMENT, "compressed output needs a qcow2 target, not " + dst.formatName());
    }
    if (dst.virtualSize() < this.total) dst.grow(this.total);
    if (compressed) this.clusterBuf = heap.alloc(<usize>this.unit);
    else this.buffer();
  }

  dispose(): void {
    if (this.clusterBuf != 0) heap.free(this.clusterBuf);
    this.clusterBuf = 0;
    super.dispose();
  }

  step(budget: u64): bool {
    const end = this.cursor + budget < this.total ? this.cursor + budget : this.total;
    this.passes.reset();
    while (this.cursor < end) {
      if (this.unit != 0) { this.cursor = this.compressFrom(this.cursor); continue; }
      const off = this.cursor;
      // A run of data is copied a buffer at a time; a run the chain leaves unallocated or zero is
      // passed over whole (it was cut into buffers too, and the chain walked down for each).
      let n = allocatedAbove(this.src, this.depth, off, end - off, this.passes);
      if (allocatingLayer.depth >= 0 && !allocatingLayer.zero) {
        if (n > CHUNK) n = CHUNK;
        this.copy(off, n);
      }
      this.cursor = off + n;
    }
    if (this.cursor >= this.total) {
      this.dst.flush();
      this.done = true;
    }
    return this.done;
  }

  /**
   * Compressed output from the cluster-aligned `off`: skip what the chain leaves unallocated or
   * zero in whole clusters; otherwise store the cluster compressed (zero-padded past the end of
   * the image, as qemu pads the last cluster), unless its guest bytes are all zero. Returns the
   * offset reached.
   */
  private compressFrom(off: u64): u64 {
    const cs = this.unit;
    const n = allocatedAbove(this.src, this.depth, off, this.total - off, this.passes);
    if (allocatingLayer.depth < 0 || allocatingLayer.zero) {
      const skipTo = off + n >= this.total ? this.total : (off + n) & ~(cs - 1);
      if (skipTo > off) return skipTo;
    }
    const len = this.total - off < cs ? this.total - off : cs;
    const buf = this.clusterBuf;
    this.src.read(off, buf, len);
    if (len < cs) memory.fill(buf + <usize>len, 0, <usize>(cs - len));
    if (!allZero(buf, cs)) this.dst.writeCompressed(off, buf, len);
    return off + len;
  }

  /** Read a run and write it in stretches, skipping aligned all-zero blocks. */
  private copy(off: u64, n: u64): void {
    const buf = this.buf;
    this.src.read(off, buf, n);
    let i: u64 = 0;
    while (i < n) {
      // The first block ends where the output's block does; the rest follow from there.
      const blockEnd = ((off + i) / ZERO_BLOCK + 1) * ZERO_BLOCK - off;
      const len = (blockEnd < n ? blockEnd : n) - i;
      if (allZero(buf + <usize>i, len)) { i += len; continue; }
      const j = dataEnd(buf, i + len, n);
      this.dst.write(off + i, buf + <usize>i, j - i);
      i = j;
    }
  }
}
