// Rebase and stream: change what an image is layered on without changing what its guest sees.
//  - safe rebase: before switching from the old backing chain to a new one, write into the image
//    every byte it does not allocate where the two chains differ (qemu-img rebase);
//  - stream: pull into the image everything its backing chain allocates above a new base
//    (libvirt's blockRebase), then switch to that base.
// The header switch (setBackingFile) happens only after the copied data is durable.
import { Image } from "./image";
import { Qcow2Image } from "./qcow2";
import { Job, Gather, allocatedAbove, allocatingLayer, CHUNK } from "./job";
import { fail, E_BAD_ARGUMENT } from "./errors";

/** Comparison granularity of a safe rebase (qemu compares in 512-byte sectors). */
const SECTOR: u64 = 512;

export class RebaseJob extends Job {
  private other: usize;
  /** `newBacking` null: flatten (the new view below the image is all zeros). */
  constructor(public img: Image, public newBacking: Image | null) {
    super();
    this.other = heap.alloc(<usize>CHUNK);
    this.buf = heap.alloc(<usize>CHUNK);
    this.total = img.virtualSize();
  }

  step(budget: u64): bool {
    const img = this.img;
    const end = this.cursor + budget < this.total ? this.cursor + budget : this.total;
    while (this.cursor < end) {
      const off = this.cursor;
      const n = allocatedAbove(img, 1, off, this.total - off < CHUNK ? this.total - off : CHUNK);
      if (allocatingLayer.depth < 0) this.syncRange(off, n);
      this.cursor = off + n;
    }
    if (this.cursor >= this.total) {
      img.flush();
      this.done = true;
    }
    return this.done;
  }

  /** [off, off+n) reads the old backing chain: keep its bytes wherever the new chain differs. */
  private syncRange(off: u64, n: u64): void {
    const oldView = this.buf;
    const newView = this.other;
    this.img.readBacking(off, oldView, n);
    const nb = this.newBacking;
    if (nb == null) memory.fill(newView, 0, <usize>n);
    else {
      const bsize = nb.virtualSize();
      const avail = off >= bsize ? 0 : bsize - off;
      if (avail >= n) nb.read(off, newView, n);
      else {
        if (avail > 0) nb.read(off, newView, avail);
        memory.fill(newView + <usize>avail, 0, <usize>(n - avail));
      }
    }
    // Write each differing stretch of sectors (runs merge while they keep differing).
    let i: u64 = 0;
    while (i < n) {
      const len = n - i < SECTOR ? n - i : SECTOR;
      if (memory.compare(oldView + <usize>i, newView + <usize>i, <usize>len) == 0) { i += len; continue; }
      let j = i + len;
      while (j < n) {
        const l2 = n - j < SECTOR ? n - j : SECTOR;
        if (memory.compare(oldView + <usize>j, newView + <usize>j, <usize>l2) == 0) break;
        j += l2;
      }
      this.img.write(off + i, oldView + <usize>i, j - i);
      i = j;
    }
  }

  dispose(): void {
    super.dispose();
    heap.free(this.other);
  }
}

export class StreamJob extends Job {
  private gather: Gather;
  /** `layers`: how many backing images, from the image's backing down, to pull data from. */
  constructor(public img: Image, public layers: i32) {
    super();
    const buf = heap.alloc(<usize>CHUNK);
    this.gather = new Gather(img, buf);
    this.buf = buf;
    this.total = img.virtualSize();
  }

  step(budget: u64): bool {
    const img = this.img;
    const end = this.cursor + budget < this.total ? this.cursor + budget : this.total;
    while (this.cursor < end) {
      const off = this.cursor;
      let n = allocatedAbove(img, 1, off, this.total - off < CHUNK ? this.total - off : CHUNK);
      if (allocatingLayer.depth < 0) {
        const b = img.backing;
        // A backing file that ends before `off` still counts: its zeros hide a longer new base.
        if (b != null) {
          n = allocatedAbove(b, this.layers, off, n);
          if (allocatingLayer.depth >= 0) {
            if (allocatingLayer.zero) { this.gather.flush(); img.zero(off, n, false); }
            else this.gather.add(img, off, n);
          }
        }
      }
      this.cursor = off + n;
    }
    // Nothing stays buffered between steps: a guest may write to the image before the next one.
    this.gather.flush();
    if (this.cursor >= this.total) {
      img.flush();
      this.done = true;
    }
    return this.done;
  }
}

/**
 * Rewrite the backing name and format in the header (an unsafe rebase: the caller answers for
 * the data). Everything written before is made durable first.
 */
export function setBackingFile(img: Image, name: string, format: string): void {
  if (!(img instanceof Qcow2Image)) fail(E_BAD_ARGUMENT, "only qcow2 images have a backing file");
  changetype<Qcow2Image>(img).setBackingFile(name, format);
}
