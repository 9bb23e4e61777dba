// A raw file's holes, seen through the native binding (native/file-extents.c: SEEK_DATA and
// SEEK_HOLE): cowchain's map of a sparse raw file, and of an overlay over one, equals qemu-img's
// (qemu's file driver asks the same way), and what reads the chain whole (convert) skips the
// holes and still writes exactly the guest's bytes. Without the binding a raw file is all data
// (slower, never wrong); CI builds it and must use it.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { convertImage, openImage } from '../../src/index.js';
import { expectClean, expectSameGuest, qemuImg, qemuIo, qemuMap, requireQemu, tmpDir } from '../support/qemu.js';

requireQemu();
const BINDING = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../build/file-extents.node');
const native = process.platform === 'linux' && fs.existsSync(BINDING);
const MiB = 1 << 20;

/** cowchain's map of a file, in qemu-img map's JSON fields. */
function ourMap(file: string): unknown[] {
  const img = openImage(file);
  try {
    return img.map().map((e) => ({ ...e }));
  } finally {
    img.close();
  }
}

/** A 64 MiB sparse raw base with three islands of data (the last one ends the file) and an overlay writing into a hole. */
function sparseChain(): { dir: string; base: string; top: string } {
  const dir = tmpDir('cowchain-holes-');
  const base = path.join(dir, 'base.raw');
  const top = path.join(dir, 'top.qcow2');
  qemuImg(['create', '-q', '-f', 'raw', base, '64M']);
  qemuIo(base, ['write -P 0x11 0 64k', 'write -P 0x22 10M 1M', 'write -P 0x33 64508k 4k'], 'raw');
  qemuImg(['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'raw', top]);
  qemuIo(top, ['write -P 0x44 32M 128k'], 'qcow2');
  return { dir, base, top };
}

describe('raw holes (SEEK_DATA/SEEK_HOLE)', () => {
  if (native) it('the map of a sparse raw file and of an overlay over it equals qemu-img map', () => {
    const { base, top } = sparseChain();
    const theirs = qemuMap(base);
    // qemu sees the holes (else this test would prove nothing)
    expect(theirs.some((e: { data: boolean }) => !e.data)).toBe(true);
    expect(ourMap(base)).toEqual(theirs);
    expect(ourMap(top)).toEqual(qemuMap(top));
  });

  if (native) it('convert of the chain skips the holes and writes exactly the guest, to qcow2 and to raw', () => {
    const { dir, top } = sparseChain();
    const q = path.join(dir, 'out.qcow2');
    const r = path.join(dir, 'out.raw');
    const src = openImage(top);
    try {
      convertImage(src, q, { format: 'qcow2' });
      convertImage(src, r, { format: 'raw' });
    } finally {
      src.close();
    }
    expectClean(q);
    expectSameGuest(top, q, 'convert to qcow2');
    expectSameGuest(top, r, 'convert to raw', { a: 'qcow2', b: 'raw' });
    // The holes stay holes: the raw output holds the data's blocks only (64k + 1M + 4k + 128k).
    expect(fs.statSync(r).blocks * 512).toBeLessThan(4 * MiB);
  });

  if (process.env.CI === 'true') {
    it('CI builds the binding (npm ci runs build:native)', () => {
      expect(native).toBe(true);
    });
  }
});
