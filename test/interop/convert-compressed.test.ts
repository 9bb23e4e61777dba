// Compressed output (issue 18): `convert -c`, refereed by qemu-img 7.2.
//
// fast-check draws (seeded) a chain as convert.test.ts does and a qcow2 target geometry (cluster
// sizes 512 B..2 MiB, compat 0.10/1.1, extended L2, refcount widths down to 1 bit) with deflate
// or, on compat 1.1, zstd; cowchain converts the source with compression and:
//  - `qemu-img check` is clean (no error, no leak: the refcounts of packed compressed clusters
//    are qemu's, one per descriptor reaching into a cluster);
//  - `qemu-img compare` finds it identical to the source, and cowchain reads it back identically;
//  - `qemu-img info` shows the header qemu-img convert -c writes (compression type included).
// Fixed cases pin the rest: a cluster that does not compress is stored as a normal cluster, as
// qemu stores it; compressed clusters pack back to back inside host clusters (byte offsets);
// the CLI's `-c` and `-o compression_type=zstd`, and what it refuses.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { convertImage, openImage } from '../../src/index.js';
import { qemuCheck, qemuImg, requireQemu, tmpDir } from '../support/qemu.js';
import { KiB, MiB, readBE, writePatternedRaw } from '../support/images.js';
import { byTier } from '../support/tier.js';
import { describeChain, expectCheckClean, expectIdentical, headerFacts, qcow2Options } from '../support/chains.js';
import { assertOnChains, createOptions, qcow2TargetArb, type Qcow2Target } from '../support/convert-property.js';
import { fails, ok } from '../support/cli.js';
import { readGuest } from '../support/guest.js';

/**
 * The quick tier's seed is one whose 3 draws cover every kind of case counted below (found by
 * running the property's arbitraries over seeds 0..3999 and counting).
 */
const SEED = byTier(2483, 0x18c0de);
const RUNS = byTier(3, 30);

let root: string;

beforeAll(() => {
  requireQemu();
  root = tmpDir('cowchain-convert-c-', { memory: true }); // checks, compares, headers, qcow2 maps and file lengths: no fsync or holes observed
});

/** `qemu-img check --output=json`'s count of compressed clusters. */
function compressedClusters(file: string): number {
  return qemuCheck(file).result['compressed-clusters'] ?? 0;
}

describe('convert -c: random chains into compressed qcow2, refereed by qemu-img', () => {
  it(`fast-check (${RUNS} sources × a compressed target)`, async () => {
    const seen = { zstd: 0, zlib: 0, c512: 0, c2m: 0, extl2: 0, refcount1: 0, v2: 0, compressedSource: 0 };
    await assertOnChains(
      { root, seed: SEED, runs: RUNS, maxOverlays: 2, coverage: seen },
      [qcow2TargetArb({ compression: true })],
      (dir, spec, target: Qcow2Target) => {
        const compressionType = target.compressionType!;
        const top = spec.layers[spec.layers.length - 1];
        const file = path.join(dir, top.name);
        const ours = path.join(dir, 'ours.qcow2');
        const theirs = path.join(dir, 'qemu.qcow2');
        const label = `convert -c, target ${qcow2Options(target)},compression_type=${compressionType}\n${describeChain(spec)}`;
        seen[compressionType]++;
        if (target.clusterSize === 512) seen.c512++;
        if (target.clusterSize === 2 * MiB) seen.c2m++;
        if (target.extendedL2) seen.extl2++;
        if (target.refcountBits === 1) seen.refcount1++;
        if (target.compat === '0.10') seen.v2++;
        if (spec.layers[0].fill === 'compressed') seen.compressedSource++;
        const img = openImage(file);
        try {
          convertImage(img, ours, { format: 'qcow2', compressed: true, create: createOptions(target) });
        } finally {
          img.close();
        }
        expectCheckClean(ours, 'qcow2', label);
        expectIdentical(ours, file, `${label}\nagainst the source`, 'qcow2', top.format);
        expect(readGuest(ours).equals(readGuest(file)), `${label}\ncowchain reads its own compressed image as the source`).toBe(true);
        qemuImg(['convert', '-c', '-O', 'qcow2', '-o', `${qcow2Options(target)},compression_type=${compressionType}`, file, theirs]);
        expect(headerFacts(ours), `${label}\nheader`).toStrictEqual(headerFacts(theirs));
      },
    );
  });
});

describe('convert -c: layout as qemu writes it', () => {
  it('compressible clusters are compressed, packed back to back; one that does not compress is a normal cluster', () => {
    const dir = path.join(root, 'layout');
    fs.mkdirSync(dir);
    const cs = 64 * KiB;
    // Clusters 0-2 compress well, cluster 3 is random (does not compress), cluster 4 compresses.
    const src = Buffer.alloc(5 * cs, 0x61);
    crypto.randomFillSync(src, 3 * cs, cs);
    src.fill(0x62, 4 * cs);
    const raw = path.join(dir, 'src.raw');
    fs.writeFileSync(raw, src);
    for (const type of ['zlib', 'zstd'] as const) {
      const ours = path.join(dir, `ours-${type}.qcow2`);
      const theirs = path.join(dir, `qemu-${type}.qcow2`);
      const img = openImage(raw, { format: 'raw' });
      try {
        convertImage(img, ours, { format: 'qcow2', compressed: true, create: { compressionType: type } });
      } finally {
        img.close();
      }
      qemuImg(['convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', `compression_type=${type}`, raw, theirs]);
      expectCheckClean(ours, 'qcow2', type);
      expectIdentical(ours, raw, type, 'qcow2', 'raw');
      expect(compressedClusters(ours), type).toBe(4);
      expect(compressedClusters(ours), type).toBe(compressedClusters(theirs));
      // The L2 table: entries 0-2 compressed, in one host cluster at increasing byte offsets.
      const l1 = Number(readBE(ours, 40, 8));
      const l2 = Number(readBE(ours, l1, 8) & 0x00fffffffffffe00n);
      const entries = [0, 1, 2, 3, 4].map((i) => readBE(ours, l2 + 8 * i, 8));
      const shift = 62n - (16n - 8n);
      const hostOf = (e: bigint) => Number(e & ((1n << shift) - 1n));
      for (const i of [0, 1, 2, 4]) expect((entries[i] >> 62n) & 1n, `${type}: entry ${i} compressed`).toBe(1n);
      expect((entries[3] >> 62n) & 3n, `${type}: entry 3 a normal cluster (COPIED, not compressed)`).toBe(2n);
      expect(hostOf(entries[1])).toBeGreaterThan(hostOf(entries[0]));
      expect(Math.floor(hostOf(entries[2]) / cs), `${type}: packed into one host cluster`).toBe(Math.floor(hostOf(entries[0]) / cs));
      // The next compressed cluster goes on in the open cluster, after the normal one was allocated.
      expect(Math.floor(hostOf(entries[4]) / cs), `${type}: packing resumes after a normal cluster`).toBe(Math.floor(hostOf(entries[0]) / cs));
      expect(fs.statSync(ours).size, `${type}: about the size qemu-img convert -c makes`).toBeLessThanOrEqual(fs.statSync(theirs).size + cs);
    }
  });

  it('the last, partial cluster is zero-padded and compressed; all-zero clusters stay unallocated', () => {
    const dir = path.join(root, 'tail');
    fs.mkdirSync(dir);
    const raw = path.join(dir, 'src.raw');
    const size = 3 * MiB + 1536;
    const data = writePatternedRaw(raw, size, 5);
    data.fill(0, MiB, 2 * MiB);
    fs.writeFileSync(raw, data);
    const ours = path.join(dir, 'ours.qcow2');
    const img = openImage(raw, { format: 'raw' });
    try {
      convertImage(img, ours, { format: 'qcow2', compressed: true });
    } finally {
      img.close();
    }
    expectCheckClean(ours, 'qcow2', 'tail');
    expectIdentical(ours, raw, 'tail', 'qcow2', 'raw');
    const map = JSON.parse(qemuImg(['map', '--output=json', ours]).stdout) as { start: number; length: number; data: boolean }[];
    const hole = map.find((e) => e.start <= MiB && e.start + e.length >= 2 * MiB);
    expect(hole?.data, `zero MiB unallocated: ${JSON.stringify(map)}`).toBe(false);
  });
});

describe('convert -c on the command line', () => {
  it('-c and -o compression_type=zstd write what qemu-img convert -c writes; -c needs a qcow2 target', async () => {
    const dir = path.join(root, 'cli');
    fs.mkdirSync(dir);
    const raw = path.join(dir, 'src.raw');
    writePatternedRaw(raw, 2 * MiB, 9);
    for (const type of ['zlib', 'zstd']) {
      const ours = path.join(dir, `ours-${type}.qcow2`);
      await ok('img', 'convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', `compression_type=${type}`, raw, ours);
      expectCheckClean(ours, 'qcow2', type);
      expectIdentical(ours, raw, type, 'qcow2', 'raw');
      expect(headerFacts(ours)['compression-type']).toBe(type);
      expect(compressedClusters(ours), type).toBeGreaterThan(0);
    }
    const msg = await fails('ECOW_BAD_ARGUMENT', 'img', 'convert', '-c', '-f', 'raw', '-O', 'raw', raw, path.join(dir, 'x.raw'));
    expect(msg).toMatch(/raw/);
    expect(fs.existsSync(path.join(dir, 'x.raw'))).toBe(false);
    await fails('ECOW_BAD_ARGUMENT', 'img', 'convert', '-c', '-O', 'qcow2', '-o', 'compat=0.10,compression_type=zstd', raw, path.join(dir, 'y.qcow2'));
    await fails('ECOW_BAD_ARGUMENT', 'img', 'convert', '-c', '-O', 'qcow2', '-o', 'compression_type=lz4', raw, path.join(dir, 'z.qcow2'));
  });

  it('img create -o compression_type=zstd writes the header qemu-img create writes', async () => {
    const dir = path.join(root, 'create');
    fs.mkdirSync(dir);
    const ours = path.join(dir, 'ours.qcow2');
    const theirs = path.join(dir, 'qemu.qcow2');
    const line = await ok('img', 'create', '-f', 'qcow2', '-o', 'compression_type=zstd', ours, '1M');
    expect(line).toContain('compression_type=zstd');
    qemuImg(['create', '-f', 'qcow2', '-o', 'compression_type=zstd', theirs, '1M']);
    expect(headerFacts(ours)).toStrictEqual(headerFacts(theirs));
    expect(fs.readFileSync(ours).equals(fs.readFileSync(theirs)), 'byte-identical to qemu-img create').toBe(true);
  });
});
