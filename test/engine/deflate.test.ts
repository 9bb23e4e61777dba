// Deflate clusters are accepted exactly when qemu accepts them (issue 20): qemu inflates into a
// one-cluster buffer and takes the cluster once the buffer is full, whatever the stream holds
// after that. Node's inflate refuses both a longer stream and damage past the cluster's worth,
// so those go through the pako decoder (src/engine/decompress.ts).
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { deflateClusterAsQemu, inflateCluster } from '../../src/engine/decompress.js';
import { openImage } from '../../src/index.js';
import { qemuImg, qemuRaw, requireQemu, tmpDir } from '../support/qemu.js';
import { H, expectSameBytes, join, readBE, writeBE, writeBytes } from '../support/images.js';

function patternOf(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = ((i * seed) ^ (i >> 7)) & 0xff;
  return b;
}

describe('inflateCluster (deflate)', () => {
  it('decodes a qemu-style stream of exactly one cluster', () => {
    const data = patternOf(4096, 7);
    const c = zlib.deflateRawSync(data, { windowBits: 12 });
    expect(Buffer.from(inflateCluster(0, c, 4096)!)).toEqual(data);
  });

  it('takes the first cluster of a stream that decodes to more (qemu: the buffer is full)', () => {
    const data = patternOf(12288, 13);
    const c = zlib.deflateRawSync(data);
    // Node's own inflate refuses it: its output would exceed the cluster.
    expect(() => zlib.inflateRawSync(c, { maxOutputLength: 4096 })).toThrow();
    expect(Buffer.from(inflateCluster(0, c, 4096)!)).toEqual(data.subarray(0, 4096));
  });

  it('takes a full cluster inside a block that goes on with bytes qemu never decodes', () => {
    const data = patternOf(4096, 5);
    // One stored block claiming 5120 bytes: the cluster's 4096, then 3 stray bytes and no more.
    const stored = Buffer.concat([Buffer.from([0x01, 0x00, 0x14, 0xff, 0xeb]), data, Buffer.from([0xff, 0xff, 0xff])]);
    expect(() => zlib.inflateRawSync(stored)).toThrow();
    expect(Buffer.from(inflateCluster(0, stored, 4096)!)).toEqual(data);
  });

  it('refuses a stream that ends or breaks before the cluster is full', () => {
    const data = patternOf(4096, 3);
    const c = zlib.deflateRawSync(data);
    expect(inflateCluster(0, c.subarray(0, c.length >> 1), 4096)).toBeNull();
    const bad = Buffer.from(c);
    bad[0] = 0xff; // final block of the reserved type 3
    expect(inflateCluster(0, bad, 4096)).toBeNull();
    expect(deflateClusterAsQemu(bad, 4096)).toBeNull();
    expect(inflateCluster(0, zlib.deflateRawSync(patternOf(2048, 3)), 4096)).toBeNull();
  });
});

describe('a compressed cluster whose stream decodes to more than a cluster, against qemu', () => {
  let dir: string;
  beforeAll(() => {
    requireQemu();
    dir = tmpDir();
  });

  it('reads as qemu reads it: the first cluster of the stream', () => {
    const raw = join(dir, 'src.raw');
    fs.writeFileSync(raw, Buffer.from(Array.from({ length: 64 * 1024 }, (_, i) => (i >> 6) & 0xff))); // compressible
    const img = join(dir, 'c.qcow2');
    qemuImg(['convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=4096', raw, img]);
    // The first L2 entry is a compressed cluster; put a longer stream (3 clusters' worth) at the
    // end of the file and point the entry at it.
    const l1 = Number(readBE(img, H.l1Offset, 8));
    const l2 = Number(readBE(img, l1, 8) & 0x00fffffffffffe00n);
    const entry = readBE(img, l2, 8);
    expect(entry >> 62n).toBe(1n); // compressed
    const longer = zlib.deflateRawSync(patternOf(3 * 4096, 17));
    const at = Math.ceil(fs.statSync(img).size / 512) * 512;
    writeBytes(img, at, Buffer.concat([longer, Buffer.alloc(512)]));
    const shift = 62n - (12n - 8n);
    const nsec = BigInt(Math.ceil(longer.length / 512)) - 1n;
    writeBE(img, l2, 8, (1n << 62n) | (nsec << shift) | BigInt(at));
    const want = qemuRaw(img, dir);
    expectSameBytes(want.subarray(0, 4096), patternOf(3 * 4096, 17).subarray(0, 4096), 'qemu reads the first cluster of the stream');
    const ours = openImage(img);
    try {
      expectSameBytes(ours.read(0, ours.virtualSize), want, 'cowchain reads what qemu reads');
    } finally {
      ours.close();
    }
  });
});
