// Guest writes into a qcow2 image: in place where a cluster is ours alone (COPIED), otherwise into
// newly allocated clusters (copy-on-write of the partial head/tail from whatever the guest saw
// before). Metadata changes stay in the mapping until Mapping.flushMetadata() orders them to disk.
import { Image, writeZeroData } from "./image";
import { Mapping } from "./mapping";
import { DataCipher } from "./cipher";
import { getU64, putU64 } from "./be";
import { writeAt, fileSize, truncateTo, compress } from "./io";
import { ZERO_BLOCK, allZero, dataEnd } from "./zero-scan";
import { fail, hex, E_BAD_ARGUMENT } from "./errors";
import {
  L1E_OFFSET_MASK, L2E_OFFSET_MASK, OFLAG_COPIED, OFLAG_COMPRESSED, OFLAG_ZERO, L2_BITMAP_ALL_ALLOC, L2_BITMAP_ALL_ZEROES,
  csizeShift,
} from "./layout";

/** Largest single host write of freshly allocated clusters. */
const MAX_RUN_BYTES: u64 = 16 << 20;

/** Guest content of one whole cluster as it reads now (the old data a partial write keeps). */
function readCluster(img: Image, cs: u64, clusterStart: u64, buf: usize): void {
  const size = img.virtualSize();
  let n = cs;
  if (clusterStart + n > size) {
    // Past the virtual size the guest sees zeros (a grow zeroes its new range before the size
    // switches, writing clusters wholly past the old end).
    n = clusterStart < size ? size - clusterStart : 0;
    memory.fill(buf + <usize>n, 0, <usize>(cs - n));
  }
  if (n > 0) img.read(clusterStart, buf, n);
}

/** Granularity at which freshly appended data skips zeros (qemu-img convert's default -S). */

/**
 * Write `len` bytes of new clusters at `host`. When they lie wholly past the end of the file —
 * bytes no one ever wrote, which read as zeros — all-zero blocks are left as holes and only the
 * rest is written (a copy-on-write cluster is mostly zeros when its backing had nothing there).
 * Reused clusters inside the file are written whole: they may hold stale bytes.
 */
function writeFresh(handle: i32, ptr: usize, len: u64, host: u64): void {
  const eof = fileSize(handle);
  if (host < eof) { writeAt(handle, ptr, <i32>len, host); return; }
  let i: u64 = 0;
  let written: u64 = 0;
  // Blocks of 4 KiB, the last one cut at `len`: clusters under 4 KiB (512 B to 2 KiB) end inside
  // a block, and a whole block would read past the buffer and write what lies there (the engine's
  // heap) into the file beyond the clusters.
  while (i < len) {
    const b = len - i < ZERO_BLOCK ? len - i : ZERO_BLOCK;
    if (allZero(ptr + <usize>i, b)) { i += b; continue; }
    const j = dataEnd(ptr, i + b, len);
    writeAt(handle, ptr + <usize>i, <i32>(j - i), host + i);
    i = j;
    written = j;
  }
  // A trailing hole still has to exist: the clusters are referenced, so the file must cover them.
  // A write that reached the end already made it so: no size to ask (a system call per cluster
  // on the host: 3615 of the 7242 fstats of bench workload (a)'s commit).
  if (written < len && fileSize(handle) < host + len) truncateTo(handle, host + len);
}

/**
 * The write side of one qcow2 image. Its callers go through Qcow2Image, which refuses what cannot
 * be written safely (prepareWrite) before any of these runs.
 */
export class Writer {
  private scratch: usize = 0;
  private packed: usize = 0;
  /** `img` is the image `map` maps: the guest view a partial write keeps comes from its reads. */
  constructor(public img: Image, public map: Mapping, public cipher: DataCipher | null) {}

  private buf(): usize {
    if (this.scratch == 0) this.scratch = heap.alloc(<usize>this.map.cs);
    return this.scratch;
  }

  /** Guest data to a host offset, refused if it would land on metadata (a corrupt image). */
  private dataWrite(ptr: usize, len: u64, host: u64): void {
    this.map.checkNoOverlap(host, len, "data write", 0);
    const cipher = this.cipher;
    if (cipher != null) cipher.writeEncrypted(host, ptr, len);
    else writeAt(this.map.handle, ptr, <i32>len, host);
  }

  dispose(): void {
    if (this.scratch != 0) heap.free(this.scratch);
    if (this.packed != 0) heap.free(this.packed);
  }

  /**
   * One guest cluster at `off` (cluster-aligned), compressed, as qemu's compressed write stores
   * it: `ptr` holds a whole cluster (`len` guest bytes, the rest of the last cluster zero-padded
   * by the caller). It is compressed with the image's compression type; when the result is not
   * smaller than a cluster (qemu's limit: cluster size - 1 bytes), the guest bytes are written as
   * a normal cluster instead. Like qemu, a compressed write never replaces an allocated cluster.
   */
  writeCompressed(off: u64, ptr: usize, len: u64): void {
    const map = this.map;
    // qemu refuses compressed writes to encrypted images too: compressed data is never encrypted.
    if (this.cipher != null) fail(E_BAD_ARGUMENT, "compressed output cannot be written to an encrypted image");
    const cs = map.cs;
    const cb = map.clusterBits;
    if (this.packed == 0) this.packed = heap.alloc(<usize>cs);
    const n = compress(<i32>map.h.compressionType, ptr, <i32>cs, this.packed, <i32>(cs - 1));
    if (n <= 0) { this.write(off, ptr, len); return; }
    const table = map.tableForWrite(off >> (cb + map.l2Bits));
    const p = map.entryPtr(table, (off >> cb) & (map.l2Entries - 1));
    const e = getU64(p);
    if ((e & OFLAG_COMPRESSED) != 0 || (e & L2E_OFFSET_MASK) != 0) {
      fail(E_BAD_ARGUMENT, "compressed write at guest offset " + off.toString() + ": the cluster is already allocated (L2 entry " + hex(e) + ")");
    }
    const host = map.refcounts().allocateBytes(<u64>n);
    map.checkNoOverlap(host, <u64>n, "compressed data write", 0);
    writeAt(map.handle, this.packed, n, host);
    // The descriptor counts the 512-byte sectors it reaches into, less one.
    const sectors = ((host + <u64>n - 1) >> 9) - (host >> 9);
    putU64(p, OFLAG_COMPRESSED | (sectors << csizeShift(cb)) | host);
    if (map.entryBytes == 16) putU64(p + 8, 0);
    map.markL2Dirty(table);
  }

  /** Write `len` bytes from `ptr` at guest offset `off`. */
  write(off: u64, ptr: usize, len: u64): void {
    const map = this.map;
    const cs = map.cs;
    while (len > 0) {
      const l1i = off >> (map.clusterBits + map.l2Bits);
      const table = map.tableForWrite(l1i);
      const tableEnd = (l1i + 1) << (map.clusterBits + map.l2Bits);
      const inTable = tableEnd - off < len ? tableEnd - off : len;
      let done: u64 = 0;
      while (done < inTable) {
        const o = off + done;
        const offIn = o & (cs - 1);
        let n = cs - offIn;
        if (n > inTable - done) n = inTable - done;
        if (offIn == 0 && n == cs && map.entryBytes == 8) {
          // A run of whole clusters: in place where possible, else one fresh contiguous run.
          done += this.writeWholeClusters(table, o, ptr + <usize>done, inTable - done);
          continue;
        }
        if (map.entryBytes == 8) this.writePartial(table, o, ptr + <usize>done, n);
        else this.writeSubclusters(table, o, ptr + <usize>done, n);
        done += n;
      }
      off += inTable; ptr += <usize>inTable; len -= inTable;
    }
  }

  /**
   * Whole clusters from `o` (cluster-aligned, standard L2), at most `max` bytes, within one L2
   * table. Returns the bytes consumed (≥ one cluster).
   */
  private writeWholeClusters(table: u64, o: u64, ptr: usize, max: u64): u64 {
    const map = this.map;
    const cs = map.cs;
    const cb = map.clusterBits;
    const idx0 = (o >> cb) & (map.l2Entries - 1);
    const whole = max >> cb;
    const e0 = getU64(map.entryPtr(table, idx0));
    const host0 = e0 & L2E_OFFSET_MASK;
    if ((e0 & OFLAG_COMPRESSED) == 0 && host0 != 0 && (e0 & OFLAG_COPIED) != 0) {
      // Ours alone: overwrite in place, as far as the host run stays contiguous.
      let k: u64 = 1;
      while (k < whole && k * cs < MAX_RUN_BYTES) {
        const e = getU64(map.entryPtr(table, idx0 + k));
        if ((e & OFLAG_COMPRESSED) != 0 || (e & OFLAG_COPIED) == 0 || (e & L2E_OFFSET_MASK) != host0 + k * cs) break;
        k++;
      }
      this.dataWrite(ptr, k * cs, host0);
      let dirty = false;
      for (let j: u64 = 0; j < k; j++) {
        const p = map.entryPtr(table, idx0 + j);
        const e = getU64(p);
        if ((e & OFLAG_ZERO) != 0) { putU64(p, e & ~OFLAG_ZERO); dirty = true; }
      }
      if (dirty) map.markL2Dirty(table);
      return k * cs;
    }
    // Needs new clusters: gather the run of entries that are not ours-in-place.
    let k: u64 = 1;
    while (k < whole && k * cs < MAX_RUN_BYTES) {
      const e = getU64(map.entryPtr(table, idx0 + k));
      if ((e & OFLAG_COMPRESSED) == 0 && (e & L2E_OFFSET_MASK) != 0 && (e & OFLAG_COPIED) != 0) break;
      k++;
    }
    const first = map.refcounts().allocate(k) << cb;
    this.dataWrite(ptr, k * cs, first);
    for (let j: u64 = 0; j < k; j++) {
      const p = map.entryPtr(table, idx0 + j);
      map.releaseEntry(getU64(p));
      putU64(p, (first + j * cs) | OFLAG_COPIED);
    }
    map.markL2Dirty(table);
    return k * cs;
  }

  /**
   * Whole clusters at scattered, cluster-aligned guest offsets `guests[from..from+count)`, their
   * data back to back at `ptr` (standard L2 only). Clusters already ours alone are overwritten in
   * place; all the others go to one freshly allocated contiguous run written with one host call
   * (their data is first compacted within `ptr`, so the buffer's contents are not preserved).
   */
  writeClusters(guests: StaticArray<u64>, from: i32, count: i32, ptr: usize): void {
    const map = this.map;
    const cs = map.cs;
    const cb = map.clusterBits;
    const span = cb + map.l2Bits;
    let fresh = 0;
    for (let k = 0; k < count; k++) {
      const g = unchecked(guests[from + k]);
      const table = map.tableForWrite(g >> span);
      const p = map.entryPtr(table, (g >> cb) & (map.l2Entries - 1));
      const e = getU64(p);
      const host = e & L2E_OFFSET_MASK;
      const src = ptr + <usize>(<u64>k * cs);
      if ((e & OFLAG_COMPRESSED) == 0 && host != 0 && (e & OFLAG_COPIED) != 0) {
        this.dataWrite(src, cs, host);
        if ((e & OFLAG_ZERO) != 0) { putU64(p, e & ~OFLAG_ZERO); map.markL2Dirty(table); }
        // Marks the cluster as done for the second pass.
        unchecked(guests[from + k] = g | 1);
      } else {
        if (fresh != k) memory.copy(ptr + <usize>(<u64>fresh * cs), src, <usize>cs);
        fresh++;
      }
    }
    if (fresh == 0) return;
    const first = map.refcounts().allocate(<u64>fresh) << cb;
    map.checkNoOverlap(first, <u64>fresh * cs, "data write", 0);
    // Ciphertext of zeros is not zeros: an encrypted image gets every byte written.
    const cipher = this.cipher;
    if (cipher != null) cipher.writeEncrypted(first, ptr, <u64>fresh * cs);
    else writeFresh(map.handle, ptr, <u64>fresh * cs, first);
    let j: u64 = 0;
    for (let k = 0; k < count; k++) {
      const g = unchecked(guests[from + k]);
      if ((g & 1) != 0) { unchecked(guests[from + k] = g & ~(<u64>1)); continue; }
      const table = map.tableForWrite(g >> span);
      const p = map.entryPtr(table, (g >> cb) & (map.l2Entries - 1));
      map.releaseEntry(getU64(p));
      putU64(p, (first + j * cs) | OFLAG_COPIED);
      map.markL2Dirty(table);
      j++;
    }
  }

  /** Part of one cluster (standard L2). */
  private writePartial(table: u64, o: u64, ptr: usize, n: u64): void {
    const map = this.map;
    const cs = map.cs;
    const idx = (o >> map.clusterBits) & (map.l2Entries - 1);
    const offIn = o & (cs - 1);
    const e = getU64(map.entryPtr(table, idx));
    const host = e & L2E_OFFSET_MASK;
    const ours = (e & OFLAG_COMPRESSED) == 0 && host != 0 && (e & OFLAG_COPIED) != 0;
    if (ours && (e & OFLAG_ZERO) == 0) {
      this.dataWrite(ptr, n, host + offIn);
      return;
    }
    const buf = this.buf();
    readCluster(this.img, map.cs, o - offIn, buf);
    memory.copy(buf + <usize>offIn, ptr, <usize>n);
    if (ours) {
      // A preallocated zero cluster: fill it, then drop the zero flag.
      this.dataWrite(buf, cs, host);
      putU64(map.entryPtr(table, idx), e & ~OFLAG_ZERO);
    } else {
      const nc = map.refcounts().allocate(1) << map.clusterBits;
      this.dataWrite(buf, cs, nc);
      const p = map.entryPtr(table, idx);
      map.releaseEntry(getU64(p));
      putU64(p, nc | OFLAG_COPIED);
    }
    map.markL2Dirty(table);
  }

  /** Part of one cluster with extended L2: write whole subclusters, keep the others as they were. */
  private writeSubclusters(table: u64, o: u64, ptr: usize, n: u64): void {
    const map = this.map;
    const cs = map.cs;
    const scb = map.scBits;
    const idx = (o >> map.clusterBits) & (map.l2Entries - 1);
    const offIn = o & (cs - 1);
    const p = map.entryPtr(table, idx);
    const e = getU64(p);
    const bm = getU64(p + 8);
    const host = e & L2E_OFFSET_MASK;
    const buf = this.buf();
    const cstart = o - offIn;
    if ((e & OFLAG_COMPRESSED) != 0 || (host != 0 && (e & OFLAG_COPIED) == 0)) {
      // Cannot keep part of a compressed or shared cluster: rewrite all of it into a new one.
      readCluster(this.img, map.cs, cstart, buf);
      memory.copy(buf + <usize>offIn, ptr, <usize>n);
      const nc = map.refcounts().allocate(1) << map.clusterBits;
      this.dataWrite(buf, cs, nc);
      map.releaseEntry(e);
      putU64(p, nc | OFLAG_COPIED);
      putU64(p + 8, L2_BITMAP_ALL_ALLOC);
      map.markL2Dirty(table);
      return;
    }
    const sc0 = <u32>(offIn >> scb);
    const sc1 = <u32>((offIn + n + (<u64>1 << scb) - 1) >> scb);
    const lo = (<u64>sc0) << scb;
    const hi = (<u64>sc1) << scb;
    if (lo != offIn || hi != offIn + n) {
      // Partial subclusters at either end keep the bytes the guest saw there.
      readCluster(this.img, map.cs, cstart, buf);
    }
    memory.copy(buf + <usize>offIn, ptr, <usize>n);
    let h = host;
    if (h == 0) h = map.refcounts().allocate(1) << map.clusterBits;
    this.dataWrite(buf + <usize>lo, hi - lo, h + lo);
    const mask: u64 = sc1 - sc0 == 32 ? 0xffffffff : (((<u64>1 << (sc1 - sc0)) - 1) << sc0);
    const nbm = (bm | mask) & ~(mask << 32);
    if (host == 0) putU64(p, h | OFLAG_COPIED);
    if (nbm != bm) putU64(p + 8, nbm);
    if (host == 0 || nbm != bm) map.markL2Dirty(table);
  }

  /**
   * Make [off, off+len) read as zeros. Whole clusters (whole subclusters with extended L2) get the
   * zero flag, keeping their allocation as qemu does unless `unmap` (qemu's BDRV_REQ_MAY_UNMAP);
   * compressed ones are always released; the ragged edges, and every byte of a v2 image, are
   * written as zero data.
   */
  zero(off: u64, len: u64, unmap: bool): void {
    const map = this.map;
    const cs = map.cs;
    const unit: u64 = map.entryBytes == 16 ? (<u64>1 << map.scBits) : cs;
    if (map.h.version < 3) { this.zeroData(off, len); return; }
    const end = off + len;
    let a = (off + unit - 1) & ~(unit - 1);
    let b = end & ~(unit - 1);
    if (a >= b) { this.zeroData(off, len); return; }
    if (a > off) this.zeroData(off, a - off);
    if (end > b) this.zeroData(b, end - b);
    while (a < b) {
      const l1i = a >> (map.clusterBits + map.l2Bits);
      const table = map.tableForWrite(l1i);
      const idx = (a >> map.clusterBits) & (map.l2Entries - 1);
      const p = map.entryPtr(table, idx);
      const e = getU64(p);
      const offIn = a & (cs - 1);
      let n = cs - offIn;
      if (n > b - a) n = b - a;
      if (map.entryBytes == 8) {
        let ne: u64;
        if ((e & OFLAG_COMPRESSED) != 0 || (unmap && (e & L2E_OFFSET_MASK) != 0)) { map.releaseEntry(e); ne = OFLAG_ZERO; }
        else ne = e | OFLAG_ZERO;
        if (ne != e) { putU64(p, ne); map.markL2Dirty(table); }
      } else {
        const bm = getU64(p + 8);
        const sc0 = <u32>(offIn >> map.scBits);
        const cnt = <u32>(n >> map.scBits);
        const mask: u64 = cnt == 32 ? 0xffffffff : (((<u64>1 << cnt) - 1) << sc0);
        if ((e & OFLAG_COMPRESSED) != 0) {
          if (cnt != 32) {
            // Part of a compressed cluster: rewrite it uncompressed first, then zero subclusters.
            const buf = this.buf();
            readCluster(this.img, map.cs, a - offIn, buf);
            this.writeSubclusters(table, a - offIn, buf, cs);
            continue;
          }
          map.releaseEntry(e);
          putU64(p, 0);
          putU64(p + 8, L2_BITMAP_ALL_ZEROES);
          map.markL2Dirty(table);
        } else if (unmap && cnt == 32 && (e & L2E_OFFSET_MASK) != 0) {
          map.releaseEntry(e);
          putU64(p, 0);
          putU64(p + 8, L2_BITMAP_ALL_ZEROES);
          map.markL2Dirty(table);
        } else {
          const nbm = (bm & ~mask) | (mask << 32);
          if (nbm != bm) { putU64(p + 8, nbm); map.markL2Dirty(table); }
        }
      }
      a += n;
    }
  }

  private zeroData(off: u64, len: u64): void {
    writeZeroData(this.img, off, len);
  }

  /**
   * qemu-io's discard (qemu's qcow2_co_pdiscard): whole clusters only (partial ones are ignored),
   * plus the partial last cluster of an image whose size is not cluster-aligned when the range
   * covers all of it. In v3 they read as zeros afterwards, in v2 as unallocated (zeros: there is no
   * backing file). A v2 image with a backing file cannot express "reads as zeros", and dropping
   * the clusters would expose the backing file's stale data: qemu does nothing then, nor do we.
   * Released clusters are freed once no durable entry references them.
   */
  discard(off: u64, len: u64): void {
    const map = this.map;
    if (map.h.version < 3 && this.img.backing != null) return;
    const cs = map.cs;
    let a = (off + cs - 1) & ~(cs - 1);
    const end = off + len;
    const size = this.img.virtualSize();
    const b = end == size ? (end + cs - 1) & ~(cs - 1) : end & ~(cs - 1);
    while (a < b) {
      const l1i = a >> (map.clusterBits + map.l2Bits);
      const l1e = map.l1Entry(l1i) & L1E_OFFSET_MASK;
      if (l1e == 0 && this.img.backing == null) { a = (l1i + 1) << (map.clusterBits + map.l2Bits); continue; }
      const table = map.tableForWrite(l1i);
      const p = map.entryPtr(table, (a >> map.clusterBits) & (map.l2Entries - 1));
      const e = getU64(p);
      const allocated = (e & OFLAG_COMPRESSED) != 0 || (e & L2E_OFFSET_MASK) != 0;
      const bm = map.entryBytes == 16 ? getU64(p + 8) : 0;
      let ne = e;
      let nbm = bm;
      if (this.img.backing != null || allocated) {
        if (map.entryBytes == 16) { ne = 0; nbm = L2_BITMAP_ALL_ZEROES; }
        else ne = map.h.version >= 3 ? OFLAG_ZERO : 0;
      }
      if (ne != e || nbm != bm) {
        putU64(p, ne);
        if (map.entryBytes == 16) putU64(p + 8, nbm);
        map.markL2Dirty(table);
        map.releaseEntry(e);
      }
      a += cs;
    }
  }
}
