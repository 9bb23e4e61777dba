// Acceptance matrix of the engine read path (issue 2). Every image is made by qemu-img/qemu-io in a
// temporary directory, with seeded pseudo-random contents; for each one we check, against qemu:
//   (a) the guest view read through the engine equals `qemu-img convert -O raw` byte for byte;
//   (b) our convertToRaw output equals it too;
//   (c) qemuStyleInfo equals `qemu-img info --output=json` on every field we report (and we report
//       every field of the required list that qemu reports), for each image of the chain;
//   (d) Image.map() equals `qemu-img map --output=json` exactly.
//
// Without the native binding (native/file-extents.c) our raw layers report every byte as data,
// where qemu reports holes of a sparse raw file as zero. Every raw base below is written
// completely with non-zero patterns (makeFullRaw: qemu-io `write -P`), so it has no holes and
// qemu's map and ours agree either way; test/interop/raw-holes.test.ts covers the holes.
import * as fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToRaw, openImage, qemuStyleInfo, type Image } from '../../src/index.js';
import { qemuImg, qemuInfo, qemuMap, qemuRaw, requireQemu, tmpDir } from '../support/qemu.js';
import {
  H, KiB, MiB, createQcow2, expectInfoMatches, expectSameBytes, join, makeFullRaw, plain, qemuIoMany, randInt,
  randomCommands, readBE, rng, writeBE, writePatternedRaw,
} from '../support/images.js';

interface Built {
  /** The image (top of the chain) to open. */
  file: string;
  /** Images the case expects in the chain (top first), to prove the chain really is that deep. */
  depth: number;
}

interface Case {
  name: string;
  build(dir: string): Built;
  /** What qemu says the image has — proof that the case exercises what its name says. */
  has?: (map: any[], info: any) => void;
}

const spec = (info: any) => info['format-specific'].data;
/** Compressed clusters: data without a host offset. */
const hasCompressed = (map: any[]) => expect(map.some((e) => e.data && e.offset === undefined), 'compressed clusters').toBe(true);
/** Zero clusters in the top image. */
const hasZero = (map: any[]) => expect(map.some((e) => e.zero && e.present && e.depth === 0), 'zero clusters').toBe(true);
/** Extents smaller than a cluster (subclusters) in the top image. */
const hasSubclusters = (map: any[], info: any) => {
  expect(spec(info)['extended-l2']).toBe(true);
  expect(map.some((e) => e.depth === 0 && (e.start % info['cluster-size'] !== 0 || e.length % info['cluster-size'] !== 0)), 'subcluster extents').toBe(true);
};
const hasZstd = (map: any[], info: any) => {
  hasCompressed(map);
  expect(spec(info)['compression-type']).toBe('zstd');
};
const hasDepths = (n: number) => (map: any[]) => {
  for (let d = 0; d < n; d++) expect(map.some((e) => e.depth === d && e.data), `data at depth ${d}`).toBe(true);
};

/** Writes, zero writes and discards spread over the whole image, from a seed. */
function scribble(file: string, seed: number, size: number, opts: Partial<Parameters<typeof randomCommands>[2]> = {}): void {
  qemuIoMany(file, randomCommands(seed, size, { count: 60, maxLen: 96 * KiB, zeroShare: 0.15, zeroUnmapShare: 0.05, discardShare: 0.1, ...opts }));
}

/** qcow2 made by `qemu-img convert -c` from a patterned raw file. */
function compressed(dir: string, size: number, seed: number, opts: Record<string, string | number>): string {
  const src = join(dir, 'src.raw');
  writePatternedRaw(src, size, seed);
  const out = join(dir, 'c.qcow2');
  const o = Object.entries(opts).map(([k, v]) => `${k}=${v}`);
  qemuImg(['convert', '-c', '-O', 'qcow2', ...(o.length ? ['-o', o.join(',')] : []), src, out]);
  return out;
}

const single = (name: string, size: number, opts: Record<string, string | number>, seed: number, mix: Partial<Parameters<typeof randomCommands>[2]> = {}, extra: string[] = []): Case => ({
  name,
  has(map, info) {
    expect(spec(info).compat).toBe(opts.compat ?? '1.1');
    expect(info['cluster-size']).toBe(Number(opts.cluster_size ?? 65536));
    expect(spec(info)['refcount-bits']).toBe(Number(opts.refcount_bits ?? 16));
    if (opts.extended_l2 === 'on') hasSubclusters(map, info);
    else if ((opts.compat ?? '1.1') === '1.1' && (mix.zeroShare ?? 0.15) > 0) hasZero(map);
    expect(map.some((e) => e.data && e.depth === 0)).toBe(true);
  },
  build(dir) {
    const f = createQcow2(join(dir, 'img.qcow2'), size, opts);
    scribble(f, seed, size, mix);
    if (extra.length) qemuIoMany(f, extra);
    return { file: f, depth: 1 };
  },
});

const CASES: Case[] = [
  // --- versions and cluster sizes ---
  single('compat 0.10, 64K clusters', 4 * MiB, { compat: '0.10' }, 1),
  single('compat 0.10, 512B clusters', 2 * MiB, { compat: '0.10', cluster_size: 512 }, 2, { maxLen: 8 * KiB, count: 120 }),
  single('compat 1.1, 512B clusters', 2 * MiB, { compat: '1.1', cluster_size: 512 }, 3, { maxLen: 8 * KiB, count: 120 }),
  single('compat 1.1, 4K clusters', 4 * MiB, { compat: '1.1', cluster_size: 4096 }, 4, { maxLen: 24 * KiB, count: 100 }),
  single('compat 1.1, 64K clusters', 4 * MiB, { compat: '1.1', cluster_size: 65536 }, 5),
  single('compat 1.1, 2M clusters', 16 * MiB, { compat: '1.1', cluster_size: 2 * MiB }, 6, { maxLen: 3 * MiB, count: 20 }, [`write -z ${4 * MiB} ${2 * MiB}`]),
  single('byte-granular writes, 4K clusters', 1 * MiB, { cluster_size: 4096 }, 7, { align: 1, maxLen: 9000, count: 80, zeroShare: 0, zeroUnmapShare: 0, discardShare: 0 }),
  // --- refcount widths ---
  single('refcount_bits 1', 4 * MiB, { refcount_bits: 1 }, 11),
  single('refcount_bits 16', 4 * MiB, { refcount_bits: 16, cluster_size: 4096 }, 12, { maxLen: 24 * KiB }),
  single('refcount_bits 64', 4 * MiB, { refcount_bits: 64 }, 13),
  single('refcount_bits 1, 512B clusters', 1 * MiB, { refcount_bits: 1, cluster_size: 512 }, 14, { maxLen: 6 * KiB }),
  // --- header states qemu reports (read-only opens) ---
  {
    name: 'lazy_refcounts=on with the dirty bit set',
    build(d) {
      const f = createQcow2(join(d, 'img.qcow2'), 4 * MiB, { lazy_refcounts: 'on' });
      scribble(f, 15, 4 * MiB);
      writeBE(f, H.incompat, 8, readBE(f, H.incompat, 8) | 1n);
      return { file: f, depth: 1 };
    },
    has: (_map, info) => {
      expect(info['dirty-flag']).toBe(true);
      expect(spec(info)['lazy-refcounts']).toBe(true);
    },
  },
  {
    name: 'corrupt bit set',
    build(d) {
      const f = createQcow2(join(d, 'img.qcow2'), 4 * MiB, {});
      scribble(f, 16, 4 * MiB);
      writeBE(f, H.incompat, 8, readBE(f, H.incompat, 8) | 2n);
      return { file: f, depth: 1 };
    },
    has: (_map, info) => expect(spec(info).corrupt).toBe(true),
  },
  // --- compressed (qemu-img convert -c) ---
  { name: 'deflate, 64K clusters', build: (d) => ({ file: compressed(d, 4 * MiB, 21, {}), depth: 1 }), has: hasCompressed },
  { name: 'zstd, 64K clusters', build: (d) => ({ file: compressed(d, 4 * MiB, 22, { compression_type: 'zstd' }), depth: 1 }), has: hasZstd },
  { name: 'deflate, 512B clusters', build: (d) => ({ file: compressed(d, 1 * MiB, 23, { cluster_size: 512 }), depth: 1 }), has: hasCompressed },
  { name: 'zstd, 4K clusters', build: (d) => ({ file: compressed(d, 2 * MiB, 24, { compression_type: 'zstd', cluster_size: 4096 }), depth: 1 }), has: hasZstd },
  { name: 'deflate, 2M clusters', build: (d) => ({ file: compressed(d, 8 * MiB, 25, { cluster_size: 2 * MiB }), depth: 1 }), has: hasCompressed },
  { name: 'zstd, 2M clusters', build: (d) => ({ file: compressed(d, 8 * MiB, 26, { compression_type: 'zstd', cluster_size: 2 * MiB }), depth: 1 }), has: hasZstd },
  { name: 'deflate, compat 0.10', build: (d) => ({ file: compressed(d, 2 * MiB, 27, { compat: '0.10' }), depth: 1 }), has: hasCompressed },
  {
    name: 'zstd, then partly rewritten (compressed, normal, zero and discarded clusters mixed)',
    build(d) {
      const f = compressed(d, 4 * MiB, 28, { compression_type: 'zstd' });
      scribble(f, 29, 4 * MiB, { count: 30 });
      return { file: f, depth: 1 };
    },
    has: (map, info) => {
      hasZstd(map, info);
      hasZero(map);
    },
  },
  // --- extended L2 (subclusters) ---
  single('extended_l2, 16K clusters (512B subclusters)', 2 * MiB, { extended_l2: 'on', cluster_size: 16 * KiB }, 31, { maxLen: 12 * KiB, count: 120 }),
  single('extended_l2, 64K clusters (2K subclusters)', 4 * MiB, { extended_l2: 'on', cluster_size: 64 * KiB }, 32, { maxLen: 40 * KiB, count: 120 }),
  single('extended_l2, 2M clusters (64K subclusters)', 8 * MiB, { extended_l2: 'on', cluster_size: 2 * MiB }, 33, { maxLen: 300 * KiB, count: 60 }),
  {
    name: 'extended_l2 overlay over a raw base (unallocated subclusters read the base)',
    build(d) {
      const base = join(d, 'base.raw');
      makeFullRaw(base, 4 * MiB, 34);
      const f = createQcow2(join(d, 'ov.qcow2'), 4 * MiB, { extended_l2: 'on', cluster_size: 32 * KiB }, { file: 'base.raw', format: 'raw' });
      scribble(f, 35, 4 * MiB, { maxLen: 6 * KiB, count: 150 });
      return { file: f, depth: 2 };
    },
    has: (map, info) => {
      hasSubclusters(map, info);
      hasDepths(2)(map);
    },
  },
  // --- zero clusters and discards ---
  {
    name: 'zero clusters (write -z, write -z -u) and discards over data, no backing',
    build(d) {
      const size = 4 * MiB;
      const f = createQcow2(join(d, 'z.qcow2'), size, { cluster_size: 64 * KiB });
      qemuIoMany(f, [`write -P 0x5a 0 ${size}`]);
      qemuIoMany(f, randomCommands(41, size, { count: 60, maxLen: 256 * KiB, zeroShare: 0.4, zeroUnmapShare: 0.2, discardShare: 0.3 }));
      return { file: f, depth: 1 };
    },
    has: (map) => {
      hasZero(map);
      // Zeroed in place (preallocated: offset kept) and unmapped (no offset) both occur.
      expect(map.some((e) => e.zero && e.present && e.offset !== undefined)).toBe(true);
      expect(map.some((e) => e.zero && e.offset === undefined)).toBe(true);
    },
  },
  {
    name: 'zero clusters and discards in an overlay over a raw base',
    build(d) {
      const size = 4 * MiB;
      const base = join(d, 'base.raw');
      makeFullRaw(base, size, 42);
      const f = createQcow2(join(d, 'ov.qcow2'), size, {}, { file: 'base.raw', format: 'raw' });
      qemuIoMany(f, randomCommands(43, size, { count: 60, maxLen: 256 * KiB, zeroShare: 0.3, zeroUnmapShare: 0.2, discardShare: 0.2 }));
      return { file: f, depth: 2 };
    },
    has: (map) => {
      hasZero(map);
      hasDepths(2)(map);
    },
  },
  // --- chains ---
  {
    name: '3-deep chain qcow2 -> qcow2 -> qcow2 -> raw base, different data at each level',
    build(d) {
      const size = 4 * MiB;
      makeFullRaw(join(d, 'base.raw'), size, 51, 64);
      const l1 = createQcow2(join(d, 'l1.qcow2'), size, { cluster_size: 4096 }, { file: 'base.raw', format: 'raw' });
      scribble(l1, 52, size, { maxLen: 40 * KiB });
      const l2 = createQcow2(join(d, 'l2.qcow2'), size, { cluster_size: 64 * KiB }, { file: 'l1.qcow2', format: 'qcow2' });
      scribble(l2, 53, size, { count: 40 });
      const l3 = createQcow2(join(d, 'l3.qcow2'), size, { cluster_size: 512 }, { file: 'l2.qcow2', format: 'qcow2' });
      scribble(l3, 54, size, { maxLen: 10 * KiB, count: 80 });
      return { file: l3, depth: 4 };
    },
    has: hasDepths(4),
  },
  {
    name: 'raw backing file shorter than its overlay',
    build(d) {
      const small = join(d, 'small.raw');
      makeFullRaw(small, 1 * MiB + 40 * KiB + 512, 61);
      const f = createQcow2(join(d, 'ov.qcow2'), 4 * MiB, {}, { file: 'small.raw', format: 'raw' });
      // Writes around the end of the backing file: clusters that straddle it are copied on write.
      qemuIoMany(f, [
        `write -P 0x71 ${1 * MiB + 32 * KiB} 4096`,
        `write -P 0x72 ${1 * MiB + 200 * KiB} 1024`,
        `write -z ${3 * MiB} ${64 * KiB}`,
        ...randomCommands(62, 4 * MiB, { count: 20, maxLen: 64 * KiB }),
      ]);
      return { file: f, depth: 2 };
    },
    has: hasDepths(2),
  },
  {
    // qemu sees a raw file in whole 512-byte sectors: its size rounds up, the tail reads as zeros.
    name: 'raw backing file whose size is not a multiple of 512',
    build(d) {
      const r = rng(64);
      fs.writeFileSync(join(d, 'odd.raw'), Buffer.from(Array.from({ length: 1 * MiB + 1000 }, () => randInt(r, 1, 256))));
      const f = createQcow2(join(d, 'ov.qcow2'), 2 * MiB, {}, { file: 'odd.raw', format: 'raw' });
      qemuIoMany(f, [`write -P 0x19 ${512 * KiB} 4096`]);
      return { file: f, depth: 2 };
    },
    has: hasDepths(2),
  },
  {
    name: 'qcow2 backing file shorter than its overlay (overlay created BIGGER)',
    build(d) {
      const base = createQcow2(join(d, 'small.qcow2'), 2 * MiB + 36 * KiB, { cluster_size: 64 * KiB });
      qemuIoMany(base, [`write -P 0x33 0 ${2 * MiB + 36 * KiB}`, `write -z ${512 * KiB} ${128 * KiB}`]);
      const f = createQcow2(join(d, 'ov.qcow2'), 5 * MiB, { cluster_size: 4096 }, { file: 'small.qcow2', format: 'qcow2' });
      qemuIoMany(f, [`write -P 0x44 ${2 * MiB} 8192`, ...randomCommands(63, 5 * MiB, { count: 30, maxLen: 32 * KiB })]);
      return { file: f, depth: 2 };
    },
    has: hasDepths(2),
  },
  {
    name: 'overlay (4K clusters) over a qcow2 base with 2M clusters',
    build(d) {
      const size = 8 * MiB;
      const base = createQcow2(join(d, 'base.qcow2'), size, { cluster_size: 2 * MiB });
      scribble(base, 71, size, { count: 12, maxLen: 1 * MiB });
      const f = createQcow2(join(d, 'ov.qcow2'), size, { cluster_size: 4096 }, { file: 'base.qcow2', format: 'qcow2' });
      scribble(f, 72, size, { maxLen: 40 * KiB });
      return { file: f, depth: 2 };
    },
    has: hasDepths(2),
  },
  {
    name: 'overlay (64K clusters, extended_l2) over a qcow2 base with 512B clusters',
    build(d) {
      const size = 2 * MiB;
      const base = createQcow2(join(d, 'base.qcow2'), size, { cluster_size: 512 });
      scribble(base, 73, size, { maxLen: 16 * KiB, count: 80 });
      const f = createQcow2(join(d, 'ov.qcow2'), size, { cluster_size: 64 * KiB, extended_l2: 'on' }, { file: 'base.qcow2', format: 'qcow2' });
      scribble(f, 74, size, { maxLen: 20 * KiB, count: 60 });
      return { file: f, depth: 2 };
    },
    has: hasDepths(2),
  },
  {
    name: 'compat 0.10 overlay over a compressed compat 0.10 base',
    build(d) {
      const base = compressed(d, 2 * MiB, 75, { compat: '0.10' });
      const f = createQcow2(join(d, 'ov.qcow2'), 2 * MiB, { compat: '0.10' }, { file: 'c.qcow2', format: 'qcow2' });
      scribble(f, 76, 2 * MiB, { count: 30 });
      expect(fs.existsSync(base)).toBe(true);
      return { file: f, depth: 2 };
    },
    has: hasDepths(2),
  },
];

beforeAll(() => requireQemu());

for (const c of CASES) {
  describe(c.name, () => {
    let dir: string;
    let built: Built;
    let img: Image;
    let want: Buffer;
    // qemu's answers about the case's files, asked once each (a qemu-img start is ~25 ms of CPU).
    // `info --backing-chain` starts with what `info` says of the top image.
    let theirMap: any[] | undefined;
    let theirChain: any[] | undefined;
    const qmap = () => (theirMap ??= qemuMap(built.file));
    const qchain = () => (theirChain ??= qemuInfo(built.file, true) as any[]);

    beforeAll(() => {
      dir = tmpDir('cowchain-matrix-');
      built = c.build(dir);
      want = qemuRaw(built.file, dir);
      img = openImage(built.file);
    });
    afterAll(() => img?.close());

    it('opens the whole chain', () => {
      expect(img.chain().length).toBe(built.depth);
      expect(img.virtualSize).toBe(want.length);
    });

    it('(a) read(0, size) equals qemu-img convert -O raw', () => {
      expectSameBytes(img.read(0, img.virtualSize), want, 'guest view');
    });

    it('(a) unaligned piecewise reads agree with the whole', () => {
      const size = img.virtualSize;
      const step = 65_537 + 333;
      for (let off = 17; off < size; off += step) {
        const n = Math.min(step - 1000, size - off);
        expectSameBytes(img.read(off, n), want.subarray(off, off + n), `read(${off}, ${n})`);
      }
    });

    it('(b) convertToRaw equals qemu-img convert -O raw', () => {
      const out = join(dir, 'ours.raw');
      convertToRaw(img, out);
      expectSameBytes(fs.readFileSync(out), want, 'converted file');
      fs.rmSync(out);
    });

    it('(c) qemuStyleInfo equals qemu-img info, for every image of the chain', () => {
      const theirs = qchain();
      expectInfoMatches(qemuStyleInfo(img) as any, theirs[0], 'top');
      const ours = img.chain();
      expect(ours.length).toBe(theirs.length);
      ours.forEach((layer, i) => expectInfoMatches(qemuStyleInfo(layer) as any, theirs[i], `layer ${i}`));
    });

    // qemu-img map is asked here, after the reads above: ext4 reports an fallocated (unwritten)
    // range as data once a read has brought its pages into the page cache, and the engine's map
    // and qemu's must see the file in the same state.
    it('(d) map() equals qemu-img map', () => {
      expect(plain(img.map())).toStrictEqual(qmap());
    });

    const has = c.has;
    if (has) {
      it('the image has what the case is about (per qemu)', () => {
        has(qmap(), qchain()[0]);
      });
    }
  });
}
