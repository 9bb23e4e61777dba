// The engine's memory does not grow with the image: a 4 TiB sparse qcow2 with a few writes far
// apart is read (allocated and unallocated ranges) within L1 size + 16 MiB of wasm memory, reading
// 64 MiB of unallocated guest data in pieces does not grow memory at all, and failed opens do not
// leak.
import * as fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { CowError, openImage, type Image } from '../../src/index.js';
import { qemuImg, qemuIo, qemuMap, requireQemu, tmpDir } from '../support/qemu.js';
import { H, KiB, MiB, join, plain, readBE, writeBE } from '../support/images.js';

const TiB = 1024 ** 4;
const SIZE = 4 * TiB;
const BOUND_EXTRA = 16 * MiB;

/** Where qemu-io wrote what: offset, length, pattern byte. */
const WRITES: [number, number, number][] = [
  [0, 64 * KiB, 0xa1],
  [1 * TiB + 12345 * 512, 200 * KiB, 0xb2],
  [3 * TiB - 4096, 8192, 0xc3], // straddles an L2 table boundary
  [SIZE - 128 * KiB, 128 * KiB, 0xd4],
];

/** Ranges nothing was written to (they read as zeros). */
const HOLES: [number, number][] = [
  [64 * KiB, 1 * MiB],
  [2 * TiB, 4 * MiB],
  [SIZE - 4 * MiB, 4 * MiB - 128 * KiB],
];

let dir: string;
let file: string;
let img: Image;
let l1Bytes: number;

function mem(): number {
  return Engine.get().memoryBytes();
}

beforeAll(() => {
  requireQemu();
  dir = tmpDir('cowchain-membound-');
  file = join(dir, 'big.qcow2');
  qemuImg(['create', '-f', 'qcow2', file, '4T']);
  qemuIo(file, WRITES.map(([off, len, p]) => `write -P ${p} ${off} ${len}`));
  l1Bytes = Number(readBE(file, H.l1Size, 4)) * 8;
  img = openImage(file);
});
afterAll(() => img?.close());

describe('a 4 TiB sparse image', () => {
  it('is what qemu made: 4 TiB, sparse on disk', () => {
    expect(img.virtualSize).toBe(SIZE);
    expect(l1Bytes).toBe((SIZE / (512 * MiB)) * 8); // 64K clusters: one L1 entry per 512 MiB
    expect(fs.statSync(file).size).toBeLessThan(16 * MiB);
  });

  it('reads the written ranges and the holes correctly, within L1 size + 16 MiB of memory', () => {
    for (const [off, len, p] of WRITES) {
      const got = img.read(off, len);
      expect(got.every((b) => b === p), `pattern 0x${p.toString(16)} at ${off}`).toBe(true);
      // One byte either side is outside the write (zeros).
      if (off > 0) expect(img.read(off - 1, 1)[0]).toBe(0);
      if (off + len < SIZE) expect(img.read(off + len, 1)[0]).toBe(0);
    }
    for (const [off, len] of HOLES) {
      expect(img.read(off, len).every((b) => b === 0), `hole at ${off}`).toBe(true);
    }
    expect(mem()).toBeLessThan(l1Bytes + BOUND_EXTRA);
  });

  it('map() equals qemu-img map on the 4 TiB image', () => {
    expect(plain(img.map())).toStrictEqual(qemuMap(file));
    expect(mem()).toBeLessThan(l1Bytes + BOUND_EXTRA);
  });

  it('reading 64 MiB of unallocated guest data in 1 MiB pieces does not grow memory', () => {
    img.read(2 * TiB + 512 * MiB, 1 * MiB); // warm up: the read buffer exists
    const before = mem();
    for (let i = 0; i < 64; i++) {
      const piece = img.read(2 * TiB + 513 * MiB + i * MiB, 1 * MiB);
      expect(piece[0] | piece[piece.length - 1]).toBe(0);
    }
    // Spread far apart too: every piece under a different L1 entry.
    for (let i = 0; i < 64; i++) img.read(1.5 * TiB + i * 8 * 1024 * MiB + 333, 1 * MiB);
    expect(mem()).toBe(before);
  });

  it('reading allocated data again and again does not grow memory', () => {
    const before = mem();
    for (let i = 0; i < 50; i++) for (const [off, len] of WRITES) img.read(off, len);
    expect(mem()).toBe(before);
  });
});

describe('failed opens do not leak engine memory', () => {
  function failingOpens(file: string, code: string, times: number): void {
    for (let i = 0; i < times; i++) {
      let err: unknown;
      try {
        openImage(file).close();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(CowError);
      expect((err as CowError).code).toBe(code);
    }
  }

  it('an image refused by a header check, opened 300 times', () => {
    const f = join(dir, 'bad-ext.qcow2');
    qemuImg(['create', '-f', 'qcow2', '-o', 'cluster_size=2M', f, '1G']);
    // An extension overrunning cluster 0: refused after cluster 0 (2 MiB) was read into memory.
    writeBE(f, 112, 4, 0x11223344);
    writeBE(f, 116, 4, 0x7fffffff);
    failingOpens(f, 'ECOW_BAD_EXTENSION', 2);
    const before = mem();
    failingOpens(f, 'ECOW_BAD_EXTENSION', 300);
    expect(mem()).toBeLessThanOrEqual(before + 4 * MiB);
  });

  it('an image whose L1 table lies past the end of the file, opened 300 times', () => {
    const f = join(dir, 'bad-l1.qcow2');
    qemuImg(['create', '-f', 'qcow2', f, '1T']);
    writeBE(f, H.l1Offset, 8, 0x100000000);
    failingOpens(f, 'ECOW_CORRUPT', 2);
    const before = mem();
    failingOpens(f, 'ECOW_CORRUPT', 300);
    expect(mem()).toBeLessThanOrEqual(before + 4 * MiB);
  });
});
