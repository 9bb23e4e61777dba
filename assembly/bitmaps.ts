// Persistent dirty bitmaps, checked on open as qemu's qcow2_load_dirty_bitmaps checks them: when
// the bitmaps autoclear bit says they are valid, qemu reads the bitmap directory and every bitmap
// not marked in use, and refuses to open the image if any of it breaks the format's rules. We
// never use the bitmaps (the first write clears the bit, as a program without bitmap support
// must), so only the verdict is kept. Everything is read in small pieces: nothing is held.
import { getU16, getU32, getU64, getU8 } from "./be";
import { Header } from "./header";
import { readZeroFill, refusedRead } from "./io";
import { fail, hex, E_BAD_BITMAPS } from "./errors";

const ENTRY_HEADER: u64 = 24;
// qemu's rules for a bitmap directory entry and its table (block/qcow2-bitmap.c); check.ts applies
// them too.
export const BITMAP_MAX_TABLE_SIZE: u64 = 0x8000000;
const MAX_PHYS_SIZE: u64 = 0x20000000;
export const BITMAP_MAX_GRANULARITY_BITS: u32 = 31;
export const BITMAP_MIN_GRANULARITY_BITS: u32 = 9;
export const BITMAP_MAX_NAME_SIZE: u32 = 1023;
export const BITMAP_RESERVED_FLAGS: u32 = 0xfffffffc;
const FLAG_IN_USE: u32 = 1;
export const BITMAP_TYPE_DIRTY_TRACKING: u8 = 1;
export const BITMAP_TABLE_RESERVED_MASK: u64 = 0xff000000000001fe;
export const BITMAP_TABLE_OFFSET_MASK: u64 = 0x00fffffffffffe00;
export const BITMAP_TABLE_ALL_ONES: u64 = 1;
/** Bitmap table entries read at a time. */
const CHUNK: u64 = 512;

class Bitmap {
  constructor(public name: string, public tableOffset: u64, public tableSize: u32, public flags: u32, public granularityBits: u32) {}
}

/** The name bytes up to the first NUL, one char per byte (names are compared as bytes). */
function nameAt(handle: i32, off: u64, len: u32): string {
  if (len == 0) return "";
  const p = heap.alloc(<usize>len);
  readZeroFill(handle, p, <i32>len, off);
  let s = "";
  for (let i: u32 = 0; i < len; i++) {
    const c = load<u8>(p + <usize>i);
    if (c == 0) break;
    s += String.fromCharCode(c);
  }
  heap.free(p);
  return s;
}

/** Fails with ECOW_BAD_BITMAPS where qemu's open fails on the bitmaps; nothing when there are none. */
export function checkBitmaps(handle: i32, h: Header, virtualSize: u64): void {
  if (h.nbBitmaps == 0) return;
  const cs = h.clusterSize;
  const dirOff = h.bitmapDirOffset;
  const dirSize = h.bitmapDirSize;
  if (dirSize == 0) fail(E_BAD_BITMAPS, "bitmap directory size is zero");
  if (refusedRead(dirOff, dirSize)) fail(E_BAD_BITMAPS, "failed to read the bitmap directory at " + hex(dirOff));
  const end = dirOff + dirSize;
  const eh = heap.alloc(<usize>ENTRY_HEADER);
  const bitmaps = new Array<Bitmap>();
  let e = dirOff;
  let count: u32 = 0;
  while (e < end) {
    if (e + ENTRY_HEADER > end) { heap.free(eh); fail(E_BAD_BITMAPS, "broken bitmap directory (entry at " + hex(e) + " overruns it)"); }
    count++;
    if (count > h.nbBitmaps) { heap.free(eh); fail(E_BAD_BITMAPS, "more bitmaps in the directory than the " + h.nbBitmaps.toString() + " the extension names"); }
    readZeroFill(handle, eh, <i32>ENTRY_HEADER, e);
    const tableOffset = getU64(eh);
    const tableSize = getU32(eh + 8);
    const flags = getU32(eh + 12);
    const type = getU8(eh + 16);
    const gran = <u32>getU8(eh + 17);
    const nameSize = <u32>getU16(eh + 18);
    const extraSize = getU32(eh + 20);
    const size = (ENTRY_HEADER + <u64>nameSize + <u64>extraSize + 7) & ~(<u64>7);
    if (e + size > end) { heap.free(eh); fail(E_BAD_BITMAPS, "broken bitmap directory (entry at " + hex(e) + " overruns it)"); }
    if (extraSize != 0) { heap.free(eh); fail(E_BAD_BITMAPS, "bitmap extra data is not supported (" + extraSize.toString() + " bytes in the entry at " + hex(e) + ")"); }
    const bad = tableSize == 0 || tableOffset == 0 || (tableOffset & (cs - 1)) != 0 || <u64>tableSize > BITMAP_MAX_TABLE_SIZE ||
      gran > BITMAP_MAX_GRANULARITY_BITS || gran < BITMAP_MIN_GRANULARITY_BITS || (flags & BITMAP_RESERVED_FLAGS) != 0 ||
      nameSize > BITMAP_MAX_NAME_SIZE || type != BITMAP_TYPE_DIRTY_TRACKING;
    const phys = <u64>tableSize * cs;
    if (bad || phys > MAX_PHYS_SIZE || ((flags & FLAG_IN_USE) == 0 && virtualSize > ((phys * 8) << gran))) {
      heap.free(eh);
      fail(E_BAD_BITMAPS, "bitmap at " + hex(e) + " breaks the constraints (table " + hex(tableOffset) + " of " + tableSize.toString() + " entries, flags " + hex(flags) + ", type " + type.toString() + ", granularity bits " + gran.toString() + ")");
    }
    bitmaps.push(new Bitmap(nameAt(handle, e + ENTRY_HEADER, nameSize), tableOffset, tableSize, flags, gran));
    e += size;
  }
  heap.free(eh);
  if (count != h.nbBitmaps) fail(E_BAD_BITMAPS, "fewer bitmaps in the directory (" + count.toString() + ") than the " + h.nbBitmaps.toString() + " the extension names");
  if (e != end) fail(E_BAD_BITMAPS, "broken bitmap directory (entries end at " + hex(e) + ", the directory at " + hex(end) + ")");
  const names = new Set<string>();
  for (let i = 0; i < bitmaps.length; i++) {
    const b = bitmaps[i];
    if (names.has(b.name)) fail(E_BAD_BITMAPS, "bitmap name \"" + b.name + "\" appears twice");
    names.add(b.name);
    // A bitmap in use was not saved cleanly; qemu does not read its table.
    if ((b.flags & FLAG_IN_USE) == 0) checkTable(handle, b, cs, virtualSize);
  }
}

/** qemu's bitmap_table_load and load_bitmap_data checks: entry flags, alignment, table size. */
function checkTable(handle: i32, b: Bitmap, cs: u64, virtualSize: u64): void {
  const n = <u64>b.tableSize;
  if (refusedRead(b.tableOffset, n * 8)) fail(E_BAD_BITMAPS, "could not read the table of bitmap \"" + b.name + "\"");
  const buf = heap.alloc(<usize>(CHUNK * 8));
  for (let i: u64 = 0; i < n; i += CHUNK) {
    const m = n - i < CHUNK ? n - i : CHUNK;
    readZeroFill(handle, buf, <i32>(m * 8), b.tableOffset + i * 8);
    for (let k: u64 = 0; k < m; k++) {
      const entry = getU64(buf + <usize>(k * 8));
      const off = entry & BITMAP_TABLE_OFFSET_MASK;
      const bad = (entry & BITMAP_TABLE_RESERVED_MASK) != 0 || (off != 0 && ((entry & BITMAP_TABLE_ALL_ONES) != 0 || (off & (cs - 1)) != 0)) ||
        (off != 0 && refusedRead(off, cs));
      if (bad) {
        heap.free(buf);
        fail(E_BAD_BITMAPS, "bitmap \"" + b.name + "\": invalid table entry " + hex(entry));
      }
    }
  }
  heap.free(buf);
  // The table must have exactly one entry per cluster of the serialized bitmap (64-bit words).
  let words: u64 = 0;
  if (virtualSize > 0) words = (((virtualSize - 1) >> b.granularityBits) >> 6) + 1;
  const want = (words * 8 + cs - 1) / cs;
  if (want != n) fail(E_BAD_BITMAPS, "bitmap \"" + b.name + "\" has a table of " + n.toString() + " entries, " + want.toString() + " expected for the virtual size");
}
