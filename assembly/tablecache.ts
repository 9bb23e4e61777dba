// A fixed number of table-sized slots (L2 tables, refcount blocks), least-recently-used eviction.
// Memory does not grow with the image: the slot count is fixed when the cache is made. The cache
// does no I/O; the image decides when a dirty table may be written (durability order).

export class TableCache {
  readonly slots: i32;
  readonly tableSize: usize;
  private mem: usize;
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
    this.tableSize = tableSize;
    this.mem = heap.alloc(<usize>n * tableSize);
    this.keys = new StaticArray<u64>(n);
    this.stamps = new StaticArray<u64>(n);
    this.dirtyFlags = new StaticArray<bool>(n);
    // Key 0 never names a table (cluster 0 is the header), so it marks a free slot.
    for (let i = 0; i < n; i++) unchecked(this.keys[i] = 0);
  }

  /** Slot holding the table at `key`, or -1. */
  find(key: u64): i32 {
    const last = this.lastSlot;
    if (last >= 0 && unchecked(this.keys[last]) == key) {
      unchecked(this.stamps[last] = ++this.clock);
      return last;
    }
    for (let i = 0; i < this.slots; i++) {
      if (unchecked(this.keys[i]) == key) {
        unchecked(this.stamps[i] = ++this.clock);
        this.lastSlot = i;
        return i;
      }
    }
    return -1;
  }

  /** The slot to reuse next: a free one, else the least recently used. The caller writes it back if dirty. */
  victim(): i32 {
    let best = 0;
    let bestStamp: u64 = u64.MAX_VALUE;
    for (let i = 0; i < this.slots; i++) {
      if (unchecked(this.keys[i]) == 0) return i;
      const s = unchecked(this.stamps[i]);
      if (s < bestStamp) { bestStamp = s; best = i; }
    }
    return best;
  }

  /** Claim slot `i` for `key`; its memory is left for the caller to fill. */
  assign(i: i32, key: u64): usize {
    unchecked(this.keys[i] = key);
    unchecked(this.stamps[i] = ++this.clock);
    unchecked(this.dirtyFlags[i] = false);
    this.lastSlot = i;
    return this.ptr(i);
  }

  ptr(i: i32): usize { return this.mem + <usize>i * this.tableSize; }
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
    heap.free(this.mem);
    this.mem = 0;
  }
}
