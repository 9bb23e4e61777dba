// `check` and `check -r leaks|all` with the semantics of qemu 7.2's qcow2_co_check_locked /
// qcow2_check_refcounts (block/qcow2-refcount.c, block/qcow2-snapshot.c, block/qcow2-bitmap.c):
// every host cluster the image references is counted, the counts are compared with the on-disk
// refcounts, and each mismatch or malformed entry is classified the way qemu classifies it.
//
//  * corruption: refcount < references ("ERROR cluster N refcount=R reference=K"), COPIED flag not
//    set exactly when the refcount is 1 (or set on a compressed entry), reserved bits in L1/L2
//    entries or refcount table entries, unaligned L2 tables / data clusters / refcount blocks,
//    references reaching one cluster or more past the end of the file, refcount blocks outside
//    the image or not counted exactly once, invalid subcluster bitmaps, bitmap table entries;
//  * leak: refcount > references;
//  * check error: a refcount that cannot be read (unaligned refcount block), or a repair that failed.
//
// Memory bound (our choice; qemu keeps one refcount array for the whole file): references are
// counted per *window* of host clusters, one u16 per cluster (a count that reaches 0xffff moves to
// a side map, so counts stay exact up to the refcount maximum). A window holds at most
// `windowMax` clusters (8 Mi clusters = 16 MiB by default), rounded to whole refcount blocks, so
// never more than max(16 MiB, 2 bytes x one refcount block's entries) <= 32 MiB; that one buffer
// is kept between checks (so that repeated checks do not fragment the heap). A file with more
// clusters than one window is checked window by window: every window walks all metadata again
// (cost: one metadata walk per window, i.e. per 512 GiB of file at 64 KiB clusters). Everything
// else is bounded too: L1 tables are streamed in 64 KiB chunks, one L2 table is held at a time,
// the new refcount table of a rebuild is at most 8 MiB (qemu's limit), and the used-region map is
// one bit per refcount block (at most 4 MiB for the INT_MAX clusters qemu accepts).
//
// Repairs (`fix` = FIX_LEAKS for -r leaks, FIX_LEAKS|FIX_ERRORS for -r all), in qemu's order:
// leaked/too-low refcounts are set to the reference count; a refcount of 0 for a used cluster (or
// a broken refcount table/block) needs the refcount structure rebuilt (-r all only; -r leaks then
// fails with EIO like qemu); COPIED flags are fixed; finally the dirty and corrupt bits are
// cleared when nothing is left to fix. A rebuild writes the new refcount blocks and table at the
// end of the file (qemu puts them into the first free clusters, which is the end of the file
// unless the image has holes), flushes, then points the header at them and flushes again; the old
// structures become leaks that the following leak pass frees (nothing is freed before the header
// names the new table). A repair that would write an L1 entry or L2 table over other metadata
// (qemu's default "cached" overlap check) is refused: the image is marked corrupt and the check
// fails, as with qemu.
//
// Not ported: rewriting the snapshot table (qemu -r all drops snapshot extra data beyond 1 KiB and
// rewrites the table; we report that corruption unrepaired; a snapshot table over qemu's size
// limit fails the check in every mode); the bitmap directory is validated only in part (entry
// layout, counts, flags, type, granularity, table offsets; not the bitmap sizes against the disk).
import { Qcow2Image } from "./qcow2";
import {
  Header, INCOMPAT_DIRTY, INCOMPAT_CORRUPT, AUTOCLEAR_BITMAPS, EXT_BITMAPS, MAX_HOST_OFFSET, MAX_L1_ENTRIES, MAX_REFTABLE_BYTES, INT_MAX,
} from "./header";
import { MAX_SNAPSHOT_EXTRA_DATA, MAX_SNAPSHOT_TABLE_BYTES } from "./snapshots";
import {
  BITMAP_MAX_TABLE_SIZE, BITMAP_MAX_GRANULARITY_BITS, BITMAP_MIN_GRANULARITY_BITS, BITMAP_MAX_NAME_SIZE, BITMAP_RESERVED_FLAGS,
  BITMAP_TYPE_DIRTY_TRACKING, BITMAP_TABLE_RESERVED_MASK, BITMAP_TABLE_OFFSET_MASK, BITMAP_TABLE_ALL_ONES,
} from "./bitmaps";
import { getU16, getU32, getU64, putU32, putU64 } from "./be";
import { readZeroFill, writeAt, fileSize, flush, truncateTo } from "./io";
import { Refcounts, writeEntry } from "./refcount";
import {
  csizeShift, csizeMask, clusterKind, L1E_OFFSET_MASK, L1E_RESERVED, L2E_OFFSET_MASK, L2E_RESERVED, L2_BITMAP_ALL_ALLOC, L2_BITMAP_ALL_ZEROES,
  REFT_OFFSET_MASK, REFT_RESERVED, OFLAG_COPIED, OFLAG_ZERO, K_UNALLOC_PLAIN, K_ZERO_ALLOC, K_NORMAL, K_COMPRESSED,
} from "./layout";

export const FIX_LEAKS: i32 = 1;
export const FIX_ERRORS: i32 = 2;

// Masks, limits and cluster kinds are the engine's one copy (layout.ts, header.ts, snapshots.ts,
// bitmaps.ts). qemu's QCOW2_MAX_BITMAP_DIRECTORY_SIZE (1 KiB per bitmap):
const MAX_BITMAP_DIRECTORY_SIZE: u64 = 1024 * 65535;

// Negative errno values, as qemu returns them.
export const EIO: i32 = -5;
export const ENOMEM: i32 = -12;
export const EINVAL: i32 = -22;
export const EFBIG: i32 = -27;

function strerror(ret: i32): string {
  if (ret == EIO) return "Input/output error";
  if (ret == ENOMEM) return "Cannot allocate memory";
  if (ret == EINVAL) return "Invalid argument";
  if (ret == EFBIG) return "File too large";
  return "error " + (-ret).toString();
}

const U16_SATURATED: u32 = 0xffff;
const L1_CHUNK_ENTRIES: u64 = 8192;
const LOG_MAX: i32 = 1000;

/** Clusters per counting window (u16 each). Tests lower it to exercise multi-window checks. */
let windowMax: u64 = 8 << 20;
export function setWindowMax(clusters: u64): void {
  windowMax = clusters < 8 ? 8 : clusters;
}

/** qemu's BdrvCheckResult (with its BlockFragInfo). */
export class CheckResult {
  corruptions: i64 = 0;
  leaks: i64 = 0;
  checkErrors: i64 = 0;
  corruptionsFixed: i64 = 0;
  leaksFixed: i64 = 0;
  imageEndOffset: i64 = 0;
  totalClusters: i64 = 0;
  allocatedClusters: i64 = 0;
  fragmentedClusters: i64 = 0;
  compressedClusters: i64 = 0;

  copy(): CheckResult {
    const r = new CheckResult();
    r.corruptions = this.corruptions; r.leaks = this.leaks; r.checkErrors = this.checkErrors;
    r.corruptionsFixed = this.corruptionsFixed; r.leaksFixed = this.leaksFixed;
    r.imageEndOffset = this.imageEndOffset; r.totalClusters = this.totalClusters;
    r.allocatedClusters = this.allocatedClusters; r.fragmentedClusters = this.fragmentedClusters;
    r.compressedClusters = this.compressedClusters;
    return r;
  }

  /** qemu's qcow2_add_check_result. */
  add(o: CheckResult, allocationInfo: bool): void {
    this.corruptions += o.corruptions;
    this.leaks += o.leaks;
    this.checkErrors += o.checkErrors;
    this.corruptionsFixed += o.corruptionsFixed;
    this.leaksFixed += o.leaksFixed;
    if (allocationInfo) {
      this.imageEndOffset = o.imageEndOffset;
      this.totalClusters = o.totalClusters;
      this.allocatedClusters = o.allocatedClusters;
      this.fragmentedClusters = o.fragmentedClusters;
      this.compressedClusters = o.compressedClusters;
    }
  }
}

function rangesOverlap(a: u64, an: u64, b: u64, bn: u64): bool {
  return a < b + bn && b < a + an;
}

/** The counting window's buffer, shared by all checks (at most one window: <= 32 MiB). */
let countsBuf: usize = 0;
let countsCap: u64 = 0;

/** One check run (qemu's qcow2_co_check_locked) over one image. */
class Checker {
  img: Qcow2Image;
  h: Header;
  handle: i32;
  cs: u64;
  cb: u32;
  eb: u32;
  ext: bool;
  l2Entries: u64;
  rbBits: u32;
  refMax: u64;
  disk: Refcounts;
  fileLen: u64 = 0;
  /** qemu's nb_clusters: the file's clusters, grown by references that end in the last partial cluster. */
  nb: u64 = 0;

  // counting window [lo, hi)
  lo: u64 = 0;
  hi: u64 = 0;
  counts: usize = 0;
  cap: u64 = 0;
  over: Map<u64, u64> = new Map<u64, u64>();
  valid: bool = false;

  // what the current walk does with what it finds
  first: bool = false;
  res: CheckResult | null = null;
  fix: i32 = 0;
  rebuild: bool = false;
  /** One bit per refcount block region: some cluster of it is referenced. */
  used: usize = 0;
  usedBytes: usize = 0;

  l2buf: usize;
  l1buf: usize;

  // snapshots (qcow2_check_read_snapshot_table)
  snapL1Off: Array<u64> = new Array<u64>();
  snapL1Size: Array<u32> = new Array<u32>();
  snapshotsSize: u64 = 0;
  // bitmaps
  nbBitmaps: u32 = 0;
  bmDirOff: u64 = 0;
  bmDirSize: u64 = 0;

  log: Array<string>;
  error: string = "";
  /** A repair was refused (metadata overlap): the check ends with this errno. */
  aborted: i32 = 0;

  constructor(img: Qcow2Image, log: Array<string>) {
    const h = img.h;
    const cs = h.clusterSize;
    const eb: u32 = h.extendedL2 ? 16 : 8;
    this.img = img;
    this.h = h;
    this.handle = img.handle;
    this.cs = cs;
    this.cb = h.clusterBits;
    this.ext = h.extendedL2;
    this.eb = eb;
    this.l2Entries = cs / <u64>eb;
    this.rbBits = h.clusterBits + 3 - h.refcountOrder;
    this.refMax = h.refcountOrder == 6 ? u64.MAX_VALUE : (<u64>1 << (<u64>1 << h.refcountOrder)) - 1;
    this.disk = new Refcounts(img.handle, h, true);
    this.l2buf = heap.alloc(<usize>cs);
    this.l1buf = heap.alloc(<usize>(L1_CHUNK_ENTRIES * 8));
    this.log = log;
  }

  dispose(): void {
    this.disk.dispose();
    heap.free(this.l2buf);
    heap.free(this.l1buf);
    if (this.used != 0) heap.free(this.used);
  }

  /**
   * Whether a message would be dropped (the log is full): call sites then pass "" instead of
   * building it. The minimal runtime collects no garbage during a call, so every message built
   * and dropped would stay in memory until the check ends — gigabytes for a damaged image with
   * millions of bad entries (or a huge one with millions of leaks).
   */
  quiet(): bool {
    return this.log.length >= LOG_MAX;
  }

  /** Whether corrupt() would drop its message (log full, or a silent recount). */
  private mute(): bool {
    return this.quiet() || this.res == null || !this.first;
  }

  /** qemu's stderr line; past LOG_MAX lines only the milestones (`always`) are kept. */
  say(msg: string, always: bool = false): void {
    if (this.log.length < LOG_MAX || always) this.log.push(msg);
    else if (this.log.length == LOG_MAX) this.log.push("(further messages suppressed)");
  }

  /** Walk-level findings are counted once per walk (in its first window). */
  private corrupt(msg: string): void {
    const r = this.res;
    if (r != null && this.first) {
      r.corruptions++;
      this.say(msg);
    }
  }

  private refreshFileLen(): void {
    this.fileLen = fileSize(this.handle);
    const n = (this.fileLen + this.cs - 1) >> this.cb;
    if (n > this.nb) this.nb = n;
  }

  // ---- the counting window ----

  private windowSize(limit: u64): u64 {
    const rb = <u64>1 << this.rbBits;
    let wmax = (windowMax >> this.rbBits) << this.rbBits;
    if (wmax < rb) wmax = rb;
    const need = ((limit + rb - 1) >> this.rbBits) << this.rbBits;
    return need < wmax ? need : wmax;
  }

  private setWindow(lo: u64, hi: u64): void {
    const n = hi - lo;
    if (n > countsCap) {
      // One buffer for every check, kept between checks: a fresh 16 MiB block per check would
      // fragment the heap and make the linear memory grow by a window each time.
      if (countsBuf != 0) heap.free(countsBuf);
      countsBuf = heap.alloc(<usize>(n * 2));
      countsCap = n;
    }
    this.counts = countsBuf;
    this.cap = countsCap;
    memory.fill(this.counts, 0, <usize>(n * 2));
    this.over.clear();
    this.lo = lo;
    this.hi = hi;
    this.valid = false;
  }

  count(k: u64): u64 {
    if (k < this.lo || k >= this.hi) return 0;
    const v = <u32>load<u16>(this.counts + <usize>((k - this.lo) * 2));
    if (v == U16_SATURATED) return this.over.get(k);
    return <u64>v;
  }

  private setCount(k: u64, v: u64): void {
    const p = this.counts + <usize>((k - this.lo) * 2);
    if (v >= <u64>U16_SATURATED) {
      store<u16>(p, <u16>U16_SATURATED);
      this.over.set(k, v);
    } else {
      store<u16>(p, <u16>v);
    }
  }

  /** qemu's qcow2_inc_refcounts_imrt. */
  inc(offset: u64, size: u64): void {
    if (size == 0) return;
    const cs = this.cs;
    if (offset >= (<u64>1 << 62) || offset + size >= this.fileLen + cs) {
      this.corrupt(this.mute() ? "" : "ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x" + offset.toString(16) + " size 0x" + size.toString(16));
      return;
    }
    const start = offset >> this.cb;
    const last = (offset + size - 1) >> this.cb;
    if (last + 1 > this.nb) this.nb = last + 1;
    let a = start > this.lo ? start : this.lo;
    let b = last + 1 < this.hi ? last + 1 : this.hi;
    for (let k = a; k < b; k++) {
      const v = this.count(k);
      if (v == this.refMax) {
        const r = this.res;
        if (r != null) {
          r.corruptions++;
          this.say(this.quiet() ? "" : "ERROR: overflow cluster offset=0x" + (k << this.cb).toString(16));
        }
        continue;
      }
      this.setCount(k, v + 1);
    }
  }

  // ---- the walk (qemu's calculate_refcounts) ----

  private stats(): CheckResult | null {
    return this.first ? this.res : null;
  }

  /**
   * qemu's qcow2_check_metadata_overlap in its default mode ("cached"): the name of the metadata a
   * repair write to [offset, offset+size) would land on, or "" when it is safe. `ignoreActiveL1` /
   * `ignoreActiveL2` skip the structure being written.
   */
  private overlap(offset: u64, size: u64, ignoreActiveL1: bool, ignoreActiveL2: bool): string {
    const cs = this.cs;
    const h = this.h;
    if (offset < cs) return "qcow2_header";
    const sz = ((offset & (cs - 1)) + size + cs - 1) & ~(cs - 1);
    const off = offset & ~(cs - 1);
    if (!ignoreActiveL1 && h.l1Size != 0 && rangesOverlap(off, sz, h.l1Offset, <u64>h.l1Size * 8)) return "active L1 table";
    if (rangesOverlap(off, sz, h.rtOffset, this.disk.rtEntries * 8)) return "refcount table";
    if (this.snapshotsSize != 0 && rangesOverlap(off, sz, h.snapshotsOffset, this.snapshotsSize)) return "snapshot table";
    for (let i = 0; i < this.snapL1Off.length; i++) {
      const n = <u64>unchecked(this.snapL1Size[i]);
      if (n != 0 && rangesOverlap(off, sz, unchecked(this.snapL1Off[i]), n * 8)) return "inactive L1 table";
    }
    if (!ignoreActiveL2) {
      for (let i: u64 = 0; i < <u64>h.l1Size; i++) {
        const t = this.img.map.l1Entry(i) & L1E_OFFSET_MASK;
        if (t != 0 && rangesOverlap(off, sz, t, cs)) return "active L2 table";
      }
    }
    const d = this.disk;
    for (let i: u64 = 0; i < d.rtEntries; i++) {
      const b = d.tableEntry(i) & REFT_OFFSET_MASK;
      if (b != 0 && rangesOverlap(off, sz, b, cs)) return "refcount block";
    }
    if ((h.autoclear & AUTOCLEAR_BITMAPS) != 0 && this.nbBitmaps != 0 && rangesOverlap(off, sz, this.bmDirOff, this.bmDirSize)) return "bitmap directory";
    return "";
  }

  /**
   * A repair about to overwrite other metadata: like qemu, refuse, mark the image corrupt (the
   * header's corrupt bit) and make the check fail. Returns true when the write must not happen.
   */
  private refuseOverlap(offset: u64, size: u64, ignoreActiveL1: bool, ignoreActiveL2: bool): bool {
    const what = this.overlap(offset, size, ignoreActiveL1, ignoreActiveL2);
    if (what.length == 0) return false;
    this.say("qcow2: Marking image as corrupt: Preventing invalid write on metadata (overlaps with " + what + "); further corruption events will be suppressed", true);
    const h = this.h;
    if (h.version >= 3 && (h.incompat & INCOMPAT_CORRUPT) == 0) {
      h.incompat |= INCOMPAT_CORRUPT;
      const b = heap.alloc(8);
      putU64(b, h.incompat);
      writeAt(this.handle, b, 8, 72);
      heap.free(b);
      flush(this.handle);
    }
    this.aborted = EIO;
    return true;
  }

  /** qemu's fix_l2_entry_by_zero: the entry reads as zeros, its (misaligned) cluster is dropped. */
  private fixL2EntryByZero(l2Off: u64, i: u64, active: bool): bool {
    const p = this.l2buf + <usize>(i * <u64>this.eb);
    if (this.ext) {
      let bm = getU64(p + 8);
      bm |= bm << 32;
      bm &= L2_BITMAP_ALL_ZEROES;
      putU64(p + 8, bm);
      putU64(p, 0);
    } else {
      putU64(p, OFLAG_ZERO);
    }
    const r = this.res!;
    if (this.refuseOverlap(l2Off + i * <u64>this.eb, <u64>this.eb, false, active)) {
      this.say(this.quiet() ? "" : "ERROR: Overlap check failed");
      r.checkErrors++;
      return false;
    }
    writeAt(this.handle, p, <i32>this.eb, l2Off + i * <u64>this.eb);
    flush(this.handle);
    this.img.map.dropL2(l2Off);
    r.corruptions--;
    r.corruptionsFixed++;
    return true;
  }

  private checkL2(l2Off: u64, frag: bool, active: bool): void {
    const cs = this.cs;
    readZeroFill(this.handle, this.l2buf, <i32>cs, l2Off);
    const stats = frag ? this.stats() : null;
    let nextContiguous: u64 = 0;
    for (let i: u64 = 0; i < this.l2Entries; i++) {
      const p = this.l2buf + <usize>(i * <u64>this.eb);
      let e = getU64(p);
      const bm: u64 = this.ext ? getU64(p + 8) : 0;
      const type = clusterKind(e, this.ext);
      if (type != K_COMPRESSED && (e & L2E_RESERVED) != 0) {
        this.corrupt(this.mute() ? "" : "ERROR found l2 entry with reserved bits set: " + e.toString(16));
      }
      if (type == K_COMPRESSED) {
        if ((e & OFLAG_COPIED) != 0) {
          this.corrupt(this.mute() ? "" : "ERROR: coffset=0x" + (e & ((<u64>1 << csizeShift(this.cb)) - 1)).toString(16) + ": copied flag must never be set for compressed clusters");
          e &= ~OFLAG_COPIED;
        }
        if (bm != 0) {
          this.corrupt(this.mute() ? "" : "ERROR compressed cluster " + i.toString() + " with non-zero subcluster allocation bitmap, entry=0x" + e.toString(16));
          continue;
        }
        const shift = csizeShift(this.cb);
        const coff = e & ((<u64>1 << shift) - 1);
        const nsec = ((e >> shift) & csizeMask(this.cb)) + 1;
        const csize = nsec * 512 - (coff & 511);
        this.inc(coff, csize);
        if (stats != null) {
          stats.allocatedClusters++;
          stats.compressedClusters++;
          stats.fragmentedClusters++;
        }
      } else if (type == K_ZERO_ALLOC || type == K_NORMAL) {
        const off = e & L2E_OFFSET_MASK;
        if (((bm >> 32) & bm) != 0) {
          this.corrupt(this.mute() ? "" : "ERROR offset=" + off.toString(16) + ": Allocated cluster has corrupted subcluster allocation bitmap");
        }
        if ((off & (cs - 1)) != 0) {
          const containsData = this.ext ? (bm & L2_BITMAP_ALL_ALLOC) != 0 : (e & OFLAG_ZERO) == 0;
          if (!containsData) {
            const repair = (this.fix & FIX_ERRORS) != 0 && this.first && this.res != null;
            this.corrupt(this.mute() ? "" : (repair ? "Repairing" : "ERROR") + " offset=" + off.toString(16) + ": Preallocated cluster is not properly aligned; L2 entry corrupted.");
            if (repair) {
              if (this.fixL2EntryByZero(l2Off, i, active)) continue;
              if (this.aborted != 0) return;
            }
          } else {
            this.corrupt(this.mute() ? "" : "ERROR offset=" + off.toString(16) + ": Data cluster is not properly aligned; L2 entry corrupted.");
          }
        }
        if (stats != null) {
          stats.allocatedClusters++;
          if (nextContiguous != 0 && off != nextContiguous) stats.fragmentedClusters++;
          nextContiguous = off + cs;
        }
        this.inc(off, cs);
      } else if (type == K_UNALLOC_PLAIN) {
        if ((bm & L2_BITMAP_ALL_ALLOC) != 0) {
          this.corrupt(this.mute() ? "" : "ERROR: Unallocated cluster has non-zero subcluster allocation map");
        }
      }
    }
  }

  private checkL1(l1Off: u64, l1Size: u64, frag: bool, active: bool): void {
    if (l1Size == 0) return;
    this.inc(l1Off, l1Size * 8);
    for (let base: u64 = 0; base < l1Size; base += L1_CHUNK_ENTRIES) {
      const n = l1Size - base < L1_CHUNK_ENTRIES ? l1Size - base : L1_CHUNK_ENTRIES;
      readZeroFill(this.handle, this.l1buf, <i32>(n * 8), l1Off + base * 8);
      for (let j: u64 = 0; j < n; j++) {
        const e = getU64(this.l1buf + <usize>(j * 8));
        if (e == 0) continue;
        if ((e & L1E_RESERVED) != 0) {
          this.corrupt(this.mute() ? "" : "ERROR found L1 entry with reserved bits set: " + e.toString(16));
        }
        const l2Off = e & L1E_OFFSET_MASK;
        this.inc(l2Off, this.cs);
        if ((l2Off & (this.cs - 1)) != 0) {
          this.corrupt(this.mute() ? "" : "ERROR l2_offset=" + l2Off.toString(16) + ": Table is not cluster aligned; L1 entry corrupted");
        }
        this.checkL2(l2Off, frag, active);
        if (this.aborted != 0) return;
      }
    }
  }

  /** qemu's qcow2_check_bitmaps_refcounts; < 0 ends the check (qemu returns -EINVAL). */
  private checkBitmaps(): i32 {
    if (this.nbBitmaps == 0) return 0;
    this.inc(this.bmDirOff, this.bmDirSize);
    const size = this.bmDirSize;
    if (size == 0 || size > MAX_BITMAP_DIRECTORY_SIZE) {
      this.corrupt(this.mute() ? "" : "ERROR bitmap directory size " + size.toString() + " is invalid");
      return EINVAL;
    }
    const dir = heap.alloc(<usize>size);
    readZeroFill(this.handle, dir, <i32>size, this.bmDirOff);
    let pos: u64 = 0;
    let found: u32 = 0;
    let broken = "";
    const tbuf = this.l1buf;
    while (pos < size) {
      if (pos + 24 > size) { broken = "broken bitmap directory"; break; }
      const e = dir + <usize>pos;
      const tOff = getU64(e);
      const tSize = <u64>getU32(e + 8);
      const flags = getU32(e + 12);
      const type = load<u8>(e + 16);
      const gran = <u32>load<u8>(e + 17);
      const nameSize = <u64>getU16(e + 18);
      const extra = <u64>getU32(e + 20);
      const next = pos + ((24 + extra + nameSize + 7) & ~(<u64>7));
      if (++found > this.nbBitmaps) { broken = "More bitmaps found than specified in header extension"; break; }
      if (next > size) { broken = "broken bitmap directory"; break; }
      if (extra != 0) { broken = "Bitmap extra data is not supported"; break; }
      if (tSize == 0 || tOff == 0 || (tOff & (this.cs - 1)) != 0 || tSize > BITMAP_MAX_TABLE_SIZE ||
          gran > BITMAP_MAX_GRANULARITY_BITS || gran < BITMAP_MIN_GRANULARITY_BITS || (flags & BITMAP_RESERVED_FLAGS) != 0 ||
          nameSize > <u64>BITMAP_MAX_NAME_SIZE || type != BITMAP_TYPE_DIRTY_TRACKING) {
        broken = "a bitmap doesn't satisfy the constraints";
        break;
      }
      pos = next;
    }
    if (broken.length == 0 && found != this.nbBitmaps) broken = "Less bitmaps found than specified in header extension";
    if (broken.length > 0) {
      heap.free(dir);
      this.corrupt(this.mute() ? "" : "ERROR " + broken);
      return EINVAL;
    }
    pos = 0;
    while (pos < size) {
      const e = dir + <usize>pos;
      const tOff = getU64(e);
      const tSize = <u64>getU32(e + 8);
      const nameSize = <u64>getU16(e + 18);
      pos += (24 + nameSize + 7) & ~(<u64>7);
      this.inc(tOff, tSize * 8);
      for (let base: u64 = 0; base < tSize; base += L1_CHUNK_ENTRIES) {
        const n = tSize - base < L1_CHUNK_ENTRIES ? tSize - base : L1_CHUNK_ENTRIES;
        readZeroFill(this.handle, tbuf, <i32>(n * 8), tOff + base * 8);
        for (let j: u64 = 0; j < n; j++) {
          const te = getU64(tbuf + <usize>(j * 8));
          const off = te & BITMAP_TABLE_OFFSET_MASK;
          if ((te & BITMAP_TABLE_RESERVED_MASK) != 0 || (off != 0 && ((te & BITMAP_TABLE_ALL_ONES) != 0 || (off & (this.cs - 1)) != 0))) {
            this.corrupt(this.mute() ? "" : "ERROR bitmap table entry " + te.toString(16) + " is invalid");
            continue;
          }
          if (off == 0) continue;
          this.inc(off, this.cs);
        }
      }
    }
    heap.free(dir);
    return 0;
  }

  /** qemu's check_refblocks. */
  private checkRefblocks(): i32 {
    const d = this.disk;
    const cs = this.cs;
    for (let i: u64 = 0; i < d.rtEntries; i++) {
      const te = d.tableEntry(i);
      const off = te & REFT_OFFSET_MASK;
      const cluster = off >> this.cb;
      if ((te & REFT_RESERVED) != 0) {
        this.corrupt(this.mute() ? "" : "ERROR refcount table entry " + i.toString() + " has reserved bits set");
        this.rebuild = true;
        continue;
      }
      if ((off & (cs - 1)) != 0) {
        this.corrupt(this.mute() ? "" : "ERROR refcount block " + i.toString() + " is not cluster aligned; refcount table entry corrupted");
        this.rebuild = true;
        continue;
      }
      if (cluster >= this.nb) {
        const repair = (this.fix & FIX_ERRORS) != 0 && this.first && this.res != null;
        this.corrupt(this.mute() ? "" : (repair ? "Repairing" : "ERROR") + " refcount block " + i.toString() + " is outside image");
        if (repair) {
          // qemu grows the file so that the block lies inside it; the block reads as zeros.
          // (Offsets reach the host as f64: beyond 2^53 we give up, as qemu does past INT64_MAX.)
          if (off + cs <= MAX_HOST_OFFSET) {
            truncateTo(this.handle, off + cs);
            this.refreshFileLen();
          }
          if (cluster < this.nb) {
            const r = this.res!;
            r.corruptions--;
            r.corruptionsFixed++;
            this.inc(off, cs);
            continue;
          }
          this.rebuild = true;
          this.say(this.quiet() ? "" : "ERROR could not resize image");
        }
        continue;
      }
      if (off != 0) {
        this.inc(off, cs);
        if (cluster >= this.lo && cluster < this.hi && this.count(cluster) != 1) {
          const r = this.res;
          if (r != null) {
            r.corruptions++;
            this.say(this.quiet() ? "" : "ERROR refcount block " + i.toString() + " refcount=" + this.count(cluster).toString());
          }
          this.rebuild = true;
        }
      }
    }
    return 0;
  }

  /** qemu's calculate_refcounts, for the current window. */
  private calculate(): i32 {
    const h = this.h;
    this.inc(0, this.cs);
    this.checkL1(h.l1Offset, <u64>h.l1Size, true, true);
    if (this.aborted != 0) return this.aborted;
    for (let i = 0; i < this.snapL1Off.length; i++) {
      const off = unchecked(this.snapL1Off[i]);
      const size = <u64>unchecked(this.snapL1Size[i]);
      if ((off & (this.cs - 1)) != 0) {
        this.corrupt(this.mute() ? "" : "ERROR snapshot " + i.toString() + " l1_offset=0x" + off.toString(16) + ": L1 table is not cluster aligned; snapshot table entry corrupted");
        continue;
      }
      if (size > MAX_L1_ENTRIES) {
        this.corrupt(this.mute() ? "" : "ERROR snapshot " + i.toString() + " l1_size=0x" + size.toString(16) + ": L1 table is too large; snapshot table entry corrupted");
        continue;
      }
      this.checkL1(off, size, false, false);
      if (this.aborted != 0) return this.aborted;
    }
    this.inc(h.snapshotsOffset, this.snapshotsSize);
    // The LUKS header and key material of an encrypted image (qemu counts them here too).
    if (h.cryptoLength > 0) this.inc(h.cryptoOffset, h.cryptoLength);
    this.inc(h.rtOffset, this.disk.rtEntries * 8);
    const r = this.checkBitmaps();
    if (r < 0) return r;
    return this.checkRefblocks();
  }

  // ---- comparison (qemu's compare_refcounts) ----

  private markUsed(k: u64): void {
    const r = k >> this.rbBits;
    const byte = <usize>(r >> 3);
    if (byte < this.usedBytes) store<u8>(this.used + byte, load<u8>(this.used + byte) | <u8>(<u32>1 << <u32>(r & 7)));
  }

  isUsed(region: u64): bool {
    const byte = <usize>(region >> 3);
    if (byte >= this.usedBytes) return false;
    return (<u32>load<u8>(this.used + byte) & (<u32>1 << <u32>(region & 7))) != 0;
  }

  highest: u64 = 0;

  private compare(res: CheckResult, fix: i32): void {
    const d = this.disk;
    const end = this.hi < this.nb ? this.hi : this.nb;
    for (let i = this.lo; i < end; i++) {
      const r2 = this.count(i);
      // The regions a rebuild needs blocks for, whether or not their old block is readable.
      if (r2 > 0) this.markUsed(i);
      const r1 = d.getChecked(i);
      if (d.readFailed) {
        res.checkErrors++;
        this.say(this.quiet() ? "" : "Can't get refcount for cluster " + i.toString() + ": Input/output error");
        continue;
      }
      if (r1 == 0 && r2 == 0) continue;
      this.highest = i;
      if (r1 == r2) continue;
      let fixing = 0; // 1 leaks, 2 corruptions
      if (r1 == 0) this.rebuild = true;
      else if (r1 > r2 && (fix & FIX_LEAKS) != 0) fixing = 1;
      else if (r1 < r2 && (fix & FIX_ERRORS) != 0) fixing = 2;
      this.say(this.quiet() ? "" : (fixing != 0 ? "Repairing" : (r1 < r2 ? "ERROR" : "Leaked")) + " cluster " + i.toString() + " refcount=" + r1.toString() + " reference=" + r2.toString());
      if (fixing != 0 && d.setInBlock(i, r2)) {
        if (fixing == 1) res.leaksFixed++;
        else res.corruptionsFixed++;
        continue;
      }
      if (r1 < r2) res.corruptions++;
      else res.leaks++;
    }
  }

  /**
   * One full calculate (+ compare) over every window. `walkRes` receives what the walk finds
   * (null: a silent recount of references already reported), `cmpRes`/`cmpFix` the comparison.
   */
  private runSet(walkRes: CheckResult | null, walkFix: i32, cmpRes: CheckResult | null, cmpFix: i32): i32 {
    this.highest = 0;
    const limit0 = this.nb + 1;
    const w = this.windowSize(limit0);
    if (this.usedBytes == 0) {
      this.usedBytes = <usize>((((limit0 + 1) >> this.rbBits) + 8) >> 3) + 1;
      this.used = heap.alloc(this.usedBytes);
      memory.fill(this.used, 0, this.usedBytes);
    }
    for (let lo: u64 = 0; lo < this.nb + 1; lo += w) {
      if (!(this.valid && walkRes == null && this.lo == lo && this.hi == lo + w)) {
        this.setWindow(lo, lo + w);
        this.first = lo == 0;
        this.res = walkRes;
        this.fix = walkFix;
        const r = this.calculate();
        this.res = null;
        if (r < 0) return r;
        this.valid = true;
      }
      if (cmpRes != null) this.compare(cmpRes, cmpFix);
    }
    return 0;
  }

  // ---- rebuild (qemu's rebuild_refcount_structure, placing the new structure at the end) ----

  private rebuildStructure(res: CheckResult): i32 {
    this.say("Rebuilding refcount structure", true);
    const cs = this.cs;
    const rbBits = this.rbBits;
    const e0 = this.nb;
    const regionsOld = (e0 + (<u64>1 << rbBits) - 1) >> rbBits;
    let k: u64 = 0;
    let maxUsed: u64 = 0;
    for (let r: u64 = 0; r < regionsOld; r++) if (this.isUsed(r)) { k++; maxUsed = r; }
    // New blocks for the used regions and for the regions the new structure itself lands in, then
    // the table; iterate until the sizes agree.
    let m: u64 = 0;
    let blocks: u64 = 0;
    let tClusters: u64 = 0;
    for (let iter = 0; iter < 64; iter++) {
      let extra: u64 = 0;
      let lastRegion = maxUsed;
      if (m > 0) {
        const r0 = e0 >> rbBits;
        const r1 = (e0 + m - 1) >> rbBits;
        for (let r = r0; r <= r1; r++) if (!this.isUsed(r)) extra++;
        if (r1 > lastRegion) lastRegion = r1;
      }
      blocks = k + extra;
      tClusters = ((lastRegion + 1) * 8 + cs - 1) >> this.cb;
      if (blocks + tClusters == m) break;
      m = blocks + tClusters;
    }
    if ((tClusters << this.cb) > MAX_REFTABLE_BYTES) {
      res.checkErrors++;
      this.say(this.quiet() ? "" : "ERROR allocating reftable: File too large");
      return EFBIG;
    }
    const tEntries = (tClusters << this.cb) / 8;
    const table = heap.alloc(<usize>(tClusters << this.cb));
    memory.fill(table, 0, <usize>(tClusters << this.cb));
    const newEnd = e0 + m;
    const rNewLo = e0 >> rbBits;
    const rNewHi = (newEnd - 1) >> rbBits;
    let idx: u64 = 0;
    for (let r: u64 = 0; r < tEntries; r++) {
      if (this.isUsed(r) || (r >= rNewLo && r <= rNewHi)) {
        store<u64>(table + <usize>(r * 8), (e0 + idx) << this.cb);
        idx++;
      }
    }
    const tableOff = (e0 + blocks) << this.cb;
    // Write every new block, window by window, from a fresh count of the references.
    const w = this.windowSize(newEnd);
    const buf = heap.alloc(<usize>cs);
    const rb = <u64>1 << rbBits;
    for (let lo: u64 = 0; lo < newEnd; lo += w) {
      this.setWindow(lo, lo + w);
      this.first = false;
      this.res = null;
      this.fix = 0;
      const r = this.calculate();
      if (r < 0) { heap.free(buf); heap.free(table); return r; }
      const a = e0 > lo ? e0 : lo;
      const b = newEnd < lo + w ? newEnd : lo + w;
      for (let c = a; c < b; c++) this.setCount(c, 1);
      for (let reg = lo >> rbBits; reg < (lo + w) >> rbBits && reg < tEntries; reg++) {
        const boff = load<u64>(table + <usize>(reg * 8));
        if (boff == 0) continue;
        memory.fill(buf, 0, <usize>cs);
        const base = reg << rbBits;
        for (let j: u64 = 0; j < rb; j++) {
          const v = this.count(base + j);
          if (v != 0) writeEntry(buf, j, this.h.refcountOrder, v);
        }
        writeAt(this.handle, buf, <i32>cs, boff);
      }
    }
    heap.free(buf);
    this.valid = false;
    flush(this.handle);
    for (let i: u64 = 0; i < tEntries; i++) {
      const p = table + <usize>(i * 8);
      store<u64>(p, bswap<u64>(load<u64>(p)));
    }
    writeAt(this.handle, table, <i32>(tClusters << this.cb), tableOff);
    heap.free(table);
    flush(this.handle);
    // Only now does the header name the new table.
    const hb = heap.alloc(12);
    putU64(hb, tableOff);
    putU32(hb + 8, <u32>tClusters);
    writeAt(this.handle, hb, 12, 48);
    heap.free(hb);
    flush(this.handle);
    this.h.rtOffset = tableOff;
    this.h.rtClusters = <u32>tClusters;
    this.disk.dispose();
    this.disk = new Refcounts(this.handle, this.h, true);
    this.refreshFileLen();
    return 0;
  }

  // ---- COPIED (qemu's check_oflag_copied) ----

  private checkOflagCopied(res: CheckResult, fix: i32): i32 {
    const img = this.img;
    const d = this.disk;
    let repair = false;
    if ((fix & FIX_ERRORS) != 0) repair = true;
    else if ((fix & FIX_LEAKS) != 0) repair = res.checkErrors == 0 && res.corruptions == 0 && res.leaks == 0;
    const n = <u64>this.h.l1Size;
    for (let i: u64 = 0; i < n; i++) {
      const l1e = img.map.l1Entry(i);
      const l2Off = l1e & L1E_OFFSET_MASK;
      if (l2Off == 0) continue;
      let rc = d.getChecked(l2Off >> this.cb);
      if (d.readFailed) continue;
      if ((rc == 1) != ((l1e & OFLAG_COPIED) != 0)) {
        res.corruptions++;
        this.say(this.quiet() ? "" : (repair ? "Repairing" : "ERROR") + " OFLAG_COPIED L2 cluster: l1_index=" + i.toString() + " l1_entry=" + l1e.toString(16) + " refcount=" + rc.toString());
        if (repair) {
          const ne = rc == 1 ? l1e | OFLAG_COPIED : l1e & ~OFLAG_COPIED;
          if (this.refuseOverlap(this.h.l1Offset + (i & ~(<u64>63)) * 8, 512, true, false)) {
            res.checkErrors++;
            return EIO;
          }
          img.map.setL1EntryWritten(i, ne);
          const b = heap.alloc(8);
          putU64(b, ne);
          writeAt(this.handle, b, 8, this.h.l1Offset + i * 8);
          heap.free(b);
          flush(this.handle);
          res.corruptions--;
          res.corruptionsFixed++;
        }
      }
      readZeroFill(this.handle, this.l2buf, <i32>this.cs, l2Off);
      let dirty: i64 = 0;
      for (let j: u64 = 0; j < this.l2Entries; j++) {
        const p = this.l2buf + <usize>(j * <u64>this.eb);
        const e = getU64(p);
        const type = clusterKind(e, this.ext);
        if (type != K_NORMAL && type != K_ZERO_ALLOC) continue;
        rc = d.getChecked((e & L2E_OFFSET_MASK) >> this.cb);
        if (d.readFailed) continue;
        if ((rc == 1) != ((e & OFLAG_COPIED) != 0)) {
          res.corruptions++;
          this.say(this.quiet() ? "" : (repair ? "Repairing" : "ERROR") + " OFLAG_COPIED data cluster: l2_entry=" + e.toString(16) + " refcount=" + rc.toString());
          if (repair) {
            putU64(p, rc == 1 ? e | OFLAG_COPIED : e & ~OFLAG_COPIED);
            dirty++;
          }
        }
      }
      if (dirty > 0) {
        if (this.refuseOverlap(l2Off, this.cs, false, true)) {
          this.say(this.quiet() ? "" : "ERROR: Could not write L2 table; metadata overlap check failed: Input/output error");
          res.checkErrors++;
          return EIO;
        }
        writeAt(this.handle, this.l2buf, <i32>this.cs, l2Off);
        img.map.dropL2(l2Off);
        res.corruptions -= dirty;
        res.corruptionsFixed += dirty;
      }
    }
    flush(this.handle);
    return 0;
  }

  // ---- snapshots (qcow2_check_read_snapshot_table) ----

  private readSnapshots(res: CheckResult, fix: i32): i32 {
    const h = this.h;
    const nbs = h.nbSnapshots;
    this.snapshotsSize = 0;
    if (nbs == 0) return 0;
    const hb = heap.alloc(40);
    let offset = h.snapshotsOffset;
    let tableLength: u64 = 0;
    for (let i: u32 = 0; i < nbs; i++) {
      tableLength = (tableLength + 7) & ~(<u64>7);
      offset = (offset + 7) & ~(<u64>7);
      readZeroFill(this.handle, hb, 40, offset);
      offset += 40;
      const l1Off = getU64(hb);
      const l1Size = getU32(hb + 8);
      const idSize = <u64>getU16(hb + 12);
      const nameSize = <u64>getU16(hb + 14);
      let extra = <u64>getU32(hb + 36);
      if (extra > MAX_SNAPSHOT_EXTRA_DATA) {
        if ((fix & FIX_ERRORS) == 0) {
          heap.free(hb);
          res.checkErrors++;
          this.say(this.quiet() ? "" : "ERROR failed to read the snapshot table: Too much extra metadata in snapshot table entry " + i.toString());
          this.error = "Too much extra metadata in snapshot table entry " + i.toString();
          return EFBIG;
        }
        // qemu (repair mode) drops the excess and rewrites the table; we report it, unrepaired.
        this.say(this.quiet() ? "" : "Discarding too much extra metadata in snapshot table entry " + i.toString() + " (" + extra.toString() + " > 1024)");
        res.corruptions++;
        offset += extra;
        extra = MAX_SNAPSHOT_EXTRA_DATA;
      } else {
        offset += extra;
      }
      offset += idSize + nameSize;
      tableLength += 40 + extra + idSize + nameSize;
      if (tableLength > MAX_SNAPSHOT_TABLE_BYTES || offset - h.snapshotsOffset > INT_MAX) {
        heap.free(hb);
        res.checkErrors++;
        this.say(this.quiet() ? "" : "ERROR failed to read the snapshot table: Snapshot table is too big");
        this.error = "Snapshot table is too big";
        return EFBIG;
      }
      this.snapL1Off.push(l1Off);
      this.snapL1Size.push(l1Size);
    }
    heap.free(hb);
    this.snapshotsSize = offset - h.snapshotsOffset;
    return 0;
  }

  private readBitmapsExtension(): void {
    this.nbBitmaps = 0;
    if ((this.h.autoclear & AUTOCLEAR_BITMAPS) == 0) return;
    const exts = this.h.extensions;
    for (let i = 0; i < exts.length; i++) {
      const e = exts[i];
      if (e.magic != EXT_BITMAPS || e.data.length != 24) continue;
      const p = changetype<usize>(e.data);
      this.nbBitmaps = getU32(p);
      this.bmDirSize = getU64(p + 8);
      this.bmDirOff = getU64(p + 16);
    }
  }

  // ---- qemu's qcow2_check_refcounts ----

  private checkRefcounts(res: CheckResult, fix: i32): i32 {
    this.refreshFileLen();
    this.nb = (this.fileLen + this.cs - 1) >> this.cb;
    if (this.nb > INT_MAX) {
      res.checkErrors++;
      return EFBIG;
    }
    const sectors = this.h.size / 512;
    res.totalClusters = <i64>((sectors * 512 + this.cs - 1) >> this.cb);
    this.rebuild = false;
    // calculate_refcounts + compare_refcounts(fix = 0), window by window
    const cmp = new CheckResult();
    let r = this.runSet(res, fix, cmp, 0);
    if (r < 0) return r;
    const pre = res.copy();
    res.add(cmp, false);
    let highest = this.highest;

    if (this.rebuild && (fix & FIX_ERRORS) != 0) {
      const old = res.copy();
      let freshLeaks: i64 = 0;
      r = this.rebuildStructure(res);
      if (r < 0) return r;
      res.corruptions = 0;
      res.leaks = 0;
      this.rebuild = false;
      const tmp = new CheckResult();
      r = this.runSet(res, 0, tmp, fix & FIX_LEAKS);
      if (r < 0) return r;
      this.disk.writeBlocks();
      flush(this.handle);
      if ((fix & FIX_LEAKS) != 0) {
        if (this.rebuild) this.say("ERROR rebuilt refcount structure is still broken", true);
        freshLeaks = tmp.leaks;
      }
      highest = this.highest;
      if (res.corruptions < old.corruptions) res.corruptionsFixed += old.corruptions - res.corruptions;
      if (res.leaks < old.leaks) res.leaksFixed += old.leaks - res.leaks;
      res.leaks += freshLeaks;
    } else if (fix != 0) {
      if (this.rebuild) {
        this.say("ERROR need to rebuild refcount structures", true);
        res.checkErrors++;
        return EIO;
      }
      if (res.leaks != 0 || res.corruptions != 0) {
        const back = pre.copy();
        res.corruptions = back.corruptions; res.leaks = back.leaks; res.checkErrors = back.checkErrors;
        res.corruptionsFixed = back.corruptionsFixed; res.leaksFixed = back.leaksFixed;
        r = this.runSet(null, 0, res, fix);
        if (r < 0) return r;
        this.disk.writeBlocks();
        flush(this.handle);
        highest = this.highest;
      }
    }
    r = this.checkOflagCopied(res, fix);
    if (r < 0) return r;
    res.imageEndOffset = <i64>((highest + 1) << this.cb);
    return 0;
  }

  /** qemu's qcow2_co_check_locked. Returns 0 or a negative errno (the check failed). */
  run(result: CheckResult, fix: i32): i32 {
    const snap = new CheckResult();
    let r = this.readSnapshots(snap, fix);
    if (r < 0) {
      result.add(snap, false);
      return r;
    }
    this.readBitmapsExtension();
    const rc = new CheckResult();
    r = this.checkRefcounts(rc, fix);
    result.add(rc, true);
    if (r < 0) {
      if (this.error.length == 0) this.error = strerror(r);
      result.add(snap, false);
      return r;
    }
    result.add(snap, false);
    if (fix != 0 && result.checkErrors == 0 && result.corruptions == 0) this.markCleanAndConsistent();
    return 0;
  }

  /** qcow2_mark_clean + qcow2_mark_consistent: clear the dirty and corrupt bits (only the field). */
  private markCleanAndConsistent(): void {
    const h = this.h;
    if (h.version < 3) return;
    const bits = h.incompat & (INCOMPAT_DIRTY | INCOMPAT_CORRUPT);
    if (bits == 0) return;
    flush(this.handle);
    h.incompat &= ~bits;
    const b = heap.alloc(8);
    putU64(b, h.incompat);
    writeAt(this.handle, b, 8, 72);
    heap.free(b);
    flush(this.handle);
  }
}

// Built from parts joined once: the minimal runtime collects no garbage during a call, so
// growing a string piece by piece would leave every intermediate copy in memory (with the log
// at its cap, ~100 MiB of wasm memory for one check, never returned).
function resultJson(ret: i32, error: string, r: CheckResult, log: Array<string>): string {
  const p = new Array<string>();
  p.push("{\"ret\":" + ret.toString());
  p.push(",\"error\":" + jsonStr(error));
  p.push(",\"imageEndOffset\":" + r.imageEndOffset.toString());
  p.push(",\"totalClusters\":" + r.totalClusters.toString());
  p.push(",\"allocatedClusters\":" + r.allocatedClusters.toString());
  p.push(",\"fragmentedClusters\":" + r.fragmentedClusters.toString());
  p.push(",\"compressedClusters\":" + r.compressedClusters.toString());
  p.push(",\"checkErrors\":" + r.checkErrors.toString());
  p.push(",\"corruptions\":" + r.corruptions.toString());
  p.push(",\"leaks\":" + r.leaks.toString());
  p.push(",\"corruptionsFixed\":" + r.corruptionsFixed.toString());
  p.push(",\"leaksFixed\":" + r.leaksFixed.toString());
  p.push(",\"log\":[");
  for (let i = 0; i < log.length; i++) {
    if (i > 0) p.push(",");
    p.push(jsonStr(log[i]));
  }
  p.push("]}");
  return p.join("");
}

function jsonStr(s: string): string {
  const p = new Array<string>();
  p.push("\"");
  let from = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c != 0x22 && c != 0x5c && c >= 0x20) continue;
    p.push(s.substring(from, i));
    p.push(c == 0x22 ? "\\\"" : c == 0x5c ? "\\\\" : " ");
    from = i + 1;
  }
  p.push(s.substring(from));
  p.push("\"");
  return p.join("");
}

function runOnce(img: Qcow2Image, fix: i32, log: Array<string>, out: CheckResult): i32 {
  const c = new Checker(img, log);
  const r = c.run(out, fix);
  if (r < 0 && c.error.length > 0) lastError = c.error;
  c.dispose();
  return r;
}

let lastError: string = "";

/**
 * `qemu-img check [-r leaks|all]` on an open qcow2 image: one check (repairing per `fix`), and when
 * something was repaired a second, read-only check whose result is reported with the repaired
 * counts carried over, as qemu-img does. Returns JSON: ret (0, or a negative errno when the check
 * itself failed), error, the qemu counters, and log (qemu's stderr lines, at most ~1000).
 */
export function checkQcow2(img: Qcow2Image, fix: i32): string {
  const log = new Array<string>();
  lastError = "";
  const first = new CheckResult();
  let r = runOnce(img, fix, log, first);
  if (r < 0) return resultJson(r, lastError.length > 0 ? lastError : strerror(r), first, log);
  if (fix != 0 && (first.corruptionsFixed != 0 || first.leaksFixed != 0)) {
    const second = new CheckResult();
    r = runOnce(img, 0, log, second);
    second.leaksFixed = first.leaksFixed;
    second.corruptionsFixed = first.corruptionsFixed;
    if (r < 0) return resultJson(r, lastError.length > 0 ? lastError : strerror(r), second, log);
    return resultJson(0, "", second, log);
  }
  return resultJson(0, "", first, log);
}
