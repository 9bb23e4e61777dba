// Long operations run as jobs the host drives in steps: step(budget) does a bounded amount of work
// and returns, so the host can report progress, cancel, or yield to its event loop between steps.
import { Image } from "./image";
import { ST_DATA, ST_ZERO } from "./layout";
import { lastStatus } from "./image";

/**
 * Bytes moved per host read/write: big enough to amortise calls, small enough that the buffer
 * stays in the CPU cache between the read into it and the write out of it. Measured on workload
 * (c) of the bench (1 GiB sequential commit into a raw base): 8 MiB took 1.3–2.9 s, 2 MiB
 * 1.2–4.8 s, 1 MiB 0.76–0.89 s, 512 KiB 0.78–1.0 s.
 */
export const CHUNK: u64 = 1 << 20;

export class Job {
  /** Guest offset reached. */
  cursor: u64 = 0;
  /** Guest bytes to cover. */
  total: u64 = 0;
  done: bool = false;
  protected buf: usize = 0;

  protected buffer(): usize {
    if (this.buf == 0) this.buf = heap.alloc(<usize>CHUNK);
    return this.buf;
  }

  /** Advance by roughly `budget` guest bytes; returns true when finished. */
  step(budget: u64): bool { return true; }

  dispose(): void {
    if (this.buf != 0) heap.free(this.buf);
    this.buf = 0;
  }
}

/**
 * The answer of the last allocatedAbove call: which layer holds the run, and whether it reads as
 * zeros. One shared instance rather than a new object per call: the calls are on the copy path.
 */
export class AllocatingLayer {
  depth: i32 = -1;
  zero: bool = false;
}
export const allocatingLayer = new AllocatingLayer();

/**
 * What a walk down a chain learnt of each layer: the end of the last run the layer left to the
 * layers below it (from the offset it was asked at). A walk that moves forward through the guest
 * passes such a layer by until it reaches that end, instead of asking it again for every run
 * the layers above it have: in a deep chain each layer is then asked once per run it has.
 * Valid while nothing writes to the chain: reset() it whenever something may have.
 */
export class PassCache {
  private ends: StaticArray<u64>;
  constructor(layers: i32) { this.ends = new StaticArray<u64>(layers); }
  reset(): void { memory.fill(changetype<usize>(this.ends), 0, <usize>this.ends.length * 8); }
  end(d: i32): u64 { return d < this.ends.length ? unchecked(this.ends[d]) : 0; }
  set(d: i32, v: u64): void { if (d < this.ends.length) unchecked(this.ends[d] = v); }
}

/**
 * For the run at `off` (at most `max` bytes), find the topmost of the first `layers` images of the
 * chain starting at `top` that allocates it. Sets `allocatingLayer` (depth -1: none) and returns
 * the run length over which that answer holds. A layer shorter than `off` with images below it counts as
 * allocating zeros (they hide the images below, which may be longer). With a `cache`, each layer
 * is asked for its whole run (up to `max`) and the runs it passes down are remembered.
 */
export function allocatedAbove(top: Image, layers: i32, off: u64, max: u64, cache: PassCache | null = null): u64 {
  let n = max;
  let img: Image | null = top;
  for (let d = 0; d < layers && img != null; d++) {
    const i: Image = img;
    if (cache != null && off < cache.end(d)) {
      // Within a run this layer leaves to the layers below (so `off` is within its size too).
      const left = cache.end(d) - off;
      if (left < n) n = left;
      img = i.backing;
      continue;
    }
    if (off >= i.virtualSize()) {
      // This layer ends before `off`: the layers above deferred to it, and it reads as zeros there,
      // hiding whatever lies below (qemu's bdrv_co_common_block_status_above counts these zeros as
      // allocated at this layer). With nothing below, unallocated means zeros anyway.
      allocatingLayer.depth = i.backing != null ? d : -1;
      allocatingLayer.zero = i.backing != null;
      return n;
    }
    const lim = i.virtualSize() - off;
    if (cache != null) {
      const run = i.ownStatus(off, max < lim ? max : lim);
      if (run < n) n = run;
      if ((lastStatus.flags & (ST_DATA | ST_ZERO)) == 0) cache.set(d, off + run);
    } else {
      n = i.ownStatus(off, n < lim ? n : lim);
    }
    if ((lastStatus.flags & (ST_DATA | ST_ZERO)) != 0) {
      allocatingLayer.depth = d;
      allocatingLayer.zero = (lastStatus.flags & ST_ZERO) != 0;
      return n;
    }
    img = i.backing;
  }
  allocatingLayer.depth = -1;
  allocatingLayer.zero = false;
  return n;
}

/**
 * Copies guest ranges into a destination image, gathering consecutive data runs into one buffer
 * so the destination sees one large write (one contiguous allocation) per run of guest clusters.
 */
export class Gather {
  private start: u64 = 0;
  private len: u64 = 0;
  constructor(public dst: Image, public buf: usize) {}

  /** Read [off, off+n) from `src` (its guest view) and queue it for `dst`. */
  add(src: Image, off: u64, n: u64): void {
    while (n > 0) {
      if (this.len > 0 && (this.start + this.len != off || this.len == CHUNK)) this.flush();
      if (this.len == 0) this.start = off;
      const room = CHUNK - this.len;
      const m = n < room ? n : room;
      src.read(off, this.buf + <usize>this.len, m);
      this.len += m;
      off += m;
      n -= m;
    }
  }

  flush(): void {
    if (this.len == 0) return;
    this.dst.write(this.start, this.buf, this.len);
    this.len = 0;
  }
}
