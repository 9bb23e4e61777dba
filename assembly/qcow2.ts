// An open qcow2 image: the header, guest reads through the mapping (mapping.ts) and the backing
// chain, per-layer block status, growth. The write side lives in write.ts.
import { Image, lastStatus } from "./image";
import { Header, parseHeader, writeHeader, l1EntriesFor, MAX_HOST_OFFSET, MAX_L1_ENTRIES, INCOMPAT_DIRTY, INCOMPAT_CORRUPT } from "./header";
import { readZeroFill, decompress, fileSize, fileEnd, fileExtent, fileAllocated, flush } from "./io";
import { Refcounts } from "./refcount";
import { readSnapshotTable } from "./snapshots";
import { checkBitmaps } from "./bitmaps";
import { Mapping, lastLookup } from "./mapping";
import { DataCipher } from "./cipher";
import { Writer } from "./write";
import {
  fail, hex, E_CORRUPT, E_DECOMPRESS, E_READ_ONLY, E_INTERNAL_SNAPSHOTS, E_MARKED_CORRUPT, E_DIRTY, E_BAD_SIZE, E_BAD_ARGUMENT,
} from "./errors";
import {
  K_ZERO_PLAIN, K_ZERO_ALLOC, K_NORMAL, K_COMPRESSED,
  kindHasHost, csizeShift, csizeMask, ST_DATA, ST_ZERO, ST_OFFSET_VALID,
} from "./layout";

const MAX_IO: u64 = 1 << 30;

export class Qcow2Image extends Image {
  h: Header;
  /** Guest offset to host cluster: L1, cached L2 tables, entry changes and their flush order. */
  map: Mapping;
  cs: u64;
  /** Decompressed cluster and the compressed descriptor it came from. */
  private zOut: usize = 0;
  private zIn: usize = 0;
  private zKey: u64 = 0;
  /** LUKS (crypt_method 2): data clusters hold ciphertext, sector IVs from their host offsets. */
  encrypted: bool = false;
  private cipher: DataCipher | null = null;
  /** End of the file as last seen (it only grows under us); refreshed when a cluster lies past it. */
  private knownEnd: u64 = 0;
  private writeReady: bool = false;
  private writerObj: Writer | null = null;
  /** Whether qemu would take this image for metadata-preallocated (see metadataPreallocated). */
  private preallocChecked: bool = false;
  private prealloc: bool = false;

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
    this.h = h;
    this.cs = h.clusterSize;
    this.encrypted = h.cryptMethod == 2;
    this.map = new Mapping(handle, h);
    if (this.encrypted) this.cipher = new DataCipher(handle);
  }

  virtualSize(): u64 { return this.h.size; }
  formatName(): string { return "qcow2"; }
  supportsBacking(): bool { return true; }
  isDirty(): bool { return (this.h.incompat & INCOMPAT_DIRTY) != 0; }
  isMarkedCorrupt(): bool { return (this.h.incompat & INCOMPAT_CORRUPT) != 0; }

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
    this.map.startWriting();
    this.writeReady = true;
  }

  /** Make every change durable, in the order that keeps a crash harmless (Mapping.flushMetadata). */
  flushMetadata(): void { this.map.flushMetadata(); }

  read(off: u64, ptr: usize, len: u64): void {
    while (len > 0) {
      const n = this.map.lookup(off, len);
      const kind = lastLookup.kind;
      if (kind == K_NORMAL) {
        this.checkInFile(lastLookup.host, n, off);
        if (this.encrypted) { this.cipher!.readDecrypted(lastLookup.host, ptr, n); off += n; ptr += <usize>n; len -= n; continue; }
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
    const cbits = this.h.clusterBits;
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
    const n = this.map.lookup(off, bytes);
    const k = lastLookup.kind;
    let f = 0;
    if (k == K_NORMAL || k == K_COMPRESSED) f = ST_DATA;
    else if (k == K_ZERO_PLAIN || k == K_ZERO_ALLOC) f = ST_ZERO;
    // qemu gives no file offset for encrypted data (its qcow2_co_block_status: `!s->crypto`):
    // the bytes there are ciphertext, nothing a caller could read the guest's data from.
    if (kindHasHost(k) && this.h.cryptMethod == 0) f |= ST_OFFSET_VALID;
    lastStatus.flags = f;
    lastStatus.offset = lastLookup.host;
    return n;
  }

  /**
   * qemu's block status of a data run goes on into the file below it, but only in an image it
   * takes for metadata-preallocated (qcow2_co_block_status sets BDRV_BLOCK_RECURSE then): there,
   * where the host file has a hole, the run reads as zero and qemu-img map says `"zero": true,
   * "data": true`, split at the hole's edges. Not for compressed or encrypted data (no offset in
   * the file). Only here, for map: commit, convert and rebase read `ownStatus`, where one more
   * lseek per run would cost and gain nothing.
   */
  status(off: u64, bytes: u64): u64 {
    let n = super.status(off, bytes);
    if (lastLookup.kind == K_NORMAL && (lastStatus.flags & ST_OFFSET_VALID) != 0 && this.metadataPreallocated()) {
      const run = fileExtent(this.handle, lastStatus.offset, n);
      if (run < 0) {
        n = <u64>(-run);
        lastStatus.flags |= ST_ZERO;
      } else {
        n = <u64>run;
      }
    }
    return n;
  }

  /**
   * qemu's qcow2_detect_metadata_preallocation, decided once per open image: the image counts as
   * preallocated when the clusters its refcounts say are in use (counting stops at the threshold)
   * number at least max(real × 10/9, real + 2), where `real` is the clusters' worth of space the
   * file takes on its device. A file much sparser than its refcounts: clusters allocated and never
   * written. A host that cannot tell the space (or any refcount it cannot read) says no.
   */
  private metadataPreallocated(): bool {
    if (this.preallocChecked) return this.prealloc;
    this.preallocChecked = true;
    const allocated = fileAllocated(this.handle);
    if (allocated < 0) return false;
    const real = <u64>allocated / this.cs;
    const t1 = real * 10 / 9;
    const threshold = t1 > real + 2 ? t1 : real + 2;
    const end = (fileSize(this.handle) + this.cs - 1) / this.cs;
    // The refcounts as check reads them: never failing (a block past the end reads as zeros).
    const rc = new Refcounts(this.handle, this.h, true);
    let count: u64 = 0;
    for (let i: u64 = 0; i < end && count < threshold; i++) {
      if (rc.getChecked(i) != 0) count++;
    }
    rc.dispose();
    this.prealloc = count >= threshold;
    return this.prealloc;
  }

  writer(): Writer {
    let w = this.writerObj;
    if (w == null) { w = new Writer(this, this.map, this.cipher); this.writerObj = w; }
    return w;
  }

  write(off: u64, ptr: usize, len: u64): void { this.prepareWrite(); this.writer().write(off, ptr, len); }
  writeCompressed(off: u64, ptr: usize, len: u64): void { this.prepareWrite(); this.writer().writeCompressed(off, ptr, len); }
  allocationUnit(): u64 { return this.cs; }
  zero(off: u64, len: u64, unmap: bool): void { this.prepareWrite(); this.writer().zero(off, len, unmap); }
  discard(off: u64, len: u64): void { this.prepareWrite(); this.writer().discard(off, len); }
  /** Whole clusters at scattered guest offsets (commit's fast path; see Writer.writeClusters). */
  writeClusters(guests: StaticArray<u64>, from: i32, count: i32, ptr: usize): void {
    this.prepareWrite();
    this.writer().writeClusters(guests, from, count, ptr);
  }

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
    const needed = l1EntriesFor(size, this.h.clusterBits, this.h.l2Bits);
    if (needed > MAX_L1_ENTRIES) fail(E_BAD_SIZE, "virtual size " + size.toString() + " needs an L1 table larger than 32 MiB");
    this.flushMetadata();
    const old = h.size;
    this.map.growL1(needed);
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

  /**
   * Rewrite the backing name and format in the header (an unsafe rebase: the caller answers for
   * the data). Everything written before is made durable first.
   */
  setBackingFile(name: string, format: string): void {
    this.prepareWrite();
    this.flushMetadata();
    const h = this.h;
    h.backingName = name;
    h.backingFormat = name.length > 0 ? format : "";
    writeHeader(this.handle, h);
    flush(this.handle);
  }

  fileLength(): u64 { return fileSize(this.handle); }

  flush(): void {
    this.flushMetadata();
    flush(this.handle);
  }

  close(): void {
    this.map.dispose();
    const w = this.writerObj;
    if (w != null) w.dispose();
    if (this.zOut != 0) { heap.free(this.zOut); heap.free(this.zIn); }
    const c = this.cipher;
    if (c != null) c.dispose();
  }
}
