// An open qcow2 image: L1 in memory, L2 tables through a bounded cache, guest reads through the
// backing chain, per-layer block status. The write side lives in write.ts.
import { Image, lastStatus } from "./image";
import { Header, parseHeader, writeHeader, l1EntriesFor, MAX_HOST_OFFSET, INCOMPAT_DIRTY, INCOMPAT_CORRUPT } from "./header";
import { getU64, putU64 } from "./be";
import { readTable, readZeroFill, decompress, fileSize, fileEnd, flush, writeAt, crypt } from "./io";
import { readSnapshotTable } from "./snapshots";
import { checkBitmaps } from "./bitmaps";
import { TableCache } from "./tablecache";
import { Refcounts } from "./refcount";
import { Writer } from "./write";
import {
  fail, hex, E_CORRUPT, E_DECOMPRESS, E_READ_ONLY, E_INTERNAL_SNAPSHOTS, E_MARKED_CORRUPT, E_DIRTY, E_BAD_SIZE, E_BAD_ARGUMENT,
} from "./errors";
import {
  L1E_OFFSET_MASK, L2E_OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_ZERO, L2_BITMAP_ALL_ALLOC,
  K_UNALLOC_PLAIN, K_UNALLOC_ALLOC, K_ZERO_PLAIN, K_ZERO_ALLOC, K_NORMAL, K_COMPRESSED,
  kindHasHost, csizeShift, csizeMask, ST_DATA, ST_ZERO, ST_OFFSET_VALID,
} from "./layout";

/** Memory for cached L2 tables per image: fixed, whatever the image size. */
const L2_CACHE_BYTES: usize = 4 << 20;
const MAX_IO: u64 = 1 << 30;

/** What the last lookup found: kind, host offset of the first byte, raw L2 entry. */
class Lookup {
  kind: i32 = 0;
  host: u64 = 0;
  entry: u64 = 0;
}
export const lastLookup = new Lookup();

export class Qcow2Image extends Image {
  h: Header;
  cs: u64;
  clusterBits: u32;
  l2Bits: u32;
  l2Entries: u64;
  entryBytes: u32;
  scBits: u32;
  l1: usize;
  l2: TableCache;
  /** Decompressed cluster and the compressed descriptor it came from. */
  private zOut: usize = 0;
  private zIn: usize = 0;
  private zKey: u64 = 0;
  /** LUKS (crypt_method 2): data clusters hold ciphertext, sector IVs from their host offsets. */
  encrypted: bool = false;
  /** One cluster of scratch for encrypting and decrypting partial ranges. */
  private cryptBuf: usize = 0;
  /** End of the file as last seen (it only grows under us); refreshed when a cluster lies past it. */
  private knownEnd: u64 = 0;

  // --- write side state (see flushMetadata for the order in which it reaches the disk) ---
  private rc: Refcounts | null = null;
  l1DirtyLo: u64 = u64.MAX_VALUE;
  l1DirtyHi: u64 = 0;
  headerDirty: bool = false;
  /** Clusters to dereference once no durable L2/L1 entry points at them any more. */
  pendingFree: Array<u64> = new Array<u64>();
  private writeReady: bool = false;
  private writerObj: Writer | null = null;
  /** Host clusters holding L2 tables (for the metadata overlap check), built by prepareWrite. */
  l2Clusters: Set<u64> = new Set<u64>();

  /** Open flags (see openQcow2): writable; forCheck opens as `qemu-img check` does. */
  static readonly WRITABLE: i32 = 1;
  static readonly FOR_CHECK: i32 = 2;

  constructor(handle: i32, flags: i32) {
    super(handle, (flags & Qcow2Image.WRITABLE) != 0);
    const forCheck = (flags & Qcow2Image.FOR_CHECK) != 0;
    const h = parseHeader(handle, forCheck);
    // qemu reads the snapshot table on open, except in check mode (the check judges it), and the
    // bitmaps whenever the autoclear bit says they are valid.
    if (!forCheck) readSnapshotTable(handle, h);
    checkBitmaps(handle, h, h.size);
    const cs = h.clusterSize;
    this.h = h;
    this.clusterBits = h.clusterBits;
    this.cs = cs;
    this.l2Bits = h.l2Bits;
    this.l2Entries = <u64>1 << h.l2Bits;
    this.entryBytes = h.extendedL2 ? 16 : 8;
    this.encrypted = h.cryptMethod == 2;
    this.scBits = h.clusterBits - 5;
    // The L1 table is validated by parseHeader (≤ 32 MiB), then held natively for cheap indexing.
    // Checked before anything is allocated: an engine error unwinds without freeing, so a failed
    // open must not own native memory yet.
    const n = <usize>h.l1Size;
    // qemu reads what lies past the end of the file as zeros. An L1 table reaching past it by a
    // cluster or more is what qemu-img check calls corrupt ("exceeding the end of the file by
    // one cluster or more"), and we refuse it (qemu would allocate all of it, up to 32 MiB);
    // less than that is a last cluster the file only partly holds, read as qemu reads it.
    if (n > 0 && h.l1Offset + <u64>n * 8 >= fileEnd(handle) + cs) {
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

  virtualSize(): u64 { return this.h.size; }
  formatName(): string { return "qcow2"; }
  supportsBacking(): bool { return true; }
  isDirty(): bool { return (this.h.incompat & INCOMPAT_DIRTY) != 0; }
  isMarkedCorrupt(): bool { return (this.h.incompat & INCOMPAT_CORRUPT) != 0; }

  l1Entry(i: u64): u64 { return load<u64>(this.l1 + <usize>i * 8); }

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

  /** Make room in an L2 cache slot. A dirty table may only leave through flushMetadata. */
  evictL2(slot: i32): void {
    if (this.l2.isDirty(slot)) this.flushMetadata();
    this.l2.drop(this.l2.key(slot));
  }

  markL2Dirty(tableOff: u64): void {
    this.l2.markDirty(this.l2.find(tableOff));
  }

  setL1Entry(i: u64, v: u64): void {
    const old = this.l1Entry(i) & L1E_OFFSET_MASK;
    if (old != 0) this.l2Clusters.delete(old >> this.clusterBits);
    if ((v & L1E_OFFSET_MASK) != 0) this.l2Clusters.add((v & L1E_OFFSET_MASK) >> this.clusterBits);
    store<u64>(this.l1 + <usize>i * 8, v);
    if (i < this.l1DirtyLo) this.l1DirtyLo = i;
    if (i + 1 > this.l1DirtyHi) this.l1DirtyHi = i + 1;
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

  /**
   * Refuse what we cannot write safely; clear autoclear bits we do not maintain (bitmaps become
   * stale the moment we write, and the cleared bit tells qemu so) before the first write.
   */
  prepareWrite(): void {
    if (this.writeReady) return;
    const h = this.h;
    if (!this.writable) fail(E_READ_ONLY, "image was opened read-only");
    if ((h.incompat & INCOMPAT_CORRUPT) != 0) fail(E_MARKED_CORRUPT, "image is marked corrupt; repair it with check -r all");
    if ((h.incompat & INCOMPAT_DIRTY) != 0) fail(E_DIRTY, "image has the dirty bit set (lazy refcounts); repair it with check -r all before writing");
    if (h.nbSnapshots > 0) fail(E_INTERNAL_SNAPSHOTS, "image has " + h.nbSnapshots.toString() + " internal snapshots; writing to it is not supported");
    if (h.autoclear != 0) {
      h.autoclear = 0;
      writeHeader(this.handle, h);
      flush(this.handle);
    }
    this.refcounts();
    for (let i: u64 = 0; i < <u64>h.l1Size; i++) {
      const t = this.l1Entry(i) & L1E_OFFSET_MASK;
      if (t != 0) this.l2Clusters.add(t >> this.clusterBits);
    }
    this.writeReady = true;
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
    if (rc.rtMoved || this.headerDirty) {
      writeHeader(h, this.h);
      flush(h);
      this.headerDirty = false;
      rc.finishMove();
    }
    let wrote = false;
    const c = this.l2;
    for (let s = 0; s < c.slots; s++) {
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
      kind = this.subclusterKind(host, bm, sc);
      let end = sc + 1;
      while (end < 32 && this.subclusterKind(host, bm, end) == kind) end++;
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

  private subclusterKind(host: u64, bm: u64, sc: u32): i32 {
    const zero = (bm >> (32 + sc)) & 1;
    const alloc = (bm >> sc) & 1;
    if (host != 0) return zero != 0 ? K_ZERO_ALLOC : (alloc != 0 ? K_NORMAL : K_UNALLOC_ALLOC);
    return zero != 0 ? K_ZERO_PLAIN : K_UNALLOC_PLAIN;
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
      while (total < limit && ((off + total) & (cs - 1)) == 0) {
        idx++;
        const n = this.decode(p, idx, 0);
        if (lastLookup.kind != kind || (withHost && lastLookup.host != host + total)) break;
        total += n;
        if (n < cs) break;
      }
    }
    lastLookup.kind = kind; lastLookup.host = host; lastLookup.entry = entry;
    return total < limit ? total : limit;
  }

  read(off: u64, ptr: usize, len: u64): void {
    while (len > 0) {
      const n = this.lookup(off, len);
      const kind = lastLookup.kind;
      if (kind == K_NORMAL) {
        this.checkInFile(lastLookup.host, n, off);
        if (this.encrypted) { this.readDecrypted(lastLookup.host, ptr, n); off += n; ptr += <usize>n; len -= n; continue; }
        let done: u64 = 0;
        while (done < n) {
          const m = n - done < MAX_IO ? n - done : MAX_IO;
          readZeroFill(this.handle, ptr + <usize>done, <i32>m, lastLookup.host + done);
          done += m;
        }
      } else if (kind == K_ZERO_PLAIN || kind == K_ZERO_ALLOC) {
        memory.fill(ptr, 0, <usize>n);
      } else if (kind == K_COMPRESSED) {
        const src = this.decompressed(lastLookup.entry, off);
        memory.copy(ptr, src + <usize>(off & (this.cs - 1)), <usize>n);
      } else {
        this.readBacking(off, ptr, n);
      }
      off += n; ptr += <usize>n; len -= n;
    }
  }

  private cryptScratch(): usize {
    if (this.cryptBuf == 0) this.cryptBuf = heap.alloc(<usize>this.cs);
    return this.cryptBuf;
  }

  /**
   * Read `len` bytes of ciphertext at `host` and decrypt them into `ptr`. The cipher works on
   * whole 512-byte sectors, so each piece (at most a cluster) is read sector-aligned through a
   * scratch cluster, unless it is aligned already.
   */
  readDecrypted(host: u64, ptr: usize, len: u64): void {
    const cs = this.cs;
    while (len > 0) {
      let n = cs - (host & (cs - 1));
      if (n > len) n = len;
      const s0 = host & ~(<u64>511);
      const s1 = (host + n + 511) & ~(<u64>511);
      if (s0 == host && s1 == host + n) {
        readZeroFill(this.handle, ptr, <i32>n, host);
        crypt(this.handle, false, ptr, <i32>n, host);
      } else {
        const buf = this.cryptScratch();
        readZeroFill(this.handle, buf, <i32>(s1 - s0), s0);
        crypt(this.handle, false, buf, <i32>(s1 - s0), s0);
        memory.copy(ptr, buf + <usize>(host - s0), <usize>n);
      }
      host += n; ptr += <usize>n; len -= n;
    }
  }

  /**
   * Encrypt `len` bytes of guest data from `ptr` and write them at `host`, a piece (at most a
   * cluster) at a time through the scratch cluster; the caller's buffer is left as it was. A
   * piece that does not cover whole sectors keeps the other bytes of its first and last sector
   * (read and decrypted first).
   */
  writeEncrypted(host: u64, ptr: usize, len: u64): void {
    const cs = this.cs;
    const buf = this.cryptScratch();
    while (len > 0) {
      let n = cs - (host & (cs - 1));
      if (n > len) n = len;
      const s0 = host & ~(<u64>511);
      const s1 = (host + n + 511) & ~(<u64>511);
      if (s0 != host || s1 != host + n) {
        readZeroFill(this.handle, buf, <i32>(s1 - s0), s0);
        crypt(this.handle, false, buf, <i32>(s1 - s0), s0);
      }
      memory.copy(buf + <usize>(host - s0), ptr, <usize>n);
      crypt(this.handle, true, buf, <i32>(s1 - s0), s0);
      writeAt(this.handle, buf, <i32>(s1 - s0), s0);
      host += n; ptr += <usize>n; len -= n;
    }
  }

  /**
   * A data cluster that starts at or past the end of the file is corruption (qemu-img check:
   * "exceeding the end of the file by one cluster or more"); qemu's read path would return zeros.
   */
  private checkInFile(host: u64, n: u64, guestOff: u64): void {
    const last = (host + n - 1) & ~(this.cs - 1);
    if (last < this.knownEnd) return;
    this.knownEnd = fileEnd(this.handle);
    if (last >= this.knownEnd) {
      fail(E_CORRUPT, "data cluster at " + hex(last) + " for guest offset " + guestOff.toString() + " lies past the end of the file (" + this.knownEnd.toString() + " bytes)");
    }
  }

  /** The guest cluster of a compressed descriptor, decompressed (one cluster kept). */
  decompressed(e: u64, guestOff: u64): usize {
    const cbits = this.clusterBits;
    const shift = csizeShift(cbits);
    const coff = e & ((<u64>1 << shift) - 1);
    const nsec = ((e >> shift) & csizeMask(cbits)) + 1;
    const csize = nsec * 512 - (coff & 511);
    const key = e & ~(<u64>3 << 62);
    if (this.zOut != 0 && this.zKey == key) return this.zOut;
    if (this.zOut == 0) {
      this.zOut = heap.alloc(<usize>this.cs);
      this.zIn = heap.alloc(<usize>(this.cs * 2));
    }
    this.zKey = 0;
    if (coff >= MAX_HOST_OFFSET) fail(E_CORRUPT, "compressed cluster offset " + hex(coff) + " beyond 2^53");
    readZeroFill(this.handle, this.zIn, <i32>csize, coff);
    const got = decompress(<i32>this.h.compressionType, this.zIn, <i32>csize, this.zOut, <i32>this.cs);
    if (<u64>got != this.cs) {
      fail(E_DECOMPRESS, "compressed cluster for guest offset " + guestOff.toString() + " (host " + hex(coff) + ", " + csize.toString() + " bytes) did not decompress to " + this.cs.toString() + " bytes");
    }
    this.zKey = key;
    return this.zOut;
  }

  ownStatus(off: u64, bytes: u64): u64 {
    const n = this.lookup(off, bytes);
    const k = lastLookup.kind;
    let f = 0;
    if (k == K_NORMAL || k == K_COMPRESSED) f = ST_DATA;
    else if (k == K_ZERO_PLAIN || k == K_ZERO_ALLOC) f = ST_ZERO;
    if (kindHasHost(k)) f |= ST_OFFSET_VALID;
    lastStatus.flags = f;
    lastStatus.offset = lastLookup.host;
    return n;
  }

  writer(): Writer {
    let w = this.writerObj;
    if (w == null) { w = new Writer(this); this.writerObj = w; }
    return w;
  }

  write(off: u64, ptr: usize, len: u64): void { this.writer().write(off, ptr, len); }
  writeCompressed(off: u64, ptr: usize, len: u64): void { this.writer().writeCompressed(off, ptr, len); }
  allocationUnit(): u64 { return this.cs; }
  zero(off: u64, len: u64, unmap: bool): void { this.writer().zero(off, len, unmap); }
  discard(off: u64, len: u64): void { this.writer().discard(off, len); }

  /**
   * Grow the virtual size. A larger L1 table goes to new clusters and replaces the old one only
   * once it is durable (the header switch is the commit point); the old table is freed after.
   * Where a backing file is longer than the old size, the new range is first made to read as
   * zeros (qemu's bdrv_co_truncate), else the backing file's bytes would show through; the size
   * switch comes last, so an interrupted grow leaves the old size and a re-run redoes it.
   */
  grow(size: u64): void {
    const h = this.h;
    // qemu's qcow2 truncate refuses a partial sector: the guest only ever sees whole sectors.
    if ((size & 511) != 0) fail(E_BAD_ARGUMENT, "new size " + size.toString() + " is not a multiple of 512");
    if (size <= h.size) return;
    this.prepareWrite();
    if (size > MAX_HOST_OFFSET) fail(E_BAD_SIZE, "virtual size " + size.toString() + " exceeds 2^53 bytes");
    const needed = l1EntriesFor(size, this.clusterBits, this.l2Bits);
    if (needed > (32 << 20) / 8) fail(E_BAD_SIZE, "virtual size " + size.toString() + " needs an L1 table larger than 32 MiB");
    this.flushMetadata();
    const old = h.size;
    this.growL1(needed);
    const b = this.backing;
    if (b != null && b.virtualSize() > old) {
      // Up to the end of the backing file (past it, unallocated reads as zeros), in whole clusters
      // beyond the old size: the writer then only reads the guest view of the old last cluster.
      let end = b.virtualSize() < size ? b.virtualSize() : size;
      end = (end + this.cs - 1) & ~(this.cs - 1);
      this.writer().zero(old, end - old, false);
      this.flushMetadata();
    }
    h.size = size;
    writeHeader(this.handle, h);
    flush(this.handle);
  }

  /** Enlarge the L1 table to `needed` entries (the header names the new table; the size is unchanged). */
  private growL1(needed: u64): void {
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

  fileLength(): u64 { return fileSize(this.handle); }

  flush(): void {
    this.flushMetadata();
    flush(this.handle);
  }

  close(): void {
    heap.free(this.l1);
    this.l2.dispose();
    const rc = this.rc;
    if (rc != null) rc.dispose();
    const w = this.writerObj;
    if (w != null) w.dispose();
    if (this.zOut != 0) { heap.free(this.zOut); heap.free(this.zIn); }
    if (this.cryptBuf != 0) heap.free(this.cryptBuf);
  }
}

function rangesMeet(a: u64, alen: u64, b: u64, blen: u64): bool {
  return blen > 0 && a < b + blen && b < a + alen;
}
