// The qcow2 header (cluster 0): parse with every open-time check qemu makes, keep what we do not
// understand (unknown header fields, unknown extensions) and write it back the way qemu lays it out.
import { getU8, getU32, getU64, putU8, putU32, putU64 } from "./be";
import {
  fail, hex, E_BAD_MAGIC, E_BAD_VERSION, E_BAD_CLUSTER_BITS, E_BAD_HEADER_LENGTH, E_BAD_BACKING_NAME,
  E_UNSUPPORTED_FEATURE, E_BAD_COMPRESSION, E_BAD_REFCOUNT_ORDER, E_BAD_REFCOUNT_TABLE, E_BAD_L1_TABLE,
  E_BAD_SIZE, E_BAD_SNAPSHOT_TABLE, E_BAD_CRYPT_METHOD, E_BAD_EXTENSION, E_ENCRYPTED, E_INTERNAL, E_BAD_BITMAPS, E_BAD_LUKS_HEADER,
} from "./errors";
import { fileSize, readZeroFill, writeAt } from "./io";

export const QCOW_MAGIC: u32 = 0x514649fb;

export const INCOMPAT_DIRTY: u64 = 1;
export const INCOMPAT_CORRUPT: u64 = 2;
export const INCOMPAT_DATA_FILE: u64 = 4;
export const INCOMPAT_COMPRESSION: u64 = 8;
export const INCOMPAT_EXTL2: u64 = 16;
/** Incompatible features this engine can read; any other bit refuses the image, as qemu does. */
export const INCOMPAT_KNOWN: u64 = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
export const COMPAT_LAZY_REFCOUNTS: u64 = 1;
export const AUTOCLEAR_BITMAPS: u64 = 1;
export const AUTOCLEAR_DATA_FILE_RAW: u64 = 2;

export const EXT_END: u32 = 0;
export const EXT_BACKING_FORMAT: u32 = 0xe2792aca;
export const EXT_FEATURE_TABLE: u32 = 0x6803f857;
export const EXT_CRYPTO_HEADER: u32 = 0x0537be77;
export const EXT_BITMAPS: u32 = 0x23852875;
export const EXT_DATA_FILE: u32 = 0x44415441;

export const COMPRESSION_DEFLATE: u8 = 0;
export const COMPRESSION_ZSTD: u8 = 1;

// qemu's limits (block/qcow2.h)
const MAX_L1_BYTES: u64 = 32 << 20;
export const MAX_L1_ENTRIES: u64 = MAX_L1_BYTES / 8;
export const MAX_REFTABLE_BYTES: u64 = 8 << 20;
const MAX_SNAPSHOTS: u32 = 65536;
const SNAPSHOT_HEADER_SIZE: u64 = 40;
const MAX_BACKING_NAME: u32 = 1023;
const MAX_BITMAPS: u32 = 65535;
const MAX_BITMAP_DIRECTORY_SIZE: u64 = 64 << 20;
const INT64_MAX: u64 = 0x7fffffffffffffff;
export const INT_MAX: u64 = 0x7fffffff;
/** Largest offset the host boundary carries exactly (offsets cross it as f64). */
export const MAX_HOST_OFFSET: u64 = 1 << 53;

/** A header extension we keep verbatim (unknown magic, or one we carry without interpreting). */
export class Extension {
  constructor(public magic: u32, public data: StaticArray<u8>) {}
}

export class Header {
  version: u32 = 3;
  backingOffset: u64 = 0;
  backingSize: u32 = 0;
  clusterBits: u32 = 16;
  size: u64 = 0;
  cryptMethod: u32 = 0;
  l1Size: u32 = 0;
  l1Offset: u64 = 0;
  rtOffset: u64 = 0;
  rtClusters: u32 = 0;
  nbSnapshots: u32 = 0;
  snapshotsOffset: u64 = 0;
  incompat: u64 = 0;
  compat: u64 = 0;
  autoclear: u64 = 0;
  /** Size of the file when the header was parsed (the open's later checks use it too). */
  fileSizeAtOpen: u64 = 0;
  refcountOrder: u32 = 4;
  headerLength: u32 = 112;
  compressionType: u8 = 0;
  /** Bytes 112..headerLength: header fields newer than this engine, kept as they are. */
  unknownFields: StaticArray<u8> = new StaticArray<u8>(0);
  backingName: string = "";
  backingFormat: string = "";
  /** The bitmaps extension, when the bitmaps autoclear bit makes it valid (else nbBitmaps 0). */
  nbBitmaps: u32 = 0;
  bitmapDirSize: u64 = 0;
  bitmapDirOffset: u64 = 0;
  /** LUKS (crypt_method 2): where the LUKS header lies in the file (the crypto header extension). */
  cryptoOffset: u64 = 0;
  cryptoLength: u64 = 0;
  /** Extensions other than backing format and feature table, in the order found. */
  extensions: Array<Extension> = new Array<Extension>();

  get clusterSize(): u64 { return (<u64>1) << this.clusterBits; }
  get extendedL2(): bool { return (this.incompat & INCOMPAT_EXTL2) != 0; }
  /** log2 of L2 entries per table: 8-byte entries, 16-byte with extended L2. */
  get l2Bits(): u32 { return this.clusterBits - (this.extendedL2 ? 4 : 3); }
  hasBacking(): bool { return this.backingOffset != 0; }
}

/** Validate "offset, entries × entryLen" the way qemu's validate_table_offset does. */
function tableOk(offset: u64, entries: u64, entryLen: u64, clusterSize: u64): bool {
  if (entries > INT64_MAX / entryLen) return false;
  const size = entries * entryLen;
  if (offset > INT64_MAX - size) return false;
  return (offset & (clusterSize - 1)) == 0;
}

/** Number of L1 entries needed for a virtual size, without overflowing. */
export function l1EntriesFor(size: u64, clusterBits: u32, l2Bits: u32): u64 {
  const shift = clusterBits + l2Bits;
  return (size >> shift) + ((size & ((<u64>1 << shift) - 1)) != 0 ? 1 : 0);
}

/** A header string: qemu copies it into a C string, so it ends at the first NUL byte. */
function decodeString(p: usize, len: u32): string {
  let n: u32 = 0;
  while (n < len && load<u8>(p + <usize>n) != 0) n++;
  return String.UTF8.decodeUnsafe(p, <usize>n);
}

/**
 * Parse and validate the header. `forCheck` opens the way `qemu-img check` does (qemu's
 * BDRV_O_CHECK): the snapshot table's offset and count are left for the check to judge.
 */
export function parseHeader(handle: i32, forCheck: bool = false): Header {
  const h = new Header();
  const fsize = fileSize(handle);
  h.fileSizeAtOpen = fsize;
  const head = heap.alloc(112);
  readZeroFill(handle, head, 112, 0);
  const magic = getU32(head);
  if (fsize < 4 || magic != QCOW_MAGIC) {
    heap.free(head);
    fail(E_BAD_MAGIC, "not a qcow2 image: magic " + hex(magic) + ", expected 0x514649fb");
  }
  h.version = getU32(head + 4);
  if (h.version != 2 && h.version != 3) {
    heap.free(head);
    fail(E_BAD_VERSION, "unsupported qcow2 version " + h.version.toString() + " (only 2 and 3)");
  }
  h.backingOffset = getU64(head + 8);
  h.backingSize = getU32(head + 16);
  h.clusterBits = getU32(head + 20);
  h.size = getU64(head + 24);
  h.cryptMethod = getU32(head + 32);
  h.l1Size = getU32(head + 36);
  h.l1Offset = getU64(head + 40);
  h.rtOffset = getU64(head + 48);
  h.rtClusters = getU32(head + 56);
  h.nbSnapshots = getU32(head + 60);
  h.snapshotsOffset = getU64(head + 64);
  if (h.version == 2) {
    h.incompat = 0; h.compat = 0; h.autoclear = 0; h.refcountOrder = 4; h.headerLength = 72;
  } else {
    h.incompat = getU64(head + 72);
    h.compat = getU64(head + 80);
    h.autoclear = getU64(head + 88);
    h.refcountOrder = getU32(head + 96);
    h.headerLength = getU32(head + 100);
  }
  heap.free(head);

  if (h.clusterBits < 9 || h.clusterBits > 21) {
    fail(E_BAD_CLUSTER_BITS, "cluster_bits " + h.clusterBits.toString() + " outside 9..21");
  }
  const cs = h.clusterSize;
  // A file that ends inside the header reads as zeros from there, as qemu reads it: the zeros
  // then fail the checks below (a v3 header_length of 0, no refcount table) or describe an empty
  // image, which is what qemu shows too.
  if (h.version == 3) {
    if (h.headerLength < 104) fail(E_BAD_HEADER_LENGTH, "header_length " + h.headerLength.toString() + " shorter than 104");
    if (<u64>h.headerLength > cs) {
      fail(E_BAD_HEADER_LENGTH, "header_length " + h.headerLength.toString() + " exceeds the cluster size " + cs.toString());
    }
  }

  // Cluster 0 holds the header, its extensions and the backing name; read it once.
  const c0len = <i32>cs;
  const c0 = heap.alloc(<usize>c0len);
  readZeroFill(handle, c0, c0len, 0);

  if (h.headerLength > 104) h.compressionType = getU8(c0 + 104);
  if (h.headerLength > 112) {
    const n = h.headerLength - 112;
    h.unknownFields = new StaticArray<u8>(n);
    memory.copy(changetype<usize>(h.unknownFields), c0 + 112, n);
  }

  if (h.backingOffset != 0) {
    if (h.backingOffset > cs) {
      heap.free(c0);
      fail(E_BAD_BACKING_NAME, "backing file offset " + h.backingOffset.toString() + " exceeds the cluster size " + cs.toString());
    }
    const room = cs - h.backingOffset;
    const limit: u64 = room < <u64>MAX_BACKING_NAME ? room : <u64>MAX_BACKING_NAME;
    if (<u64>h.backingSize > limit) {
      heap.free(c0);
      fail(E_BAD_BACKING_NAME, "backing file name length " + h.backingSize.toString() + " exceeds " + limit.toString());
    }
    h.backingName = decodeString(c0 + <usize>h.backingOffset, h.backingSize);
  } else {
    h.backingSize = 0;
  }

  readExtensions(h, c0);
  heap.free(c0);

  const unknown = h.incompat & ~INCOMPAT_KNOWN;
  if ((h.incompat & INCOMPAT_DATA_FILE) != 0) {
    fail(E_UNSUPPORTED_FEATURE, "external data files (incompatible feature bit 2) are not supported");
  }
  if (unknown != 0) fail(E_UNSUPPORTED_FEATURE, "unsupported incompatible feature bits " + hex(unknown));
  // Extended L2 splits a cluster into 32 subclusters, which qemu wants no smaller than 512 bytes.
  if (h.extendedL2 && h.clusterBits < 14) {
    fail(E_BAD_CLUSTER_BITS, "extended L2 entries with cluster_bits " + h.clusterBits.toString() + ": subclusters of " + ((<u32>1 << h.clusterBits) >> 5).toString() + " bytes (qemu's minimum is 512)");
  }
  if ((h.autoclear & AUTOCLEAR_DATA_FILE_RAW) != 0) {
    fail(E_UNSUPPORTED_FEATURE, "autoclear bit 1 (data-file-raw) set in an image without an external data file (autoclear " + hex(h.autoclear) + ")");
  }

  if (h.compressionType > COMPRESSION_ZSTD) {
    fail(E_BAD_COMPRESSION, "unknown compression type " + h.compressionType.toString());
  }
  if (h.compressionType == COMPRESSION_DEFLATE && (h.incompat & INCOMPAT_COMPRESSION) != 0) {
    fail(E_BAD_COMPRESSION, "compression type feature bit set with compression type 0 (deflate)");
  }
  if (h.compressionType != COMPRESSION_DEFLATE && (h.incompat & INCOMPAT_COMPRESSION) == 0) {
    fail(E_BAD_COMPRESSION, "compression type " + h.compressionType.toString() + " without its incompatible feature bit");
  }

  if (h.refcountOrder > 6) fail(E_BAD_REFCOUNT_ORDER, "refcount_order " + h.refcountOrder.toString() + " above 6");

  if (h.rtClusters == 0) fail(E_BAD_REFCOUNT_TABLE, "image has no refcount table (refcount_table_clusters 0)");
  if (<u64>h.rtClusters > (MAX_REFTABLE_BYTES >> h.clusterBits)) {
    fail(E_BAD_REFCOUNT_TABLE, "refcount table of " + h.rtClusters.toString() + " clusters exceeds 8 MiB");
  }
  if (!tableOk(h.rtOffset, (<u64>h.rtClusters) << h.clusterBits, 1, cs)) {
    fail(E_BAD_REFCOUNT_TABLE, "invalid refcount table offset " + hex(h.rtOffset));
  }

  if (!forCheck) {
    if (h.nbSnapshots > MAX_SNAPSHOTS) fail(E_BAD_SNAPSHOT_TABLE, "too many internal snapshots: " + h.nbSnapshots.toString());
    if (!tableOk(h.snapshotsOffset, h.nbSnapshots, SNAPSHOT_HEADER_SIZE, cs)) {
      fail(E_BAD_SNAPSHOT_TABLE, "invalid snapshot table offset " + hex(h.snapshotsOffset));
    }
  }

  if (<u64>h.l1Size > MAX_L1_ENTRIES) fail(E_BAD_L1_TABLE, "L1 table of " + h.l1Size.toString() + " entries exceeds 32 MiB");
  const needed = l1EntriesFor(h.size, h.clusterBits, h.l2Bits);
  if (needed > INT_MAX) fail(E_BAD_SIZE, "virtual size " + h.size.toString() + " needs more than INT_MAX L1 entries");
  if (<u64>h.l1Size < needed) {
    fail(E_BAD_L1_TABLE, "L1 table of " + h.l1Size.toString() + " entries is too small for size " + h.size.toString() + " (needs " + needed.toString() + ")");
  }
  if (h.l1Size > 0 && !tableOk(h.l1Offset, h.l1Size, 8, cs)) {
    fail(E_BAD_L1_TABLE, "invalid L1 table offset " + hex(h.l1Offset));
  }
  if (h.size > MAX_HOST_OFFSET) fail(E_BAD_SIZE, "virtual size " + h.size.toString() + " exceeds 2^53 bytes");

  if (h.cryptMethod > 2) fail(E_BAD_CRYPT_METHOD, "unknown encryption method " + h.cryptMethod.toString());
  if (h.cryptMethod == 1) fail(E_ENCRYPTED, "images encrypted with qcow2's old AES method (crypt_method 1) are not supported; only LUKS (2)");
  if (h.cryptMethod == 2) validateCryptoExtension(h);
  if ((h.autoclear & AUTOCLEAR_BITMAPS) != 0) validateBitmapsExtension(h);
  // The block layer counts whole 512-byte sectors (qemu's total_sectors): a guest never sees
  // the bytes of a partial last sector, and qemu writes the rounded size back with the header.
  h.size = h.size & ~(<u64>511);
  return h;
}

/**
 * A LUKS image names its LUKS header with the crypto header extension (offset and length, both
 * big-endian u64); qemu requires it, cluster-aligned, and the header must lie within the file.
 */
function validateCryptoExtension(h: Header): void {
  for (let i = 0; i < h.extensions.length; i++) {
    const e = h.extensions[i];
    if (e.magic != EXT_CRYPTO_HEADER) continue;
    const p = changetype<usize>(e.data);
    h.cryptoOffset = getU64(p);
    h.cryptoLength = getU64(p + 8);
  }
  if (h.cryptoLength == 0) fail(E_BAD_LUKS_HEADER, "LUKS-encrypted image (crypt_method 2) without a crypto header extension naming its LUKS header");
  if ((h.cryptoOffset & (h.clusterSize - 1)) != 0) fail(E_BAD_LUKS_HEADER, "LUKS header offset " + hex(h.cryptoOffset) + " is not cluster-aligned");
  if (h.cryptoOffset < h.clusterSize || h.cryptoOffset > MAX_HOST_OFFSET || h.cryptoLength > MAX_HOST_OFFSET - h.cryptoOffset) {
    fail(E_BAD_LUKS_HEADER, "LUKS header at " + hex(h.cryptoOffset) + " (" + h.cryptoLength.toString() + " bytes) lies outside the file's possible range");
  }
}

/**
 * The bitmaps extension's own fields, as qemu checks them when the bitmaps autoclear bit says
 * the bitmaps are valid (without the bit, qemu ignores the extension, and so do we).
 */
function validateBitmapsExtension(h: Header): void {
  for (let i = 0; i < h.extensions.length; i++) {
    const e = h.extensions[i];
    if (e.magic != EXT_BITMAPS) continue;
    const p = changetype<usize>(e.data);
    const nb = getU32(p);
    const reserved = getU32(p + 4);
    const dirSize = getU64(p + 8);
    const dirOffset = getU64(p + 16);
    if (reserved != 0) fail(E_BAD_BITMAPS, "bitmaps extension: reserved field is " + hex(reserved) + ", not 0");
    if (nb > MAX_BITMAPS) fail(E_BAD_BITMAPS, "bitmaps extension: " + nb.toString() + " bitmaps exceed qemu's maximum of 65535");
    if (nb == 0) fail(E_BAD_BITMAPS, "bitmaps extension with zero bitmaps");
    if ((dirOffset & (h.clusterSize - 1)) != 0) fail(E_BAD_BITMAPS, "bitmaps extension: directory offset " + hex(dirOffset) + " is not cluster-aligned");
    if (dirSize > MAX_BITMAP_DIRECTORY_SIZE) fail(E_BAD_BITMAPS, "bitmaps extension: directory size " + dirSize.toString() + " exceeds 64 MiB");
    h.nbBitmaps = nb;
    h.bitmapDirSize = dirSize;
    h.bitmapDirOffset = dirOffset;
  }
}

/** fail() after freeing a native buffer: an engine error unwinds without running any cleanup. */
function failFreeing(p: usize, code: string, message: string): void {
  heap.free(p);
  fail(code, message);
}

/** Reads the extensions from cluster 0 at `c0`; on an error, frees c0 before failing. */
function readExtensions(h: Header, c0: usize): void {
  const cs = h.clusterSize;
  const end: u64 = h.backingOffset != 0 ? h.backingOffset : cs;
  let off: u64 = <u64>h.headerLength;
  while (off < end) {
    if (off + 8 > end) failFreeing(c0, E_BAD_EXTENSION, "header extension at " + off.toString() + " overruns its area (ends at " + end.toString() + ")");
    const magic = getU32(c0 + <usize>off);
    const len = getU32(c0 + <usize>off + 4);
    off += 8;
    if (<u64>len > end - off) {
      failFreeing(c0, E_BAD_EXTENSION, "header extension " + hex(magic) + " of " + len.toString() + " bytes overruns its area");
    }
    if (magic == EXT_END) return;
    const data = c0 + <usize>off;
    if (magic == EXT_BACKING_FORMAT) {
      if (len >= 16) failFreeing(c0, E_BAD_EXTENSION, "backing format extension of " + len.toString() + " bytes is too large (max 15)");
      h.backingFormat = decodeString(data, len);
    } else if (magic == EXT_FEATURE_TABLE) {
      // Regenerated on every header write, as qemu does.
    } else {
      if (magic == EXT_BITMAPS && len != 24) failFreeing(c0, E_BAD_EXTENSION, "bitmaps extension of " + len.toString() + " bytes (expected 24)");
      if (magic == EXT_CRYPTO_HEADER && h.cryptMethod != 2) {
        failFreeing(c0, E_BAD_EXTENSION, "crypto header extension " + hex(magic) + " in an image whose crypt_method is " + h.cryptMethod.toString() + ", not 2 (LUKS)");
      }
      if (magic == EXT_CRYPTO_HEADER && len != 16) failFreeing(c0, E_BAD_EXTENSION, "crypto header extension of " + len.toString() + " bytes (expected 16)");
      const copy = new StaticArray<u8>(len);
      memory.copy(changetype<usize>(copy), data, len);
      h.extensions.push(new Extension(magic, copy));
    }
    off += (<u64>len + 7) & ~(<u64>7);
  }
}

// qemu writes this feature-name table into every v3 header; we write the same bytes.
const FEATURE_TYPES: u8[] = [0, 0, 0, 0, 0, 1, 2, 2];
const FEATURE_BITS: u8[] = [0, 1, 2, 3, 4, 0, 0, 1];
const FEATURE_NAMES: string[] = [
  "dirty bit", "corrupt bit", "external data file", "compression type", "extended L2 entries",
  "lazy refcounts", "bitmaps", "raw external data",
];

/**
 * Fail, before anything is written, unless `n` more bytes fit in cluster 0 after `off`: the
 * buffer `buf` is exactly one cluster, so writing on would overrun it into the engine's heap.
 * The buffer is freed first (an engine error unwinds without cleanup).
 */
function mustFit(buf: usize, off: u32, n: u64, cs: u32): void {
  if (<u64>off + n > <u64>cs) {
    failFreeing(buf, E_BAD_EXTENSION, "the header (" + off.toString() + " bytes) and its extensions do not fit in cluster 0 (" + cs.toString() + " bytes)");
  }
}

function putExtension(buf: usize, off: u32, magic: u32, len: u32): u32 {
  putU32(buf + off, magic);
  putU32(buf + off + 4, len);
  return off + 8;
}

/**
 * Lay out cluster 0 like qemu's qcow2_update_header: header, unknown fields, backing format,
 * feature table (v3, clusters above 4 KiB), kept extensions, end marker, backing name. Returns the byte count used.
 * The buffer must be one cluster, zeroed, from heap.alloc: it is freed when the header does not fit.
 */
export function serializeHeader(h: Header, buf: usize): u32 {
  const cs = <u32>h.clusterSize;
  putU32(buf, QCOW_MAGIC);
  putU32(buf + 4, h.version);
  putU32(buf + 16, h.backingSize);
  putU32(buf + 20, h.clusterBits);
  putU64(buf + 24, h.size);
  putU32(buf + 32, h.cryptMethod);
  putU32(buf + 36, h.l1Size);
  putU64(buf + 40, h.l1Offset);
  putU64(buf + 48, h.rtOffset);
  putU32(buf + 56, h.rtClusters);
  putU32(buf + 60, h.nbSnapshots);
  putU64(buf + 64, h.snapshotsOffset);
  let off: u32 = 72;
  if (h.version >= 3) {
    putU64(buf + 72, h.incompat);
    putU64(buf + 80, h.compat);
    putU64(buf + 88, h.autoclear);
    putU32(buf + 96, h.refcountOrder);
    putU32(buf + 100, h.headerLength);
    if (h.headerLength > 104) putU8(buf + 104, h.compressionType);
    const n = h.unknownFields.length;
    if (n > 0) memory.copy(buf + 112, changetype<usize>(h.unknownFields), n);
    off = h.headerLength;
  }
  const fmtLen = <u32>String.UTF8.byteLength(h.backingFormat);
  if (h.backingName.length > 0 && fmtLen > 0) {
    mustFit(buf, off, 8 + <u64>((fmtLen + 7) & ~7), cs);
    off = putExtension(buf, off, EXT_BACKING_FORMAT, fmtLen);
    String.UTF8.encodeUnsafe(changetype<usize>(h.backingFormat), h.backingFormat.length, buf + off);
    off += (fmtLen + 7) & ~7;
  }
  // qemu omits the feature table for clusters of 4 KiB and less: in a 512-byte cluster it would
  // leave no room for a backing file name.
  if (h.version >= 3 && cs > 4096) {
    const n = <u32>FEATURE_NAMES.length;
    mustFit(buf, off, 8 + <u64>n * 48, cs);
    off = putExtension(buf, off, EXT_FEATURE_TABLE, n * 48);
    for (let i: u32 = 0; i < n; i++) {
      const e = buf + off + i * 48;
      putU8(e, FEATURE_TYPES[i]);
      putU8(e + 1, FEATURE_BITS[i]);
      const name = FEATURE_NAMES[i];
      String.UTF8.encodeUnsafe(changetype<usize>(name), name.length, e + 2);
    }
    off += n * 48;
  }
  for (let i = 0; i < h.extensions.length; i++) {
    const ext = h.extensions[i];
    const len = <u32>ext.data.length;
    if (<u64>off + 8 + <u64>len + 16 > <u64>cs) failFreeing(buf, E_BAD_EXTENSION, "header extensions do not fit in cluster 0");
    off = putExtension(buf, off, ext.magic, len);
    memory.copy(buf + off, changetype<usize>(ext.data), len);
    off += (len + 7) & ~7;
  }
  mustFit(buf, off, 8, cs);
  off = putExtension(buf, off, EXT_END, 0);
  const nameLen = <u32>String.UTF8.byteLength(h.backingName);
  if (nameLen > 0) {
    if (nameLen > MAX_BACKING_NAME || off + nameLen > cs) failFreeing(buf, E_BAD_BACKING_NAME, "backing file name of " + nameLen.toString() + " bytes does not fit in the header");
    String.UTF8.encodeUnsafe(changetype<usize>(h.backingName), h.backingName.length, buf + off);
    h.backingOffset = off;
    h.backingSize = nameLen;
    off += nameLen;
  } else {
    h.backingOffset = 0;
    h.backingSize = 0;
  }
  putU64(buf + 8, h.backingOffset);
  putU32(buf + 16, h.backingSize);
  if (off > cs) failFreeing(buf, E_INTERNAL, "header overflowed cluster 0");
  return off;
}

/** Write the header in place. Callers flush first whatever the new header points at. */
export function writeHeader(handle: i32, h: Header): void {
  const cs = <usize>h.clusterSize;
  const buf = heap.alloc(cs);
  memory.fill(buf, 0, cs);
  serializeHeader(h, buf);
  // The whole cluster, as qemu writes it: no stale bytes of an older, longer header remain.
  writeAt(handle, buf, <i32>cs, 0);
  heap.free(buf);
}
