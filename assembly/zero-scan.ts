// Finding all-zero stretches in a buffer, so that writers leave them as holes (a fresh cluster
// at the end of a file, convert's output). Blocks of 4 KiB: the file systems' block, the
// smallest hole they keep, and qemu-img convert's default -S.

export const ZERO_BLOCK: u64 = 4096;

/** Whether the `n` bytes at `p` are all zero (64 bytes at a time on wasm SIMD, then the tail). */
export function allZero(p: usize, n: u64): bool {
  const end = p + <usize>n;
  let q = p;
  for (; q + 64 <= end; q += 64) {
    const a = v128.or(v128.load(q), v128.load(q, 16));
    const b = v128.or(v128.load(q, 32), v128.load(q, 48));
    if (v128.any_true(v128.or(a, b))) return false;
  }
  for (; q < end; q++) if (load<u8>(q) != 0) return false;
  return true;
}

/**
 * From `j`, the end of the stretch of blocks none of which is all zero: blocks of ZERO_BLOCK
 * counted from `j`, the last one cut at `n` (a block never reaches past the buffer).
 */
export function dataEnd(p: usize, j: u64, n: u64): u64 {
  while (j < n) {
    const c = n - j < ZERO_BLOCK ? n - j : ZERO_BLOCK;
    if (allZero(p + <usize>j, c)) break;
    j += c;
  }
  return j;
}
