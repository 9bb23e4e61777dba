// The guest-to-host mapping of an open qcow2 image: the L1 table in memory, L2 tables through a
// bounded cache, the lookup and decoding of entries, entry changes, and the order in which changed
// tables reach the disk after the refcounts they depend on (flushMetadata). Reads, writes, commit
// and check go through it; it knows nothing of guest data.
import { Header, writeHeader, MAX_HOST_OFFSET } from "./header";
import { getU64, putU64 } from "./be";
import { readTable, readZeroFill, flush, writeAt } from "./io";
import { TableCache } from "./tablecache";
import { Refcounts } from "./refcount";
import { fail, hex, E_CORRUPT } from "./errors";
import {
  L1E_OFFSET_MASK, L2E_OFFSET_MASK, OFLAG_COPIED, OFLAG_COMPRESSED, OFLAG_ZERO, L2_BITMAP_ALL_ALLOC,
  K_UNALLOC_PLAIN, K_UNALLOC_ALLOC, K_ZERO_PLAIN, K_ZERO_ALLOC, K_NORMAL, K_COMPRESSED,
  kindHasHost, csizeShift, csizeMask,
} from "./layout";

/** Memory for cached L2 tables per image: fixed, whatever the image size. */
const L2_CACHE_BYTES: usize = 4 << 20;

/**
 * What the last lookup or decode found: kind, host offset of the first byte, raw L2 entry. One
 * shared instance rather than a new object per call: lookups are on every read and copy path.
 */
export class Lookup {
  kind: i32 = 0;
  host: u64 = 0;
  entry: u64 = 0;
}
export const lastLookup = new Lookup();

export class Mapping {
  readonly handle: i32;
  readonly h: Header;
  readonly cs: u64;
  readonly clusterBits: u32;
  readonly l2Bits: u32;
  readonly l2Entries: u64;
  /** Bytes per L2 entry: 8, or 16 with extended L2 (entry + subcluster bitmap). */
  readonly entryBytes: u32;
  /** log2 of the subcluster size (extended L2). */
  readonly scBits: u32;
  private l1: usize;
  private l2: TableCache;

  // --- write side state (see flushMetadata for the order in which it reaches the disk) ---
  private rc: Refcounts | null = null;
  private l1DirtyLo: u64 = u64.MAX_VALUE;
  private l1DirtyHi: u64 = 0;
  /** Clusters to dereference once no durable L2/L1 entry points at them any more. */
  private pendingFree: Array<u64> = new Array<u64>();
  /** Host clusters holding L2 tables (for the metadata overlap check), built by startWriting. */
  private l2Clusters: Set<u64> = new Set<u64>();

  constructor(handle: i32, h: Header) {
    const cs = h.clusterSize;
    this.handle = handle;
    this.h = h;
    this.cs = cs;
    this.clusterBits = h.clusterBits;
    this.l2Bits = h.l2Bits;
    this.l2Entries = <u64>1 << h.l2Bits;
    this.entryBytes = h.extendedL2 ? 16 : 8;
    this.scBits = h.clusterBits - 5;
    // The L1 table is validated by parseHeader (≤ 32 MiB), then held natively for cheap indexing.
    // Checked before anything is allocated: an engine error unwinds without freeing, so a failed
    // open must not own native memory yet.
    const n = <usize>h.l1Size;
    // qemu reads what lies past the end of the file as zeros. An L1 table reaching past it by a
    // cluster or more is what qemu-img check calls corrupt ("exceeding the end of the file by
    // one cluster or more"), and we refuse it (qemu would allocate all of it, up to 32 MiB);
    // less than that is a last cluster the file only partly holds, read as qemu reads it.
    // The file's size as parseHeader saw it, a moment ago: one host stat per image opened, not two.
    const end = (h.fileSizeAtOpen + 511) & ~(<u64>511);
    if (n > 0 && h.l1Offset + <u64>n * 8 >= end + cs) {
      fail(E_CORRUPT, "L1 table at " + hex(h.l1Offset) + " lies past the end of the file");
    }
    this.l2 = new TableCache(<usize>cs, L2_CACHE_BYTES, 2, 1024);
    const l1 = heap.alloc(n > 0 ? n * 8 : 8);
    this.l1 = l1;
    if (n > 0) {
      readZeroFill(handle, l1, <i32>(n * 8), h.l1Offset);
      for (let i: usize = 0; i < n; i++) store<u64>(l1 + i * 8, bswap<u64>(load<u64>(l1 + i * 8)));
    }
  }

  l1Entry(i: u64): u64 { return load<u64>(this.l1 + <usize>i * 8); }

  setL1Entry(i: u64, v: u64): void {
    const old = this.l1Entry(i) & L1E_OFFSET_MASK;
    if (old != 0) this.l2Clusters.delete(old >> this.clusterBits);
    if ((v & L1E_OFFSET_MASK) != 0) this.l2Clusters.add((v & L1E_OFFSET_MASK) >> this.clusterBits);
    store<u64>(this.l1 + <usize>i * 8, v);
    if (i < this.l1DirtyLo) this.l1DirtyLo = i;
    if (i + 1 > this.l1DirtyHi) this.l1DirtyHi = i + 1;
  }

  /** Take an L1 entry the caller has already written to the disk itself (check's repairs). */
  setL1EntryWritten(i: u64, v: u64): void {
    store<u64>(this.l1 + <usize>(i * 8), v);
  }

  /** The L2 table at host offset `off`, read through the cache. */
  l2Table(off: u64): usize {
    const c = this.l2;
    let slot = c.find(off);
    if (slot >= 0) return c.ptr(slot);
    slot = c.victim();
    this.evictL2(slot);
    const p = c.ptr(slot);
    readTable(this.handle, p, <i32>this.cs, off, "L2 table");
    c.assign(slot, off);
    return p;
  }

  /** The entry for index `idx` of the L2 table at host offset `table`. */
  entryPtr(table: u64, idx: u64): usize {
    return this.l2Table(table) + <usize>(idx * this.entryBytes);
  }

  /** Make room in an L2 cache slot. A dirty table may only leave through flushMetadata. */
  private evictL2(slot: i32): void {
    if (this.l2.isDirty(slot)) this.flushMetadata();
    this.l2.drop(this.l2.key(slot));
  }

  markL2Dirty(tableOff: u64): void {
    this.l2.markDirty(this.l2.find(tableOff));
  }

  /** Forget the cached copy of the L2 table at `tableOff` (freed, or rewritten on disk directly). */
  dropL2(tableOff: u64): void {
    this.l2.drop(tableOff);
  }

  /** The L2 table for L1 index `l1i`, allocating an empty one if there is none. */
  tableForWrite(l1i: u64): u64 {
    const cs = this.cs;
    const e = this.l1Entry(l1i);
    const off = e & L1E_OFFSET_MASK;
    if (off != 0) {
      if ((off & (cs - 1)) != 0) fail(E_CORRUPT, "L2 table offset " + hex(off) + " is not cluster-aligned (L1 index " + l1i.toString() + ")");
      if ((e & OFLAG_COPIED) == 0) fail(E_CORRUPT, "L2 table at " + hex(off) + " is shared (COPIED not set in L1 entry " + l1i.toString() + ")");
      this.checkNoOverlap(off, cs, "L2 table update", off);
      this.l2Table(off);
      return off;
    }
    const nt = this.refcounts().allocate(1) << this.clusterBits;
    this.checkNoOverlap(nt, cs, "new L2 table", 0);
    // An empty table in the cache, dirty: it reaches the disk before the L1 entry naming it.
    const slot = this.l2.victim();
    this.evictL2(slot);
    const q = this.l2.assign(slot, nt);
    memory.fill(q, 0, <usize>cs);
    this.l2.markDirty(slot);
    this.setL1Entry(l1i, nt | OFLAG_COPIED);
    return nt;
  }

  /** Refcounts, loaded on first use (reads never need them). */
  refcounts(): Refcounts {
    let rc = this.rc;
    if (rc == null) {
      rc = new Refcounts(this.handle, this.h);
      this.rc = rc;
    }
    return rc;
  }

  /** Before the first write: load the refcounts and note which clusters hold L2 tables. */
  startWriting(): void {
    this.refcounts();
    for (let i: u64 = 0; i < <u64>this.h.l1Size; i++) {
      const t = this.l1Entry(i) & L1E_OFFSET_MASK;
      if (t != 0) this.l2Clusters.add(t >> this.clusterBits);
    }
  }

  /**
   * qemu's metadata overlap check: refuse to write `len` bytes at `host` when they would land on
   * the header, the L1 table, the refcount table, a refcount block, the snapshot table or an L2
   * table (other than `ownL2`, the table being written). Only a corrupt image gets here — its
   * refcounts or entries point at metadata — and the write is refused before anything changes.
   */
  checkNoOverlap(host: u64, len: u64, what: string, ownL2: u64): void {
    const h = this.h;
    const cb = this.clusterBits;
    const first = host >> cb;
    const last = (host + len - 1) >> cb;
    let hit = "";
    if (first == 0) hit = "the header";
    else if (h.l1Size > 0 && rangesMeet(host, len, h.l1Offset, <u64>h.l1Size * 8)) hit = "the L1 table";
    else if (rangesMeet(host, len, h.rtOffset, (<u64>h.rtClusters) << cb)) hit = "the refcount table";
    else if (h.nbSnapshots > 0 && rangesMeet(host, len, h.snapshotsOffset, <u64>h.nbSnapshots * 40)) hit = "the snapshot table";
    else {
      const rc = this.refcounts();
      for (let c = first; c <= last; c++) {
        if (rc.blockClusters.has(c)) { hit = "a refcount block"; break; }
        if (this.l2Clusters.has(c) && (c << cb) != ownL2) { hit = "an L2 table"; break; }
      }
    }
    if (hit.length > 0) {
      fail(E_CORRUPT, "preventing invalid write on metadata: " + what + " at " + hex(host) + " (" + len.toString() + " bytes) would overwrite " + hit);
    }
  }

  /** Decrement a cluster's refcount later, when nothing durable references it. */
  freeLater(cluster: u64): void {
    this.pendingFree.push(cluster);
  }

  /** Queue the host clusters a compressed descriptor occupies (one reference each). */
  freeCompressedLater(e: u64): void {
    const cbits = this.clusterBits;
    const shift = csizeShift(cbits);
    const coff = e & ((<u64>1 << shift) - 1);
    const nsec = ((e >> shift) & csizeMask(cbits)) + 1;
    const start = coff & ~(<u64>511);
    const end = start + nsec * 512;
    for (let c = start >> cbits; c <= (end - 1) >> cbits; c++) this.freeLater(c);
  }

  /** Queue the allocation of an L2 entry being replaced (data or compressed clusters). */
  releaseEntry(e: u64): void {
    if ((e & OFLAG_COMPRESSED) != 0) { this.freeCompressedLater(e); return; }
    const host = e & L2E_OFFSET_MASK;
    if (host != 0) this.freeLater(host >> this.clusterBits);
  }

  /**
   * Make every change durable, in the order that keeps a crash harmless (leaks at worst):
   *  1. data clusters (flush)            — before anything points at them;
   *  2. refcount blocks (flush), then the refcount table (flush) — a table entry never precedes its block;
   *  3. the header if the refcount table moved (flush), then the old table is released;
   *  4. L2 tables (flush)                — after the refcounts of what they reference;
   *  5. L1 entries (flush)               — after the L2 tables they reference;
   *  6. deferred frees: refcounts drop only once no durable entry references the cluster.
   */
  flushMetadata(): void {
    const rc = this.rc;
    if (rc == null) return;
    const h = this.handle;
    flush(h);
    if (rc.hasDirtyBlocks()) { rc.writeBlocks(); flush(h); }
    if (rc.rtDirtyHi > rc.rtDirtyLo) { rc.writeTable(); flush(h); }
    if (rc.rtMoved) {
      writeHeader(h, this.h);
      flush(h);
      rc.finishMove();
    }
    let wrote = false;
    const c = this.l2;
    for (let s = 0; s < c.inUse; s++) {
      if (c.isDirty(s)) {
        writeAt(h, c.ptr(s), <i32>this.cs, c.key(s));
        c.markClean(s);
        wrote = true;
      }
    }
    if (wrote) flush(h);
    if (this.l1DirtyHi > this.l1DirtyLo) {
      const lo = this.l1DirtyLo & ~(<u64>63);
      let hi = (this.l1DirtyHi + 63) & ~(<u64>63);
      if (hi > <u64>this.h.l1Size) hi = <u64>this.h.l1Size;
      const n = <usize>(hi - lo);
      const buf = heap.alloc(n * 8);
      for (let k: usize = 0; k < n; k++) putU64(buf + k * 8, this.l1Entry(lo + <u64>k));
      writeAt(h, buf, <i32>(n * 8), this.h.l1Offset + lo * 8);
      heap.free(buf);
      flush(h);
      this.l1DirtyLo = u64.MAX_VALUE;
      this.l1DirtyHi = 0;
    }
    const pf = this.pendingFree;
    if (pf.length > 0) {
      for (let i = 0; i < pf.length; i++) {
        const cl = unchecked(pf[i]);
        const r = rc.get(cl);
        if (r == 0) fail(E_CORRUPT, "refcount underflow freeing cluster " + cl.toString());
        rc.set(cl, r - 1);
      }
      this.pendingFree = new Array<u64>();
      rc.writeBlocks();
      if (rc.rtDirtyHi > rc.rtDirtyLo) { flush(h); rc.writeTable(); }
      flush(h);
    }
  }

  /**
   * Decode the entry for the cluster at index `idx` of L2 table `p`, starting `offIn` bytes into
   * the cluster. Sets `lastLookup` and returns how many bytes from there share its kind (and, with
   * extended L2, its subcluster run).
   */
  decode(p: usize, idx: u64, offIn: u64): u64 {
    const cs = this.cs;
    const e = getU64(p + <usize>(idx * this.entryBytes));
    lastLookup.entry = e;
    if ((e & OFLAG_COMPRESSED) != 0) {
      lastLookup.kind = K_COMPRESSED;
      lastLookup.host = 0;
      return cs - offIn;
    }
    const host = e & L2E_OFFSET_MASK;
    let kind: i32;
    let bytes = cs - offIn;
    if (this.entryBytes == 8) {
      if ((e & OFLAG_ZERO) != 0) {
        if (this.h.version < 3) fail(E_CORRUPT, "zero cluster entry in a v2 image (L2 entry " + hex(e) + ")");
        kind = host != 0 ? K_ZERO_ALLOC : K_ZERO_PLAIN;
      } else {
        kind = host != 0 ? K_NORMAL : K_UNALLOC_PLAIN;
      }
    } else {
      const bm = getU64(p + <usize>(idx * 16) + 8);
      if (host == 0 && (bm & L2_BITMAP_ALL_ALLOC) != 0) {
        fail(E_CORRUPT, "subclusters allocated in an unallocated cluster (L2 bitmap " + hex(bm) + ")");
      }
      if (host != 0 && ((bm >> 32) & bm) != 0) {
        fail(E_CORRUPT, "subclusters both allocated and zero (L2 bitmap " + hex(bm) + ")");
      }
      let sc = <u32>(offIn >> this.scBits);
      kind = subclusterKind(host, bm, sc);
      let end = sc + 1;
      while (end < 32 && subclusterKind(host, bm, end) == kind) end++;
      bytes = ((<u64>end) << this.scBits) - offIn;
    }
    if (host != 0) {
      if ((host & (cs - 1)) != 0) fail(E_CORRUPT, "data cluster offset " + hex(host) + " is not cluster-aligned");
      if (host >= MAX_HOST_OFFSET) fail(E_CORRUPT, "data cluster offset " + hex(host) + " beyond 2^53");
    }
    lastLookup.kind = kind;
    lastLookup.host = kindHasHost(kind) ? host + offIn : 0;
    return bytes;
  }

  /**
   * Find the run starting at `off` (at most `max` bytes, never crossing an L2 table) whose bytes
   * share one kind and, for kinds with a host offset, contiguous host offsets. Sets `lastLookup`.
   */
  lookup(off: u64, max: u64): u64 {
    const cs = this.cs;
    const span = this.clusterBits + this.l2Bits;
    const l1i = off >> span;
    const tableEnd = (l1i + 1) << span;
    let limit = tableEnd - off;
    if (max < limit) limit = max;
    if (l1i >= <u64>this.h.l1Size) {
      lastLookup.kind = K_UNALLOC_PLAIN; lastLookup.host = 0; lastLookup.entry = 0;
      return limit;
    }
    const l2Off = this.l1Entry(l1i) & L1E_OFFSET_MASK;
    if (l2Off == 0) {
      lastLookup.kind = K_UNALLOC_PLAIN; lastLookup.host = 0; lastLookup.entry = 0;
      return limit;
    }
    if ((l2Off & (cs - 1)) != 0) fail(E_CORRUPT, "L2 table offset " + hex(l2Off) + " is not cluster-aligned (L1 index " + l1i.toString() + ")");
    const p = this.l2Table(l2Off);
    let idx = (off >> this.clusterBits) & (this.l2Entries - 1);
    let total = this.decode(p, idx, off & (cs - 1));
    const kind = lastLookup.kind;
    const host = lastLookup.host;
    const entry = lastLookup.entry;
    if (kind != K_COMPRESSED) {
      const withHost = kindHasHost(kind);
      // All-zero entries are unallocated clusters: in a run of them (a sparse layer's holes, which
      // map and convert ask every layer of a chain about) they are skipped without decoding.
      const plainHoles = kind == K_UNALLOC_PLAIN && this.entryBytes == 8;
      while (total < limit && ((off + total) & (cs - 1)) == 0) {
        idx++;
        if (plainHoles) {
          // Entries still wanted; the run never crosses the table (limit stops at its end).
          const left = (limit - total + cs - 1) >> this.clusterBits;
          let k: u64 = 0;
          while (k < left && load<u64>(p + <usize>((idx + k) << 3)) == 0) k++;
          total += k << this.clusterBits;
          if (k == left) break;
          idx += k;
        }
        const n = this.decode(p, idx, 0);
        if (lastLookup.kind != kind || (withHost && lastLookup.host != host + total)) break;
        total += n;
        if (n < cs) break;
      }
    }
    lastLookup.kind = kind; lastLookup.host = host; lastLookup.entry = entry;
    return total < limit ? total : limit;
  }

  /**
   * Enlarge the L1 table to `needed` entries (the header names the new table; the size is
   * unchanged). The new table goes to new clusters and replaces the old one only once it is
   * durable (the header switch is the commit point); the old table is freed after.
   */
  growL1(needed: u64): void {
    const h = this.h;
    if (needed > <u64>h.l1Size) {
      const rc = this.refcounts();
      const bytes = needed * 8;
      const clusters = (bytes + this.cs - 1) >> this.clusterBits;
      const first = rc.allocate(clusters) << this.clusterBits;
      const nl1 = heap.alloc(<usize>bytes);
      memory.fill(nl1, 0, <usize>bytes);
      memory.copy(nl1, this.l1, <usize>h.l1Size * 8);
      const disk = heap.alloc(<usize>bytes);
      for (let i: u64 = 0; i < needed; i++) putU64(disk + <usize>(i * 8), load<u64>(nl1 + <usize>(i * 8)));
      writeAt(this.handle, disk, <i32>bytes, first);
      heap.free(disk);
      const oldOff = h.l1Offset;
      const oldClusters = ((<u64>h.l1Size * 8) + this.cs - 1) >> this.clusterBits;
      // New table and its refcounts durable, then the header names it, then the old one goes.
      flush(this.handle);
      rc.writeBlocks(); flush(this.handle);
      if (rc.rtDirtyHi > rc.rtDirtyLo) { rc.writeTable(); flush(this.handle); }
      heap.free(this.l1);
      this.l1 = nl1;
      h.l1Offset = first;
      h.l1Size = <u32>needed;
      writeHeader(this.handle, h);
      flush(this.handle);
      rc.finishMove();
      if (oldOff != 0) for (let c: u64 = 0; c < oldClusters; c++) this.freeLater((oldOff >> this.clusterBits) + c);
      this.flushMetadata();
    }
  }

  dispose(): void {
    heap.free(this.l1);
    this.l2.dispose();
    const rc = this.rc;
    if (rc != null) rc.dispose();
  }
}

function subclusterKind(host: u64, bm: u64, sc: u32): i32 {
  const zero = (bm >> (32 + sc)) & 1;
  const alloc = (bm >> sc) & 1;
  if (host != 0) return zero != 0 ? K_ZERO_ALLOC : (alloc != 0 ? K_NORMAL : K_UNALLOC_ALLOC);
  return zero != 0 ? K_ZERO_PLAIN : K_UNALLOC_PLAIN;
}

function rangesMeet(a: u64, alen: u64, b: u64, blen: u64): bool {
  return blen > 0 && a < b + blen && b < a + alen;
}
