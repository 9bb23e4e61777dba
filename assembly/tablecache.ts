// A bounded number of table-sized slots (L2 tables, refcount blocks), least-recently-used eviction.
// Memory does not grow with the image: the slot count is fixed when the cache is made. The cache
// itself does no I/O; the image decides when a dirty table may be written (durability order).
// cachedTable and writeBackSlot below read through it and write back from it, for tables whose
// dirty copies may reach the disk whenever they are evicted (refcount blocks: an early increment
// only leaks). L2 tables are not among them: their write-back is ordered by flushMetadata.
//
// Slot memory is taken lazily, when a slot is first needed, and all caches of the engine share
// one budget (ENGINE_CACHE_BUDGET): past it, a cache that already has its minimum number of
// slots reuses its own least recently used one instead of growing. So a backing chain of
// hundreds of images costs each layer only the tables it actually touched (a read through the
// chain touches one table per layer), not a full cache per layer.
import { readExact, readZeroFill, writeAt } from "./io";

/** Table memory of all caches together beyond which no cache grows past its minimum. */
export const ENGINE_CACHE_BUDGET: usize = 32 << 20;
/** Table memory held by all live caches (read by the host for memory reports). */
let cacheBytesInUse: usize = 0;

export function engineCacheBytes(): usize {
  return cacheBytesInUse;
}

export class TableCache {
  readonly slots: i32;
  readonly tableSize: usize;
  readonly minSlots: i32;
  // Per-slot state, for the slots that have memory: the arrays grow with `allocated` (doubling,
  // up to `slots`), so an image that touches two tables keeps two entries, not `slots` of them
  // (a 1000-deep chain of 512-byte-cluster images held 21 KB of them per image, all cleared
  // when it was opened and again when it was closed).
  /** Memory of each slot. */
  private mem: StaticArray<usize>;
  /** Slots [0, allocated) have memory. */
  private allocated: i32 = 0;
  private keys: StaticArray<u64>;
  private stamps: StaticArray<u64>;
  private dirtyFlags: StaticArray<bool>;
  private clock: u64 = 0;
  private lastSlot: i32 = -1;

  constructor(tableSize: usize, budgetBytes: usize, minSlots: i32, maxSlots: i32) {
    let n = <i32>(budgetBytes / tableSize);
    if (n < minSlots) n = minSlots;
    if (n > maxSlots) n = maxSlots;
    this.slots = n;
    const min = minSlots < n ? minSlots : n;
    this.minSlots = min;
    this.tableSize = tableSize;
    // Key 0 never names a table (cluster 0 is the header), so it marks a free slot; new arrays
    // are zeroed.
    const c = min > 0 ? min : 1;
    this.mem = new StaticArray<usize>(c);
    this.keys = new StaticArray<u64>(c);
    this.stamps = new StaticArray<u64>(c);
    this.dirtyFlags = new StaticArray<bool>(c);
  }

  /** Slots in use so far (with memory): every slot a caller can hold is below this. */
  get inUse(): i32 { return this.allocated; }

  /** Room in the per-slot arrays for slot `n` (`n` < slots). */
  private reserve(n: i32): void {
    const cap = this.keys.length;
    if (n < cap) return;
    let c = cap * 2;
    if (c > this.slots) c = this.slots;
    const mem = new StaticArray<usize>(c);
    const keys = new StaticArray<u64>(c);
    const stamps = new StaticArray<u64>(c);
    const dirty = new StaticArray<bool>(c);
    memory.copy(changetype<usize>(mem), changetype<usize>(this.mem), <usize>cap * sizeof<usize>());
    memory.copy(changetype<usize>(keys), changetype<usize>(this.keys), <usize>cap * 8);
    memory.copy(changetype<usize>(stamps), changetype<usize>(this.stamps), <usize>cap * 8);
    memory.copy(changetype<usize>(dirty), changetype<usize>(this.dirtyFlags), <usize>cap);
    this.mem = mem;
    this.keys = keys;
    this.stamps = stamps;
    this.dirtyFlags = dirty;
  }

  /** Slot holding the table at `key`, or -1. */
  find(key: u64): i32 {
    const last = this.lastSlot;
    if (last >= 0 && unchecked(this.keys[last]) == key) {
      unchecked(this.stamps[last] = ++this.clock);
      return last;
    }
    for (let i = 0; i < this.allocated; i++) {
      if (unchecked(this.keys[i]) == key) {
        unchecked(this.stamps[i] = ++this.clock);
        this.lastSlot = i;
        return i;
      }
    }
    return -1;
  }

  /**
   * The slot to reuse next: a free one with memory, else a new one while the cache and the
   * engine-wide budget allow, else the least recently used. The caller writes it back if dirty.
   */
  victim(): i32 {
    for (let i = 0; i < this.allocated; i++) if (unchecked(this.keys[i]) == 0) return i;
    const n = this.allocated;
    if (n < this.slots && (n < this.minSlots || cacheBytesInUse + this.tableSize <= ENGINE_CACHE_BUDGET)) {
      this.reserve(n);
      unchecked(this.mem[n] = heap.alloc(this.tableSize));
      cacheBytesInUse += this.tableSize;
      this.allocated = n + 1;
      return n;
    }
    let best = 0;
    let bestStamp: u64 = u64.MAX_VALUE;
    for (let i = 0; i < n; i++) {
      const s = unchecked(this.stamps[i]);
      if (s < bestStamp) { bestStamp = s; best = i; }
    }
    return best;
  }

  /** Claim slot `i` (from victim()) for `key`; its memory is left for the caller to fill. */
  assign(i: i32, key: u64): usize {
    unchecked(this.keys[i] = key);
    unchecked(this.stamps[i] = ++this.clock);
    unchecked(this.dirtyFlags[i] = false);
    this.lastSlot = i;
    return this.ptr(i);
  }

  ptr(i: i32): usize { return unchecked(this.mem[i]); }
  key(i: i32): u64 { return unchecked(this.keys[i]); }
  isDirty(i: i32): bool { return unchecked(this.dirtyFlags[i]); }
  markDirty(i: i32): void { unchecked(this.dirtyFlags[i] = true); }
  markClean(i: i32): void { unchecked(this.dirtyFlags[i] = false); }

  /** Forget a table (e.g. its cluster was freed). */
  drop(key: u64): void {
    const i = this.find(key);
    if (i >= 0) {
      unchecked(this.keys[i] = 0);
      unchecked(this.dirtyFlags[i] = false);
      if (this.lastSlot == i) this.lastSlot = -1;
    }
  }

  dispose(): void {
    for (let i = 0; i < this.allocated; i++) {
      heap.free(unchecked(this.mem[i]));
      unchecked(this.mem[i] = 0);
    }
    cacheBytesInUse -= <usize>this.allocated * this.tableSize;
    for (let i = 0; i < this.allocated; i++) {
      unchecked(this.keys[i] = 0);
      unchecked(this.dirtyFlags[i] = false);
    }
    this.allocated = 0;
    this.lastSlot = -1;
  }
}

/** Write slot `slot` back if it is dirty. */
export function writeBackSlot(c: TableCache, handle: i32, slot: i32): void {
  if (c.isDirty(slot)) {
    writeAt(handle, c.ptr(slot), <i32>c.tableSize, c.key(slot));
    c.markClean(slot);
  }
}

/**
 * The table at host offset `off`, read into the cache on a miss (evicting, and writing back, the
 * least recently used slot). `what` names it in the error when the read comes up short; an empty
 * `what` reads a short table as zeros instead (check must report, not fail).
 */
export function cachedTable(c: TableCache, handle: i32, off: u64, what: string): usize {
  let slot = c.find(off);
  if (slot >= 0) return c.ptr(slot);
  slot = c.victim();
  writeBackSlot(c, handle, slot);
  c.drop(c.key(slot));
  const p = c.ptr(slot);
  if (what.length > 0) readExact(handle, p, <i32>c.tableSize, off, what);
  else readZeroFill(handle, p, <i32>c.tableSize, off);
  c.assign(slot, off);
  return p;
}
