// A deep backing chain with data in every layer is read within a bounded engine heap: the layers'
// table caches share one budget instead of taking 4 MiB each (600 layers would need 2.4 GiB).
// Opening, closing and mapping it cost work in proportion to its depth, counted, not timed.
import * as fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { openImage } from '../../src/image/open-chain.js';
import { FileBackend } from '../../src/engine/backend.js';
import { Engine } from '../../src/engine/engine.js';
import { createQcow2On } from '../../src/image/create.js';
import { expectClean, requireQemu, tmpDir } from '../support/qemu.js';
import { join } from '../support/images.js';
import { yieldToRunner } from '../support/tier.js';

const LAYERS = 600;
const MiB = 1 << 20;
const SIZE = 1024 * MiB;

let dir: string;
const layer = (i: number) => join(dir, `l${i}.qcow2`);

// Six hundred images made in a row: the loop yields after each, so the test process still answers
// vitest's runner on a loaded machine (18 s of it held the loop under a load of 12).
beforeAll(async () => {
  requireQemu();
  dir = tmpDir('cowchain-deepmem-');
  for (let i = 0; i < LAYERS; i++) {
    const b = new FileBackend(layer(i), true, true);
    createQcow2On(b, { format: 'qcow2', size: SIZE, backingFile: i === 0 ? undefined : `l${i - 1}.qcow2`, backingFormat: i === 0 ? undefined : 'qcow2' });
    b.close();
    // One 64 KiB cluster per layer, at its own megabyte: every layer has an L2 table a read needs.
    const img = openImage(layer(i), { writable: true, noBacking: true });
    try {
      img.write(i * MiB, new Uint8Array(64 * 1024).fill((i % 250) + 1));
    } finally {
      img.close();
    }
    await yieldToRunner();
  }
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe(`a ${LAYERS}-deep chain with data in every layer`, () => {
  it('reads every layer’s data through the whole chain within 96 MiB of engine memory, and closing frees the caches', async () => {
    const engine = Engine.get();
    const cachesBefore = engine.cacheBytes();
    // Each collection marks every open image: one per layer opened or closed made the chain cost
    // the square of its depth. Opening and closing it collects about a hundred times, not 3 × 600.
    const collections = vi.spyOn(engine, 'collect');
    const top = openImage(layer(LAYERS - 1));
    try {
      expect(top.chain()).toHaveLength(LAYERS);
      for (let i = 0; i < LAYERS; i++) {
        const got = top.read(i * MiB, 4096);
        expect(got[0], `layer ${i}`).toBe((i % 250) + 1);
        expect(got[4095], `layer ${i}`).toBe((i % 250) + 1);
        if (i % 50 === 49) await yieldToRunner();
      }
      // Holes read as zeros through all layers.
      expect(top.read(LAYERS * MiB + 4096, 4096).every((b) => b === 0)).toBe(true);
      expect(engine.cacheBytes()).toBeGreaterThan(cachesBefore);
      expect(engine.memoryBytes()).toBeLessThan(96 * MiB);
    } finally {
      top.close();
    }
    expect(collections.mock.calls.length).toBeGreaterThan(0);
    expect(collections.mock.calls.length).toBeLessThan(LAYERS / 4);
    collections.mockRestore();
    expect(engine.cacheBytes()).toBe(cachesBefore);
    expectClean(layer(LAYERS - 1));
  }, 300_000);

  it('maps it extent by extent, asking each layer about each of its runs once', () => {
    const engine = Engine.get();
    const top = openImage(layer(LAYERS - 1));
    try {
      // Each hole between two layers' clusters lies in every layer: walking the chain down for
      // every extent asked all of them again (LAYERS² / 2 block-status calls).
      const calls = vi.spyOn(engine, 'call');
      const map = top.map();
      const asked = calls.mock.calls.length;
      calls.mockRestore();
      const hole = (start: number, length: number) => ({ start, length, depth: LAYERS - 1, present: false, zero: true, data: false });
      const want = [];
      for (let i = 0; i < LAYERS; i++) {
        want.push({ start: i * MiB, length: 64 * 1024, depth: LAYERS - 1 - i, present: true, zero: false, data: true });
        want.push(hole(i * MiB + 64 * 1024, MiB - 64 * 1024));
      }
      want[want.length - 1] = hole((LAYERS - 1) * MiB + 64 * 1024, SIZE - (LAYERS - 1) * MiB - 64 * 1024);
      expect(map.map(({ offset, ...e }) => (expect(offset === undefined).toBe(!e.data), e))).toEqual(want);
      // Three engine calls per layer asked (status, flags, offset); each layer has three runs.
      expect(asked).toBeLessThan(3 * 4 * LAYERS + 3 * map.length);
    } finally {
      top.close();
    }
  }, 300_000);
});
