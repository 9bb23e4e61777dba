// New qcow2 images laid out as qemu-img create lays them out: header (cluster 0), refcount table
// (cluster 1), first refcount block (cluster 2), L1 table (cluster 3 on), the L1 written only up to
// its last entry. With qemu's defaults the file is byte-identical to qemu-img's.
import { Header, Extension, writeHeader, l1EntriesFor, EXT_CRYPTO_HEADER, INCOMPAT_EXTL2, INCOMPAT_COMPRESSION, COMPRESSION_DEFLATE, COMPRESSION_ZSTD, MAX_HOST_OFFSET, MAX_L1_ENTRIES } from "./header";
import { putU64 } from "./be";
import { writeAt, truncateTo, flush, fileSize } from "./io";
import { Refcounts, writeEntry } from "./refcount";
import { fail, E_BAD_ARGUMENT, E_BAD_SIZE } from "./errors";

export function createQcow2(
  handle: i32, size: u64, clusterBits: u32, refcountOrder: u32, version: u32, extendedL2: bool,
  compressionType: u8, cryptoLength: u64, backingName: string, backingFormat: string,
): void {
  if (clusterBits < 9 || clusterBits > 21) fail(E_BAD_ARGUMENT, "cluster size must be a power of two between 512 B and 2 MiB");
  if (refcountOrder > 6) fail(E_BAD_ARGUMENT, "refcount_bits must be a power of two between 1 and 64");
  if (version != 2 && version != 3) fail(E_BAD_ARGUMENT, "compat must be 0.10 or 1.1");
  if (version == 2 && refcountOrder != 4) fail(E_BAD_ARGUMENT, "compat=0.10 requires refcount_bits=16");
  if (version == 2 && extendedL2) fail(E_BAD_ARGUMENT, "extended_l2 requires compat=1.1");
  if (extendedL2 && clusterBits < 14) fail(E_BAD_ARGUMENT, "extended_l2 requires a cluster size of at least 16 KiB");
  if (compressionType > COMPRESSION_ZSTD) fail(E_BAD_ARGUMENT, "unknown compression type " + compressionType.toString());
  // The header field exists from version 3 on (qemu refuses zstd with compat=0.10 too).
  if (compressionType != COMPRESSION_DEFLATE && version == 2) fail(E_BAD_ARGUMENT, "compression_type=zstd requires compat=1.1");
  if (size > MAX_HOST_OFFSET) fail(E_BAD_SIZE, "virtual size " + size.toString() + " exceeds 2^53 bytes");
  const h = new Header();
  h.version = version;
  h.clusterBits = clusterBits;
  h.size = size;
  h.refcountOrder = refcountOrder;
  h.headerLength = version == 3 ? 112 : 72;
  h.incompat = extendedL2 ? INCOMPAT_EXTL2 : 0;
  // A type other than deflate is an incompatible feature: older readers must refuse the image.
  h.compressionType = compressionType;
  if (compressionType != COMPRESSION_DEFLATE) h.incompat |= INCOMPAT_COMPRESSION;
  const needed = l1EntriesFor(size, clusterBits, h.l2Bits);
  if (needed > MAX_L1_ENTRIES) fail(E_BAD_SIZE, "virtual size " + size.toString() + " needs an L1 table larger than 32 MiB");
  h.l1Size = <u32>needed;
  const cs = h.clusterSize;
  h.rtOffset = cs;
  h.rtClusters = 1;
  h.backingName = backingName;
  h.backingFormat = backingName.length > 0 ? backingFormat : "";

  truncateTo(handle, 0);
  const buf = heap.alloc(<usize>cs);
  // Refcount table: one entry, the block in cluster 2. The block counts clusters 0, 1 and 2.
  memory.fill(buf, 0, <usize>cs);
  putU64(buf, 2 * cs);
  writeAt(handle, buf, <i32>cs, cs);
  memory.fill(buf, 0, <usize>cs);
  for (let c: u64 = 0; c < 3; c++) writeEntry(buf, c, refcountOrder, 1);
  writeAt(handle, buf, <i32>cs, 2 * cs);
  heap.free(buf);
  // Until its L1 table exists the header describes an empty image (size 0, no L1 table): a crash
  // in between leaves a valid image, never one whose L1 table (offset still 0) is the header.
  const l1Size = h.l1Size;
  h.size = 0;
  h.l1Size = 0;
  writeHeader(handle, h);
  h.size = size;
  h.l1Size = l1Size;

  if (h.l1Size > 0 || cryptoLength > 0) {
    const rc = new Refcounts(handle, h);
    if (h.l1Size > 0) {
      const bytes = <u64>h.l1Size * 8;
      const first = rc.allocate((bytes + cs - 1) / cs);
      h.l1Offset = first << clusterBits;
      const z = heap.alloc(<usize>bytes);
      memory.fill(z, 0, <usize>bytes);
      writeAt(handle, z, <i32>bytes, h.l1Offset);
      heap.free(z);
    }
    if (cryptoLength > 0) {
      // LUKS: the clusters after the L1 table hold the LUKS header and key material (the host
      // writes them next), named by the crypto header extension, as qemu lays them out.
      const first = rc.allocate((cryptoLength + cs - 1) / cs) << clusterBits;
      h.cryptMethod = 2;
      h.cryptoOffset = first;
      h.cryptoLength = cryptoLength;
      const ext = new StaticArray<u8>(16);
      putU64(changetype<usize>(ext), first);
      putU64(changetype<usize>(ext) + 8, cryptoLength);
      h.extensions.push(new Extension(EXT_CRYPTO_HEADER, ext));
      if (fileSize(handle) < first + cryptoLength) truncateTo(handle, first + cryptoLength);
    }
    rc.writeBlocks();
    flush(handle);
    rc.writeTable();
    flush(handle);
    rc.finishMove();
    rc.writeBlocks();
    rc.dispose();
    writeHeader(handle, h);
  }
  flush(handle);
}
