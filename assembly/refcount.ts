// The refcount table and refcount blocks of one qcow2 image: get, set, find free clusters, grow the
// table. Any refcount_order 0..6. All changes stay in memory (dirty) until the image's
// flushMetadata() writes them in the order that keeps a crash leak-only (see mapping.ts).
import { getU16, getU32, getU64, putU16, putU32, putU64 } from "./be";
import { TableCache, cachedTable, writeBackSlot } from "./tablecache";
import { readExact, readZeroFill, writeAt, fileSize } from "./io";
import { fail, hex, E_CORRUPT, E_BAD_SIZE } from "./errors";
import { REFT_OFFSET_MASK } from "./layout";
import { Header, MAX_REFTABLE_BYTES } from "./header";

const BLOCK_CACHE_BYTES: usize = 2 << 20;
/** Blocks cached for check, which reads them in cluster order (and never allocates). */
const CHECK_BLOCK_SLOTS: i32 = 8;

export class Refcounts {
  readonly handle: i32;
  readonly h: Header;
  readonly cs: u64;
  readonly clusterBits: u32;
  readonly order: u32;
  /** log2 of refcount entries per block. */
  readonly rbBits: u32;
  readonly maxRefcount: u64;
  /** The table, native byte order. */
  rt: usize = 0;
  rtEntries: u64 = 0;
  /** Dirty entry range of the table, [lo, hi). */
  rtDirtyLo: u64 = u64.MAX_VALUE;
  rtDirtyHi: u64 = 0;
  /** The table moved: header must be rewritten, and `oldTable` freed once it is. */
  rtMoved: bool = false;
  oldTableOffset: u64 = 0;
  oldTableClusters: u64 = 0;
  blocks: TableCache;
  /** Host clusters holding refcount blocks (for the metadata overlap check). */
  blockClusters: Set<u64> = new Set<u64>();
  /** Lowest cluster index that might be free. */
  freeHint: u64 = 1;
  /**
   * Ranges [lo, hi) already chosen by allocations in progress whose refcounts are still being set:
   * not free, though not counted yet. A stack: counting one range can need a new block or table.
   */
  private pendLo: StaticArray<u64> = new StaticArray<u64>(32);
  private pendHi: StaticArray<u64> = new StaticArray<u64>(32);
  private npend: i32 = 0;
  /**
   * Where the next compressed cluster's bytes go (qemu's free_byte_offset): inside the cluster the
   * last one ended in, so compressed clusters pack back to back; 0 when none is open.
   */
  freeByte: u64 = 0;
  /** Set by getChecked when the block for the cluster cannot be read (it is not cluster-aligned). */
  readFailed: bool = false;

  /**
   * `forCheck`: the refcounts as check reads them, never failing on what check must report: a
   * table or block past the end of the file reads as zeros (as qemu's pread), an unaligned block
   * is reported by getChecked. Such an instance is read with getChecked and setInBlock only.
   */
  constructor(handle: i32, h: Header, forCheck: bool = false) {
    this.handle = handle;
    this.h = h;
    this.cs = h.clusterSize;
    this.clusterBits = h.clusterBits;
    this.order = h.refcountOrder;
    this.rbBits = h.clusterBits + 3 - h.refcountOrder;
    this.maxRefcount = h.refcountOrder == 6 ? u64.MAX_VALUE : (<u64>1 << (<u64>1 << h.refcountOrder)) - 1;
    const n = (<u64>h.rtClusters << h.clusterBits) / 8;
    // Checked before anything is allocated: an engine error unwinds without freeing, and the
    // table alone may be 8 MiB (every failed write to such an image would leak it again).
    if (!forCheck && h.rtOffset + n * 8 > fileSize(handle)) {
      fail(E_CORRUPT, "refcount table at " + hex(h.rtOffset) + " lies past the end of the file");
    }
    this.blocks = new TableCache(<usize>h.clusterSize, BLOCK_CACHE_BYTES, 2, forCheck ? CHECK_BLOCK_SLOTS : 256);
    this.rtEntries = n;
    this.rt = heap.alloc(<usize>(n > 0 ? n * 8 : 8));
    if (forCheck) readZeroFill(handle, this.rt, <i32>(n * 8), h.rtOffset);
    else readExact(handle, this.rt, <i32>(n * 8), h.rtOffset, "refcount table");
    for (let i: u64 = 0; i < n; i++) {
      const p = this.rt + <usize>(i * 8);
      const v = bswap<u64>(load<u64>(p));
      store<u64>(p, v);
      if (!forCheck && (v & REFT_OFFSET_MASK) != 0) this.blockClusters.add((v & REFT_OFFSET_MASK) >> h.clusterBits);
    }
  }

  tableEntry(i: u64): u64 { return load<u64>(this.rt + <usize>(i * 8)); }

  private setTableEntry(i: u64, v: u64): void {
    const old = this.tableEntry(i) & REFT_OFFSET_MASK;
    if (old != 0) this.blockClusters.delete(old >> this.clusterBits);
    if ((v & REFT_OFFSET_MASK) != 0) this.blockClusters.add((v & REFT_OFFSET_MASK) >> this.clusterBits);
    store<u64>(this.rt + <usize>(i * 8), v);
    if (i < this.rtDirtyLo) this.rtDirtyLo = i;
    if (i + 1 > this.rtDirtyHi) this.rtDirtyHi = i + 1;
  }

  private blockOffset(i: u64, what: u64): u64 {
    const off = this.tableEntry(i) & REFT_OFFSET_MASK;
    if (off != 0 && (off & (this.cs - 1)) != 0) {
      fail(E_CORRUPT, "refcount block offset " + hex(off) + " is not cluster-aligned (for cluster " + what.toString() + ")");
    }
    return off;
  }

  get(cluster: u64): u64 {
    const i = cluster >> this.rbBits;
    if (i >= this.rtEntries) return 0;
    const off = this.blockOffset(i, cluster);
    if (off == 0) return 0;
    return readEntry(cachedTable(this.blocks, this.handle, off, "refcount block"), cluster & ((<u64>1 << this.rbBits) - 1), this.order);
  }

  /** Offset of the readable block for `cluster`: 0 = none, 1 = not cluster-aligned (check). */
  private checkedBlockFor(cluster: u64): u64 {
    const i = cluster >> this.rbBits;
    if (i >= this.rtEntries) return 0;
    const off = this.tableEntry(i) & REFT_OFFSET_MASK;
    if (off == 0) return 0;
    if ((off & (this.cs - 1)) != 0) return 1;
    return off;
  }

  /**
   * The refcount as check reads it, without failing: 0 where no block covers the cluster, 0 with
   * `readFailed` set where its block is not cluster-aligned (check counts an error there).
   */
  getChecked(cluster: u64): u64 {
    this.readFailed = false;
    const off = this.checkedBlockFor(cluster);
    if (off == 0) return 0;
    if (off == 1) { this.readFailed = true; return 0; }
    return readEntry(cachedTable(this.blocks, this.handle, off, ""), cluster & ((<u64>1 << this.rbBits) - 1), this.order);
  }

  /** Check's repair: set a refcount in the block that holds it; false when there is no usable block. */
  setInBlock(cluster: u64, value: u64): bool {
    const off = this.checkedBlockFor(cluster);
    if (off <= 1) return false;
    const p = cachedTable(this.blocks, this.handle, off, "");
    writeEntry(p, cluster & ((<u64>1 << this.rbBits) - 1), this.order, value);
    this.blocks.markDirty(this.blocks.find(off));
    return true;
  }

  set(cluster: u64, value: u64): void {
    if (value > this.maxRefcount) {
      fail(E_CORRUPT, "refcount of cluster " + cluster.toString() + " would exceed the maximum " + this.maxRefcount.toString());
    }
    const i = cluster >> this.rbBits;
    if (value == 0 && (i >= this.rtEntries || this.tableEntry(i) == 0)) return;
    if (i >= this.rtEntries) this.growTable(i + 1);
    let off = this.blockOffset(i, cluster);
    if (off == 0) off = this.createBlock(i, cluster);
    const p = cachedTable(this.blocks, this.handle, off, "refcount block");
    writeEntry(p, cluster & ((<u64>1 << this.rbBits) - 1), this.order, value);
    this.blocks.markDirty(this.blocks.find(off));
    if (value == 0 && cluster < this.freeHint) this.freeHint = cluster;
    // A freed cluster may be reallocated whole: compressed bytes must not go on packing into it.
    if (value == 0 && this.freeByte != 0 && cluster == this.freeByte >> this.clusterBits) this.freeByte = 0;
  }

  /**
   * A new refcount block for region `i`. With no block, every cluster of the region has refcount
   * 0, so the block normally goes into the region's first cluster and describes itself. It must
   * avoid `busy` (the cluster being counted) and the reserved run being allocated right now.
   */
  private createBlock(i: u64, busy: u64): u64 {
    let cand = i << this.rbBits;
    if (cand == 0) cand = 1;
    this.pushPending(busy, busy + 1);
    while (this.isPending(cand) || this.get(cand) != 0) cand++;
    this.pushPending(cand, cand + 1);
    const off = cand << this.clusterBits;
    const c = this.blocks;
    const slot = c.victim();
    writeBackSlot(this.blocks, this.handle, slot);
    c.drop(c.key(slot));
    const p = c.assign(slot, off);
    memory.fill(p, 0, <usize>this.cs);
    c.markDirty(slot);
    this.setTableEntry(i, off);
    // Usually lands in the new block itself; if the reservation pushed it past the region, the
    // block's own refcount goes wherever that cluster is counted.
    this.set(cand, 1);
    this.npend -= 2;
    return off;
  }

  private pushPending(lo: u64, hi: u64): void {
    if (this.npend >= 32) fail(E_CORRUPT, "refcount structures nest too deeply while allocating cluster " + lo.toString());
    unchecked(this.pendLo[this.npend] = lo);
    unchecked(this.pendHi[this.npend] = hi);
    this.npend++;
  }

  /** End of the pending range holding `c`, or 0 when `c` is not pending. */
  private pendingEnd(c: u64): u64 {
    for (let k = 0; k < this.npend; k++) {
      if (c >= unchecked(this.pendLo[k]) && c < unchecked(this.pendHi[k])) return unchecked(this.pendHi[k]);
    }
    return 0;
  }

  private isPending(c: u64): bool {
    return this.pendingEnd(c) != 0;
  }

  /**
   * Move the table to a larger place covering at least `minEntries` regions. The old table stays
   * referenced (and its clusters allocated) until the new header is durable; then it is freed.
   */
  private growTable(minEntries: u64): void {
    const perCluster = this.cs / 8;
    let entries = minEntries > this.rtEntries * 3 / 2 ? minEntries : this.rtEntries * 3 / 2;
    for (;;) {
      const clusters = (entries + perCluster - 1) / perCluster;
      if ((clusters << this.clusterBits) > MAX_REFTABLE_BYTES) {
        fail(E_BAD_SIZE, "image needs a refcount table larger than 8 MiB (" + clusters.toString() + " clusters)");
      }
      const start = this.findFreeRun(clusters);
      // The new table's own clusters (and the blocks created for them) must fall inside it.
      const need = ((start + clusters * 2 + 4) >> this.rbBits) + 2;
      if (need > clusters * perCluster) { entries = need; continue; }
      const nt = heap.alloc(<usize>(clusters * perCluster * 8));
      memory.fill(nt, 0, <usize>(clusters * perCluster * 8));
      memory.copy(nt, this.rt, <usize>(this.rtEntries * 8));
      if (this.rtMoved) {
        // A table created earlier in this batch, never referenced: free it right away.
        this.releaseUnreferencedTable();
      } else {
        this.oldTableOffset = this.h.rtOffset;
        this.oldTableClusters = this.h.rtClusters;
      }
      heap.free(this.rt);
      this.rt = nt;
      this.rtEntries = clusters * perCluster;
      this.rtDirtyLo = 0;
      this.rtDirtyHi = this.rtEntries;
      this.rtMoved = true;
      this.h.rtOffset = start << this.clusterBits;
      this.h.rtClusters = <u32>clusters;
      this.reserveAndCount(start, clusters);
      return;
    }
  }

  private releaseUnreferencedTable(): void {
    const first = this.h.rtOffset >> this.clusterBits;
    for (let c: u64 = 0; c < <u64>this.h.rtClusters; c++) this.set(first + c, 0);
  }

  private pendingIn(lo: u64, hi: u64): bool {
    for (let k = 0; k < this.npend; k++) {
      if (unchecked(this.pendLo[k]) < hi && unchecked(this.pendHi[k]) > lo) return true;
    }
    return false;
  }

  private reserveAndCount(start: u64, n: u64): void {
    this.pushPending(start, start + n);
    for (let c: u64 = 0; c < n; c++) this.set(start + c, 1);
    this.npend--;
  }

  /** First run of `n` clusters with refcount 0 at or after the free hint. Does not allocate. */
  findFreeRun(n: u64): u64 {
    let start = this.freeHint;
    let run: u64 = 0;
    let c = start;
    const regionMask = (<u64>1 << this.rbBits) - 1;
    for (;;) {
      const pend = this.pendingEnd(c);
      if (pend != 0) {
        run = 0;
        c = pend;
        continue;
      }
      const i = c >> this.rbBits;
      // Whole regions without a block (or beyond the table) are free, unless the reservation is in them.
      const regionEnd = (c | regionMask) + 1;
      if ((c & regionMask) == 0 && (i >= this.rtEntries || this.tableEntry(i) == 0) && !this.pendingIn(c, regionEnd)) {
        if (run == 0) start = c;
        run += regionMask + 1;
        c += regionMask + 1;
        if (run >= n) return start;
        continue;
      }
      if (this.get(c) == 0) {
        if (run == 0) start = c;
        run++;
        if (run >= n) return start;
      } else {
        run = 0;
      }
      c++;
    }
    return 0;
  }

  /** Allocate `n` contiguous clusters (refcount 1 each); returns the first cluster index. */
  allocate(n: u64): u64 {
    const start = this.findFreeRun(n);
    this.reserveAndCount(start, n);
    if (n == 1 || start == this.freeHint) this.freeHint = start + n;
    return start;
  }

  /**
   * `n` bytes (1 ≤ n < one cluster) for a compressed cluster, as qemu's qcow2_alloc_bytes places
   * them: right after the previous compressed cluster, in the cluster it ended in while that one's
   * refcount can still grow, spilling into the next cluster when that is the one allocated next,
   * else from the start of a fresh cluster. Every cluster the bytes touch gains one reference
   * (qemu-img check counts one per compressed descriptor that reaches into a cluster).
   */
  allocateBytes(n: u64): u64 {
    const cs = this.cs;
    let off = this.freeByte;
    if (off != 0) {
      const r = this.get(off >> this.clusterBits);
      if (r == 0 || r >= this.maxRefcount) off = 0;
    }
    let fresh: u64 = u64.MAX_VALUE;
    if (off == 0 || cs - (off & (cs - 1)) < n) {
      fresh = this.allocate(1);
      const next = fresh << this.clusterBits;
      if (off == 0 || ((off + cs - 1) & ~(cs - 1)) != next) off = next;
    }
    const last = (off + n - 1) >> this.clusterBits;
    for (let c = off >> this.clusterBits; c <= last; c++) {
      if (c != fresh) this.set(c, this.get(c) + 1);
    }
    const end = off + n;
    this.freeByte = (end & (cs - 1)) == 0 ? 0 : end;
    return off;
  }

  /**
   * Write dirty blocks, then (after a flush, by the caller) the table. Split in two so the caller
   * can put a flush between them: a table entry must never reach the disk before its block.
   */
  writeBlocks(): void {
    for (let s = 0; s < this.blocks.inUse; s++) writeBackSlot(this.blocks, this.handle, s);
  }

  hasDirtyBlocks(): bool {
    for (let s = 0; s < this.blocks.inUse; s++) if (this.blocks.isDirty(s)) return true;
    return false;
  }

  writeTable(): void {
    if (this.rtDirtyHi <= this.rtDirtyLo) return;
    // Whole 512-byte sectors of the table, converted to big-endian in a scratch buffer.
    const lo = this.rtDirtyLo & ~(<u64>63);
    let hi = (this.rtDirtyHi + 63) & ~(<u64>63);
    if (hi > this.rtEntries) hi = this.rtEntries;
    const n = <usize>(hi - lo);
    const buf = heap.alloc(n * 8);
    for (let k: usize = 0; k < n; k++) putU64(buf + k * 8, this.tableEntry(lo + <u64>k));
    writeAt(this.handle, buf, <i32>(n * 8), this.h.rtOffset + lo * 8);
    heap.free(buf);
    this.rtDirtyLo = u64.MAX_VALUE;
    this.rtDirtyHi = 0;
  }

  /** After the header naming the new table is durable: free the old table's clusters. */
  finishMove(): void {
    if (!this.rtMoved) return;
    this.rtMoved = false;
    const first = this.oldTableOffset >> this.clusterBits;
    for (let c: u64 = 0; c < this.oldTableClusters; c++) this.set(first + c, 0);
    this.oldTableClusters = 0;
  }

  /** One past the last cluster with a non-zero refcount, scanning down from the file's end. */
  highestUsed(): u64 {
    let c = (fileSize(this.handle) + this.cs - 1) >> this.clusterBits;
    while (c > 0 && this.get(c - 1) == 0) c--;
    return c;
  }

  dispose(): void {
    heap.free(this.rt);
    this.blocks.dispose();
  }
}

export function readEntry(block: usize, idx: u64, order: u32): u64 {
  switch (order) {
    case 0: return (<u64>load<u8>(block + <usize>(idx >> 3)) >> (idx & 7)) & 1;
    case 1: return (<u64>load<u8>(block + <usize>(idx >> 2)) >> ((idx & 3) * 2)) & 3;
    case 2: return (<u64>load<u8>(block + <usize>(idx >> 1)) >> ((idx & 1) * 4)) & 15;
    case 3: return <u64>load<u8>(block + <usize>idx);
    case 4: return <u64>getU16(block + <usize>(idx * 2));
    case 5: return <u64>getU32(block + <usize>(idx * 4));
    default: return getU64(block + <usize>(idx * 8));
  }
}

export function writeEntry(block: usize, idx: u64, order: u32, v: u64): void {
  if (order < 3) {
    const bits: u32 = 1 << order;
    const perByte: u64 = 8 >> order;
    const p = block + <usize>(idx / perByte);
    const shift = <u32>((idx % perByte) * <u64>bits);
    const mask = <u8>((((<u32>1) << bits) - 1) << shift);
    store<u8>(p, (load<u8>(p) & ~mask) | (<u8>(<u32>v << shift) & mask));
    return;
  }
  switch (order) {
    case 3: store<u8>(block + <usize>idx, <u8>v); break;
    case 4: putU16(block + <usize>(idx * 2), <u16>v); break;
    case 5: putU32(block + <usize>(idx * 4), <u32>v); break;
    default: putU64(block + <usize>(idx * 8), v);
  }
}
