/**
 * The property harness the convert tests share (test/interop/convert.test.ts, convert-compressed):
 * a qcow2 target geometry drawn by fast-check, and a seeded property over random chains
 * (chains.ts) built in a fresh directory per case, counting the kinds of case it drew.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import { expect } from 'vitest';
import { KiB } from './images.js';
import { buildChain, chainArb, type ChainSpec, type LayerSpec } from './chains.js';

/** A qcow2 target's geometry; `compressionType` only when drawn with compression. */
export type Qcow2Target = Pick<LayerSpec, 'clusterSize' | 'compat' | 'extendedL2' | 'refcountBits'> & { compressionType?: 'zlib' | 'zstd' };

/**
 * Cluster sizes 512 B..2 MiB, compat 0.10/1.1, extended L2 (from 16 KiB clusters), refcount
 * widths 1..64 bits on v3; with `compression`, deflate or (compat 1.1) zstd.
 */
export function qcow2TargetArb(options: { compression?: boolean } = {}): fc.Arbitrary<Qcow2Target> {
  return fc
    .record({
      clusterBits: fc.constantFrom(9, 12, 14, 16, 16, 21),
      v3: fc.integer({ min: 0, max: 3 }).map((n) => n > 0),
      extendedL2: fc.boolean(),
      refcountOrder: fc.constantFrom(4, 4, 0, 2, 5, 6),
      ...(options.compression ? { zstd: fc.boolean() } : {}),
    })
    .map((g) => {
      const clusterSize = 2 ** g.clusterBits;
      const target: Qcow2Target = {
        clusterSize,
        compat: g.v3 ? '1.1' : '0.10',
        extendedL2: g.v3 && g.extendedL2 && clusterSize >= 16 * KiB,
        refcountBits: g.v3 ? 2 ** g.refcountOrder : 16,
      };
      if ('zstd' in g) target.compressionType = g.v3 && g.zstd ? 'zstd' : 'zlib';
      return target;
    });
}

/** The API's `create` options for a target. */
export function createOptions(t: Qcow2Target) {
  return { clusterSize: t.clusterSize, compat: t.compat, extendedL2: t.extendedL2, refcountBits: t.refcountBits, ...(t.compressionType ? { compressionType: t.compressionType } : {}) };
}

export interface ChainPropertyOptions {
  /** Where each case's directory is made (and removed after it). */
  root: string;
  seed: number;
  runs: number;
  /** Overlays above the base (chainArb). */
  maxOverlays: number;
  /**
   * Kinds of case, counted by the body; each must have been drawn at least once (the seed of the
   * quick tier is one whose draws cover them all).
   */
  coverage: Record<string, number>;
}

let counter = 0;

/**
 * Run `body` on `runs` random chains (seeded), each built in a fresh directory under `root`
 * with the values `arbs` drew; then check that every kind in `coverage` was drawn.
 */
export async function assertOnChains<Ts extends unknown[]>(
  options: ChainPropertyOptions,
  arbs: { [K in keyof Ts]: fc.Arbitrary<Ts[K]> },
  body: (dir: string, spec: ChainSpec, ...values: Ts) => void,
): Promise<void> {
  let runs = 0;
  const property = fc.asyncProperty(chainArb({ maxOverlays: options.maxOverlays }), ...(arbs as fc.Arbitrary<unknown>[]), async (spec: ChainSpec, ...values: unknown[]) => {
    // Let the runner's event loop breathe between cases (each case is synchronous work).
    await new Promise((r) => setImmediate(r));
    const dir = path.join(options.root, `c${counter++}`);
    fs.mkdirSync(dir);
    try {
      buildChain(dir, spec);
      runs++;
      body(dir, spec, ...(values as Ts));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
  await fc.assert(property as fc.IAsyncProperty<unknown[]>, { seed: options.seed, numRuns: options.runs, endOnFailure: true });
  expect(runs).toBe(options.runs);
  for (const [k, n] of Object.entries(options.coverage)) expect(n, `cases with ${k}`).toBeGreaterThanOrEqual(1);
}
