// Block commit: copy every range allocated above the base (in the top and, with a deeper base,
// every intermediate image) into the base. Only the base is written; the top is left as it is
// until the base is durable, so an interrupted commit changes no snapshot's content and a re-run
// finishes it.
import { Image } from "./image";
import { Job, Gather, allocatedAbove, alloc, CHUNK } from "./job";
import { fail, E_BAD_ARGUMENT } from "./errors";
import { Qcow2Image } from "./qcow2";
import { getU64 } from "./be";
import { truncateTo, flush } from "./io";
import { L1E_OFFSET_MASK, L2E_OFFSET_MASK, OFLAG_COMPRESSED } from "./layout";

export class CommitJob extends Job {
  private gather: Gather;

  /** `layers`: how many images, from `top` down, lie above `base` (1 = base is top's backing). */
  constructor(public top: Image, public base: Image, public layers: i32) {
    super();
    const buf = heap.alloc(<usize>CHUNK);
    this.gather = new Gather(base, buf);
    this.buf = buf;
    if (layers < 1) fail(E_BAD_ARGUMENT, "commit needs at least one image above the base");
    this.total = top.virtualSize();
    // A smaller base grows to the top's size; a larger one is never shrunk.
    if (base.virtualSize() < this.total) base.grow(this.total);
  }

  step(budget: u64): bool {
    const end = this.cursor + budget < this.total ? this.cursor + budget : this.total;
    while (this.cursor < end) {
      const off = this.cursor;
      const n = allocatedAbove(this.top, this.layers, off, this.total - off < CHUNK ? this.total - off : CHUNK);
      if (alloc.depth >= 0) {
        if (alloc.zero) {
          this.gather.flush();
          this.base.zero(off, n, true);
        } else {
          this.gather.add(this.top, off, n);
        }
      }
      this.cursor = off + n;
    }
    if (this.cursor >= this.total) {
      this.gather.flush();
      this.base.flush();
      this.done = true;
    }
    return this.done;
  }
}

/**
 * Empty a qcow2 image after its data was committed (qemu-img commit without -d): every L2 table
 * and data cluster is dropped, one L2 table at a time — the L1 entry reaches the disk first, the
 * refcounts drop after — and the file is cut after its last used cluster. A crash at any point
 * leaves a consistent image (leaks at worst) whose data is still in the base.
 */
export function emptyImage(q: Qcow2Image): void {
  q.prepareWrite();
  const n = <u64>q.h.l1Size;
  for (let i: u64 = 0; i < n; i++) {
    const l1e = q.l1Entry(i);
    const table = l1e & L1E_OFFSET_MASK;
    if (table == 0) continue;
    const p = q.l2Table(table);
    for (let k: u64 = 0; k < q.l2Entries; k++) {
      const e = getU64(p + <usize>(k * q.entryBytes));
      if ((e & OFLAG_COMPRESSED) != 0) q.freeCompressedLater(e);
      else if ((e & L2E_OFFSET_MASK) != 0) q.freeLater((e & L2E_OFFSET_MASK) >> q.clusterBits);
    }
    q.freeLater(table >> q.clusterBits);
    q.l2.drop(table);
    q.setL1Entry(i, 0);
    q.flushMetadata();
  }
  q.flushMetadata();
  truncateTo(q.handle, q.refcounts().highestUsed() << q.clusterBits);
  flush(q.handle);
}
