// Reading and writing back tables through a TableCache, for tables whose dirty copies may reach
// the disk whenever they are evicted (refcount blocks: an early increment only leaks). L2 tables
// are not among them: their write-back is ordered by Qcow2Image.flushMetadata.
import { TableCache } from "./tablecache";
import { readExact, readZeroFill, writeAt } from "./io";

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
