/**
 * A disk's volatile write cache in front of a real file, for the fault tests: writes are held
 * until they are applied (a flush), reads see them as the process would, and a power loss decides
 * which of the held writes reach the file.
 */
import type { Backend } from '../../src/index.js';

export interface HeldWrite {
  off: number;
  data: Uint8Array;
  /** Order of all held writes in the process (across files): the chain's newest is the largest. */
  seq: number;
}

let nextSeq = 0;

export class VolatileCache {
  private held: HeldWrite[] = [];

  constructor(private readonly inner: Backend) {}

  hold(buf: Uint8Array, offset: number): void {
    this.held.push({ off: offset, data: buf.slice(), seq: nextSeq++ });
  }

  /** The file with the held writes laid over it (zeros where they extend it). */
  read(buf: Uint8Array, offset: number): number {
    const want = Math.max(0, Math.min(offset + buf.length, this.size()) - offset);
    const n = this.inner.read(buf, offset);
    if (n < want) buf.fill(0, n, want);
    for (const p of this.held) {
      const lo = Math.max(offset, p.off);
      const hi = Math.min(offset + want, p.off + p.data.length);
      if (lo < hi) buf.set(p.data.subarray(lo - p.off, hi - p.off), lo - offset);
    }
    return want;
  }

  size(): number {
    let s = this.inner.size();
    for (const p of this.held) s = Math.max(s, p.off + p.data.length);
    return s;
  }

  /** Write every held write to the file, in order. */
  apply(): void {
    this.lose(() => true);
  }

  /** Power loss: the held writes that `survives` picks (asked in order) reach the file; the rest are gone. */
  lose(survives: (w: HeldWrite, index: number, all: readonly HeldWrite[]) => boolean): void {
    const held = this.held;
    this.held = [];
    held.forEach((w, i) => {
      if (survives(w, i, held)) this.inner.write(w.data, w.off);
    });
  }

  /** Sequence number of the newest held write, or -1. */
  newest(): number {
    return this.held.length > 0 ? this.held[this.held.length - 1].seq : -1;
  }
}
