/**
 * The block-status flags the engine reports for one layer (`statusFlags()` after `blockStatus`),
 * qemu's BDRV_BLOCK_* bits. The engine's copy is `ST_*` in assembly/layout.ts;
 * test/engine/boundary.test.ts fails when the two differ.
 */
export const BLOCK_STATUS = {
  /** The range holds data in this layer's file (or a raw layer's bytes). */
  DATA: 1,
  /** The range reads as zeros. */
  ZERO: 2,
  /** `statusOffset()` is the range's offset in this layer's file. */
  OFFSET_VALID: 4,
  /** This layer decides what the range reads as (the backing file is not consulted). */
  ALLOCATED: 8,
} as const;
