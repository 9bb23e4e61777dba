// Block commit: copy every range allocated above the base (in the top and, with a deeper base,
// every intermediate image) into the base. Only the base is written; the top is left as it is
// until the base is durable, so an interrupted commit changes no snapshot's content and a re-run
// finishes it.
import { Image } from "./image";
import { Job, Gather, allocatedAbove, allocatingLayer, CHUNK } from "./job";
import { fail, E_BAD_ARGUMENT } from "./errors";
import { Qcow2Image } from "./qcow2";
import { lastLookup } from "./mapping";
import { RawImage } from "./raw";
import { readZeroFill, truncateTo, flush } from "./io";
import { getU64 } from "./be";
import { K_NORMAL, K_UNALLOC_PLAIN, L1E_OFFSET_MASK } from "./layout";

/** Clusters sorted at once on the fast path: bounds its memory (8 bytes each) whatever the image size. */
const GROUP_ENTRIES: u64 = 65536;
/** Largest host gap (in clusters) one read spans rather than splitting. */
const MAX_GAP: u64 = 2;

export class CommitJob extends Job {
  private gather: Gather;
  /** Fast path: a single qcow2 top with standard L2 over a raw base or a same-geometry qcow2 base. */
  private fast: bool = false;
  private keys: StaticArray<u64> = new StaticArray<u64>(0);
  private guests: StaticArray<u64> = new StaticArray<u64>(0);
  private tablesPerGroup: i32 = 1;
  /** Fast path: bytes per read (CHUNK, or one cluster when clusters are larger) and its buffer. */
  private ioBytes: u64 = CHUNK;
  private ioBuf: usize = 0;

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
    if (layers == 1 && top instanceof Qcow2Image) {
      const t = changetype<Qcow2Image>(top);
      // An encrypted top's host clusters hold ciphertext keyed to their own offsets: generic path.
      let ok = t.map.entryBytes == 8 && !t.encrypted;
      if (base instanceof Qcow2Image) {
        const b = changetype<Qcow2Image>(base);
        ok = ok && b.map.entryBytes == 8 && b.cs == t.cs;
      } else if (!(base instanceof RawImage)) ok = false;
      if (ok) {
        this.fast = true;
        // A group is at most the image: the keys are zeroed when allocated, and each page of them
        // touched costs a page fault (~11 us on a VM; 512 KB for a 1 GiB image was 96 too many).
        const l2 = t.map.l2Entries;
        const clusters = (this.total + t.cs - 1) >> t.map.clusterBits;
        const tables = clusters > l2 ? (clusters + l2 - 1) / l2 : 1;
        let cap = l2 > GROUP_ENTRIES ? l2 : GROUP_ENTRIES;
        if (tables * l2 < cap) cap = tables * l2;
        this.tablesPerGroup = <i32>(cap / l2);
        this.keys = new StaticArray<u64>(<i32>cap);
        // A read holds at least one cluster: clusters larger than CHUNK (2 MiB) get their own buffer.
        this.ioBytes = t.cs > CHUNK ? t.cs : CHUNK;
        this.ioBuf = t.cs > CHUNK ? heap.alloc(<usize>t.cs) : buf;
        this.guests = new StaticArray<u64>(<i32>(this.ioBytes / t.cs));
      }
    }
  }

  step(budget: u64): bool {
    const end = this.cursor + budget < this.total ? this.cursor + budget : this.total;
    while (this.cursor < end) {
      if (this.fast) this.cursor = this.commitGroup(changetype<Qcow2Image>(this.top), this.cursor, end - this.cursor);
      else this.cursor = this.commitRange(this.cursor, this.total);
    }
    // Nothing stays buffered between steps (the host may write to the chain in between).
    this.gather.flush();
    if (this.cursor >= this.total) {
      this.base.flush();
      this.done = true;
    }
    return this.done;
  }

  /** The generic way: run by run over the chain's allocation, for [from, to); returns the end reached. */
  private commitRange(from: u64, to: u64): u64 {
    let off = from;
    while (off < to) {
      const lim = to - off < CHUNK ? to - off : CHUNK;
      const n = allocatedAbove(this.top, this.layers, off, lim);
      if (allocatingLayer.depth >= 0) {
        if (allocatingLayer.zero) {
          this.gather.flush();
          this.base.zero(off, n, true);
        } else {
          this.gather.add(this.top, off, n);
        }
      }
      off += n;
      if (!this.fast) return off;
    }
    return off;
  }

  /**
   * A group of the top's L2 tables at a time, their data clusters in host order: the top was
   * written in guest-random order, so host order turns thousands of small reads into a few large
   * ones, and the base allocates its new clusters as one contiguous run per read. Anything else the
   * tables hold (zero or compressed clusters, a partial last cluster) goes the generic way.
   */
  private commitGroup(t: Qcow2Image, from: u64, budget: u64): u64 {
    const map = t.map;
    const cb = map.clusterBits;
    const cs = map.cs;
    const span = cb + map.l2Bits;
    const first = from >> span;
    // [from, from + budget) rounded up to whole clusters, at most a group's worth of tables.
    const groupStart = from & ~(cs - 1);
    const want = (budget + cs - 1) & ~(cs - 1);
    const most = <u64>this.tablesPerGroup << span;
    let groupEnd = groupStart + (want < most ? want : most);
    if (groupEnd > this.total) groupEnd = this.total;
    this.gather.flush();
    const keys = this.keys;
    let n = 0;
    for (let l1i = first; (l1i << span) < groupEnd; l1i++) {
      const l2Off = l1i < <u64>t.h.l1Size ? map.l1Entry(l1i) & L1E_OFFSET_MASK : 0;
      if (l2Off == 0) continue;
      const tableStart = l1i << span;
      const idx0 = groupStart > tableStart ? (groupStart - tableStart) >> cb : 0;
      for (let idx: u64 = idx0; idx < map.l2Entries; idx++) {
        const g = tableStart + (idx << cb);
        if (g >= groupEnd) break;
        map.decode(map.l2Table(l2Off), idx, 0);
        const kind = lastLookup.kind;
        if (kind == K_UNALLOC_PLAIN) continue;
        if (kind == K_NORMAL && g + cs <= this.total) {
          unchecked(keys[n++] = ((lastLookup.host >> cb) << 20) | ((g - groupStart) >> cb));
        } else {
          this.commitRange(g, g + cs < groupEnd ? g + cs : groupEnd);
          this.gather.flush();
        }
      }
    }
    if (n > 0) this.copySorted(t, groupStart, n);
    return groupEnd;
  }

  /** Copy the `n` clusters listed in `keys` (host cluster << 20 | guest cluster - groupStart). */
  private copySorted(t: Qcow2Image, groupStart: u64, n: i32): void {
    const cb = t.h.clusterBits;
    const cs = t.cs;
    const keys = this.keys;
    sortU64(keys, n);
    const perChunk = this.ioBytes / cs;
    const buf = this.ioBuf;
    let i = 0;
    while (i < n) {
      // One read spans clusters whose host gaps are small (L2 tables, refcount blocks between them).
      const h0 = unchecked(keys[i]) >> 20;
      let j = i + 1;
      while (j < n) {
        const h = unchecked(keys[j]) >> 20;
        const prev = unchecked(keys[j - 1]) >> 20;
        if (h - prev > MAX_GAP || h - h0 >= perChunk) break;
        j++;
      }
      const last = unchecked(keys[j - 1]) >> 20;
      readZeroFill(t.handle, buf, <i32>((last - h0 + 1) * cs), h0 << cb);
      const count = j - i;
      for (let k = 0; k < count; k++) {
        const key = unchecked(keys[i + k]);
        const at = (key >> 20) - h0;
        // Close the gaps so the clusters lie back to back.
        if (at != <u64>k) memory.copy(buf + <usize>(<u64>k * cs), buf + <usize>(at * cs), <usize>cs);
        unchecked(this.guests[k] = groupStart + ((key & 0xfffff) << cb));
      }
      if (this.base instanceof Qcow2Image) {
        changetype<Qcow2Image>(this.base).writeClusters(this.guests, 0, count, buf);
      } else {
        // A raw base: one write per run of guest-adjacent clusters.
        let k = 0;
        while (k < count) {
          let m = k + 1;
          while (m < count && unchecked(this.guests[m]) == unchecked(this.guests[m - 1]) + cs) m++;
          this.base.write(unchecked(this.guests[k]), buf + <usize>(<u64>k * cs), <u64>(m - k) * cs);
          k = m;
        }
      }
      i = j;
    }
  }

  dispose(): void {
    if (this.ioBuf != 0 && this.ioBuf != this.buf) heap.free(this.ioBuf);
    this.ioBuf = 0;
    super.dispose();
  }
}

/** In-place sort of the first n values (heap sort: no allocation, n log n). */
function sortU64(a: StaticArray<u64>, n: i32): void {
  for (let start = (n >> 1) - 1; start >= 0; start--) siftDown(a, start, n);
  for (let end = n - 1; end > 0; end--) {
    const t = unchecked(a[0]); unchecked(a[0] = a[end]); unchecked(a[end] = t);
    siftDown(a, 0, end);
  }
}

function siftDown(a: StaticArray<u64>, i: i32, n: i32): void {
  for (;;) {
    let c = 2 * i + 1;
    if (c >= n) return;
    if (c + 1 < n && unchecked(a[c + 1]) > unchecked(a[c])) c++;
    if (unchecked(a[c]) <= unchecked(a[i])) return;
    const t = unchecked(a[c]); unchecked(a[c] = a[i]); unchecked(a[i] = t);
    i = c;
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
  const map = q.map;
  const n = <u64>q.h.l1Size;
  for (let i: u64 = 0; i < n; i++) {
    const table = map.l1Entry(i) & L1E_OFFSET_MASK;
    if (table == 0) continue;
    const p = map.l2Table(table);
    for (let k: u64 = 0; k < map.l2Entries; k++) map.releaseEntry(getU64(p + <usize>(k * map.entryBytes)));
    map.freeLater(table >> map.clusterBits);
    map.dropL2(table);
    map.setL1Entry(i, 0);
    map.flushMetadata();
  }
  map.flushMetadata();
  truncateTo(q.handle, map.refcounts().highestUsed() << map.clusterBits);
  flush(q.handle);
}
