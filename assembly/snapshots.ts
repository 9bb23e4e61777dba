// The internal snapshot table, read on open as qemu's qcow2_read_snapshots does: an image whose
// table qemu refuses to read is refused here too. We never use the snapshots themselves (writing
// to an image that has any is refused), only the verdict and the table's size.
import { getU16, getU32 } from "./be";
import { Header, INT_MAX } from "./header";
import { readZeroFill, refusedRead } from "./io";
import { fail, hex, E_BAD_SNAPSHOT_TABLE } from "./errors";

/** qemu's limits (block/qcow2.h): extra data per entry, and the whole table. */
export const MAX_SNAPSHOT_EXTRA_DATA: u64 = 1024;
export const MAX_SNAPSHOT_TABLE_BYTES: u64 = 1024 * 65536;
const ENTRY_HEADER: u64 = 40;

/**
 * Walk the `h.nbSnapshots` entries from `h.snapshotsOffset`; fails with ECOW_BAD_SNAPSHOT_TABLE
 * where qemu's open fails. Returns the table's size in bytes.
 */
export function readSnapshotTable(handle: i32, h: Header): u64 {
  const n = h.nbSnapshots;
  if (n == 0) return 0;
  const hb = heap.alloc(<usize>ENTRY_HEADER);
  let offset = h.snapshotsOffset;
  let tableLength: u64 = 0;
  for (let i: u32 = 0; i < n; i++) {
    tableLength = (tableLength + 7) & ~(<u64>7);
    offset = (offset + 7) & ~(<u64>7);
    if (refusedRead(offset, ENTRY_HEADER)) {
      heap.free(hb);
      fail(E_BAD_SNAPSHOT_TABLE, "failed to read snapshot table entry " + i.toString() + " at " + hex(offset));
    }
    readZeroFill(handle, hb, <i32>ENTRY_HEADER, offset);
    offset += ENTRY_HEADER;
    const idSize = <u64>getU16(hb + 12);
    const nameSize = <u64>getU16(hb + 14);
    const extra = <u64>getU32(hb + 36);
    if (extra > MAX_SNAPSHOT_EXTRA_DATA) {
      heap.free(hb);
      fail(E_BAD_SNAPSHOT_TABLE, "too much extra metadata in snapshot table entry " + i.toString() + " (" + extra.toString() + " bytes, qemu's maximum is 1024)");
    }
    // qemu reads the extra data, the id and the name: each read must be one the block layer serves.
    const rest = extra + idSize + nameSize;
    if (refusedRead(offset, rest)) {
      heap.free(hb);
      fail(E_BAD_SNAPSHOT_TABLE, "failed to read snapshot table entry " + i.toString() + " at " + hex(offset));
    }
    offset += rest;
    tableLength += ENTRY_HEADER + rest;
    if (tableLength > MAX_SNAPSHOT_TABLE_BYTES || offset - h.snapshotsOffset > INT_MAX) {
      heap.free(hb);
      fail(E_BAD_SNAPSHOT_TABLE, "snapshot table is too big (" + n.toString() + " entries, " + tableLength.toString() + " bytes by entry " + i.toString() + ")");
    }
  }
  heap.free(hb);
  return offset - h.snapshotsOffset;
}
