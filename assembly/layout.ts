// L1/L2 entry encoding and the kinds of (sub)cluster a lookup can find (qemu's QCow2SubclusterType).

export const L1E_OFFSET_MASK: u64 = 0x00fffffffffffe00;
export const L2E_OFFSET_MASK: u64 = 0x00fffffffffffe00;
export const REFT_OFFSET_MASK: u64 = 0xfffffffffffffe00;
/** Reserved bits of a refcount table entry (qemu REFT_RESERVED_MASK). */
export const REFT_RESERVED: u64 = 0x1ff;
export const OFLAG_COPIED: u64 = 1 << 63;
export const OFLAG_COMPRESSED: u64 = 1 << 62;
export const OFLAG_ZERO: u64 = 1;
/** Reserved bits of an L1 entry: 0..8 and 56..62 (qemu L1E_RESERVED_MASK, with bit 0). */
export const L1E_RESERVED: u64 = 0x7f000000000001ff;
/** Reserved bits of a standard L2 entry: 1..8 and 56..61. */
export const L2E_RESERVED: u64 = 0x3f000000000001fe;
/** Extended L2 subcluster bitmap: all 32 subclusters allocated (low half) or all zero (high half). */
export const L2_BITMAP_ALL_ALLOC: u64 = 0xffffffff;
export const L2_BITMAP_ALL_ZEROES: u64 = 0xffffffff00000000;

export const K_UNALLOC_PLAIN: i32 = 0;  // read the backing file
export const K_UNALLOC_ALLOC: i32 = 1;  // extended L2: host cluster exists, this subcluster reads the backing
export const K_ZERO_PLAIN: i32 = 2;
export const K_ZERO_ALLOC: i32 = 3;     // reads zeros, host cluster preallocated
export const K_NORMAL: i32 = 4;
export const K_COMPRESSED: i32 = 5;

/**
 * The kind of a whole cluster from its L2 entry alone, as qemu's qcow2_get_cluster_type sees it
 * (check's view: no subcluster bitmap, nothing validated). Only K_UNALLOC_PLAIN, K_ZERO_PLAIN,
 * K_ZERO_ALLOC, K_NORMAL and K_COMPRESSED; with extended L2 the zero flag is not used.
 */
export function clusterKind(e: u64, extendedL2: bool): i32 {
  if ((e & OFLAG_COMPRESSED) != 0) return K_COMPRESSED;
  if ((e & OFLAG_ZERO) != 0 && !extendedL2) return (e & L2E_OFFSET_MASK) != 0 ? K_ZERO_ALLOC : K_ZERO_PLAIN;
  if ((e & L2E_OFFSET_MASK) == 0) return K_UNALLOC_PLAIN;
  return K_NORMAL;
}

/** Kinds whose host offset is meaningful (qemu: BDRV_BLOCK_OFFSET_VALID). */
export function kindHasHost(k: i32): bool {
  return k == K_NORMAL || k == K_ZERO_ALLOC || k == K_UNALLOC_ALLOC;
}

/** Compressed descriptor geometry for a cluster size (qcow2 spec, "Compressed Clusters Descriptor"). */
export function csizeShift(clusterBits: u32): u32 { return 62 - (clusterBits - 8); }
export function csizeMask(clusterBits: u32): u64 { return (<u64>1 << (clusterBits - 8)) - 1; }

// Block-status flags reported for one layer (qemu's BDRV_BLOCK_*), used by `map`. The host's copy is
// src/engine/block-status.ts (test/engine/boundary.test.ts fails when they differ).
export const ST_DATA: i32 = 1;
export const ST_ZERO: i32 = 2;
export const ST_OFFSET_VALID: i32 = 4;
export const ST_ALLOCATED: i32 = 8;
