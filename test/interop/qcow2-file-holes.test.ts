// Holes in the file under a qcow2 image's data clusters, as `qemu-img map` reports them. qemu
// looks under a data run into the file only in an image it takes for metadata-preallocated
// (qcow2_co_block_status sets BDRV_BLOCK_RECURSE when the clusters the refcounts count reach
// max(real × 10/9, real + 2), real being the clusters' worth of space the file takes): there a
// hole in the file reads as zero and map says `"zero": true, "data": true`, split at the hole's
// edges. Such images are common: Cinder's remote-fs drivers create volumes with
// `preallocation=metadata`, and a large-cluster image written in small pieces is as sparse. In any
// other image a hole under a data cluster stays data. Encrypted data has no file offset in qemu's
// status (the bytes there are ciphertext), so nothing is looked under either. Holes are punched
// with fallocate where a case needs one for certain (every Linux file system with holes reports
// a punched hole alike).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createImage, openImage, type MapEntry } from '../../src/index.js';
import { readBE } from '../support/images.js';
import { qemuImg, qemuIo, qemuMap, qemuRaw, requireQemu, tmpDir } from '../support/qemu.js';

requireQemu();
const BINDING = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../build/file-extents.node');
// Without the binding (or off Linux) cowchain reports every byte of a file as data: slower, never
// wrong, and then its map differs from qemu's here. CI builds the binding (image-locks.test.ts
// requires it under CI=true).
const native = process.platform === 'linux' && fs.existsSync(BINDING);
const KiB = 1024;
const MiB = 1 << 20;

function ourMap(file: string, keySecrets?: () => Buffer): MapEntry[] {
  const img = openImage(file, keySecrets ? { keySecrets } : {});
  try {
    return img.map().map((e) => ({ ...e }));
  } finally {
    img.close();
  }
}

/** Punch a hole into the file (what qemu's write-zeroes may leave, made certain). */
function punch(file: string, offset: number, length: number): void {
  const r = spawnSync('fallocate', ['--punch-hole', '--keep-size', '--offset', String(offset), '--length', String(length), file], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`fallocate --punch-hole ${offset} ${length} ${file}: ${r.error?.message ?? r.stderr}`);
}

/** The host offset qemu maps guest offset `guest` to (it must be in a data run). */
function hostOf(map: MapEntry[], guest: number): number {
  const e = map.find((x) => x.start <= guest && guest < x.start + x.length && x.data && x.offset !== undefined);
  if (!e) throw new Error(`guest offset ${guest} is not mapped to data: ${JSON.stringify(map)}`);
  return e.offset! + (guest - e.start);
}

describe('holes in the file under qcow2 data clusters', () => {
  for (const where of ['disk', 'memory'] as const) {
    if (native) it(`preallocation=metadata (as Cinder creates volumes), written in part: map as qemu-img map, zeros read as zeros (${where})`, () => {
      const dir = tmpDir('cowchain-qholes-', { memory: where === 'memory' });
      const file = path.join(dir, 'prealloc.qcow2');
      qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', file, '8M']);
      qemuIo(file, ['write -P 0x5a 100k 50k', 'write -P 0x6b 3M 64k'], 'qcow2');
      const theirs = qemuMap(file);
      // Every cluster is allocated: the unwritten ones are the file's holes, zero and data at once.
      expect(theirs.every((e: MapEntry) => e.data && e.present), JSON.stringify(theirs)).toBe(true);
      expect(theirs.filter((e: MapEntry) => !e.zero).map((e: MapEntry) => [e.start, e.length])).toEqual([
        [100 * KiB, 52 * KiB], // the write, in whole 4 KiB blocks of the file
        [3 * MiB, 64 * KiB],
      ]);
      expect(ourMap(file)).toEqual(theirs);
      expectSameRead(file, dir, 0, 100 * KiB);
    });
  }

  if (native) it('a hole punched under a data cluster of an image that is not preallocated stays data, as in qemu-img map', () => {
    const dir = tmpDir('cowchain-qholes-');
    const file = path.join(dir, 'img.qcow2');
    // Written whole, so the file takes about the space its clusters do: 64 data clusters and 5 of
    // metadata against a threshold of 72. (A small image with a few clusters written is already
    // sparse enough for qemu: its metadata clusters take a 4 KiB block each.)
    qemuImg(['create', '-q', '-f', 'qcow2', file, '8M']);
    qemuIo(file, ['write -P 0x5a 0 4M'], 'qcow2');
    punch(file, hostOf(qemuMap(file), 80 * KiB), 24 * KiB);
    const theirs = qemuMap(file);
    expect(theirs.some((e: MapEntry) => e.data && e.zero), 'qemu does not look under the data').toBe(false);
    expect(ourMap(file)).toEqual(theirs);
    expectSameRead(file, dir, 80 * KiB, 24 * KiB);
  });

  if (native) it('extended L2, 2 MiB clusters: the unwritten parts of partly written subclusters (a sparse file: looked under)', () => {
    const dir = tmpDir('cowchain-qholes-');
    const file = path.join(dir, 'ext.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=2M', file, '8M']);
    // 64 KiB subclusters: this write allocates subclusters 1 and 2 and fills only 100k..150k; qemu
    // writes the rest as zeroes, which may or may not stay holes: punched, they are.
    qemuIo(file, ['write -P 1 100k 50k'], 'qcow2');
    const host = hostOf(qemuMap(file), 100 * KiB) - 100 * KiB;
    punch(file, host + 64 * KiB, 36 * KiB); // 64k..100k
    punch(file, host + 152 * KiB, 40 * KiB); // 152k..192k (whole 4 KiB blocks after the data)
    const theirs = qemuMap(file);
    expect(theirs.filter((e: MapEntry) => e.data && e.zero).map((e: MapEntry) => [e.start, e.length])).toEqual([
      [64 * KiB, 36 * KiB],
      [152 * KiB, 40 * KiB],
    ]);
    expect(ourMap(file)).toEqual(theirs);
    expectSameRead(file, dir, 64 * KiB, 36 * KiB);
  });

  if (native) it('encrypted data: no file offset and nothing looked under, as in qemu-img map', () => {
    const dir = tmpDir('cowchain-qholes-');
    const file = path.join(dir, 'enc.qcow2');
    const secret = Buffer.from('a secret of this test');
    const keySecrets = () => secret;
    createImage(file, { format: 'qcow2', size: 2 * MiB, encrypt: { format: 'luks', keySecret: secret, iterTimeMs: 10 } });
    const img = openImage(file, { writable: true, keySecrets });
    try {
      img.write(0, new Uint8Array(128 * KiB).fill(0x77));
      img.flush();
    } finally {
      img.close();
    }
    // qemu reports no offset for encrypted data: the cluster's L2 entry says where it is.
    const host = hostOfFirstCluster(file);
    punch(file, host + 16 * KiB, 16 * KiB);
    const keyFile = path.join(dir, 'key');
    fs.writeFileSync(keyFile, secret);
    const theirs = JSON.parse(
      qemuImg(['map', '--output=json', '--object', `secret,id=s0,file=${keyFile}`, '--image-opts', `driver=qcow2,file.filename=${file},encrypt.key-secret=s0`]).stdout,
    );
    expect(theirs.some((e: MapEntry) => e.zero && e.data), 'qemu does not look under encrypted data').toBe(false);
    expect(ourMap(file, keySecrets)).toEqual(theirs);
  });
});

/** The host offset of guest cluster 0, from the image's L1 and L2 tables (offsets: the qcow2 spec). */
function hostOfFirstCluster(file: string): number {
  const OFFSET_MASK = 0x00fffffffffffe00n;
  const l1 = Number(readBE(file, 40, 8));
  const l2 = Number(readBE(file, l1, 8) & OFFSET_MASK);
  const host = Number(readBE(file, l2, 8) & OFFSET_MASK);
  if (l2 === 0 || host === 0) throw new Error(`cluster 0 of ${file} is not allocated (L2 at ${l2})`);
  return host;
}

/** cowchain's guest view equals qemu-img convert's, and [offset, offset + length) reads as zeros. */
function expectSameRead(file: string, dir: string, offset: number, length: number): void {
  const theirs = qemuRaw(file, dir);
  const img = openImage(file);
  let ours: Uint8Array;
  try {
    ours = img.read(0, theirs.length);
  } finally {
    img.close();
  }
  expect(Buffer.from(ours).equals(theirs), 'same guest bytes as qemu-img convert').toBe(true);
  expect(theirs.subarray(offset, offset + length).every((b) => b === 0), 'the hole reads as zeros').toBe(true);
}
