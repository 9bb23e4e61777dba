// Backing chains for the chain-operation acceptance tests (issue 4): a fast-check arbitrary of
// chain geometries (1–4 overlays over a raw or qcow2 base, mixed cluster sizes, compat 0.10/1.1,
// extended L2, refcount widths, compressed clusters in the base, layers smaller and larger than
// each other), a builder that makes the chain with qemu-img/qemu-io only (so the fixtures are
// qemu's, never ours), and the comparisons every test repeats: `qemu-img compare`, `qemu-img
// check`, header fields of `qemu-img info`.
import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import { expect } from 'vitest';
import { qemuCheck, qemuImg, qemuInfo, qemuIo } from './qemu.js';
import { KiB, MiB, randomCommands, writePatternedRaw } from './images.js';

export type Fmt = 'raw' | 'qcow2';

export interface LayerSpec {
  /** File name inside the chain's directory (backing names are stored relative: just this name). */
  name: string;
  format: Fmt;
  /** Virtual size (whole sectors). */
  size: number;
  clusterSize: number;
  compat: '0.10' | '1.1';
  extendedL2: boolean;
  refcountBits: number;
  /**
   * How the layer gets its data: `io` = qemu-io writes / zero writes / discards; `compressed` =
   * (base only) `qemu-img convert -c` of a patterned raw file, then a few qemu-io commands on top;
   * `patterned` = (raw base only) a patterned raw file written whole.
   */
  fill: 'io' | 'compressed' | 'patterned';
  seed: number;
  /** qemu-io commands for `io` (and on top of `compressed`). */
  ops: number;
  /** Largest length of one qemu-io command. */
  maxLen: number;
  /** Explicit qemu-io commands for an `io` layer, instead of the seeded random ones. */
  commands?: string[];
}

/** Bottom (the base) first, top last. */
export interface ChainSpec {
  layers: LayerSpec[];
}

const CLUSTER_BITS = [9, 10, 12, 14, 15, 16, 16, 16, 21] as const;

export function qcow2Options(l: Pick<LayerSpec, 'clusterSize' | 'compat' | 'extendedL2' | 'refcountBits'>): string {
  return [`cluster_size=${l.clusterSize}`, `compat=${l.compat}`, `refcount_bits=${l.refcountBits}`, `extended_l2=${l.extendedL2 ? 'on' : 'off'}`].join(',');
}

const geometryArb = fc.record({
  clusterBits: fc.constantFrom(...CLUSTER_BITS),
  v3: fc.integer({ min: 0, max: 3 }).map((n) => n > 0),
  extendedL2: fc.boolean(),
  refcountOrder: fc.constantFrom(4, 4, 4, 0, 1, 3, 5, 6),
});

function geometry(g: { clusterBits: number; v3: boolean; extendedL2: boolean; refcountOrder: number }) {
  const clusterSize = 2 ** g.clusterBits;
  return {
    clusterSize,
    compat: (g.v3 ? '1.1' : '0.10') as '1.1' | '0.10',
    extendedL2: g.v3 && g.extendedL2 && clusterSize >= 16 * KiB,
    refcountBits: g.v3 ? 2 ** g.refcountOrder : 16,
  };
}

export interface ChainArbOptions {
  /** Overlays above the base (default 1..4). */
  minOverlays?: number;
  maxOverlays?: number;
  /** Base formats to draw from (default all three kinds). */
  baseKinds?: ('raw' | 'qcow2' | 'compressed')[];
  /** Largest baseline virtual size (default 3 MiB). */
  maxSize?: number;
}

/**
 * Chains of 1–4 overlays over a raw or qcow2 base. Sizes vary ±50% per layer around a baseline
 * (a base smaller and larger than the top both occur, sizes are often not cluster-aligned); the
 * top shares the cluster size and L2 format of a qcow2 base about half the time (the commit fast
 * path), else everything is drawn independently.
 */
export function chainArb(o: ChainArbOptions = {}): fc.Arbitrary<ChainSpec> {
  const kinds = o.baseKinds ?? ['raw', 'qcow2', 'compressed'];
  return fc
    .record({
      overlays: fc.integer({ min: o.minOverlays ?? 1, max: o.maxOverlays ?? 4 }),
      baseKind: fc.constantFrom(...kinds),
      baseline: fc.integer({ min: 256, max: Math.floor((o.maxSize ?? 3 * MiB) / 4096) }).map((n) => n * 4096),
      geometries: fc.array(geometryArb, { minLength: 5, maxLength: 5 }),
      sizes: fc.array(fc.integer({ min: 500, max: 1500 }), { minLength: 5, maxLength: 5 }),
      tails: fc.array(fc.constantFrom(0, 0, 0, 1, 3, 7, -1), { minLength: 5, maxLength: 5 }),
      ops: fc.array(fc.integer({ min: 4, max: 40 }), { minLength: 5, maxLength: 5 }),
      maxLens: fc.array(fc.constantFrom(4 * KiB, 64 * KiB, 256 * KiB, 1 * MiB), { minLength: 5, maxLength: 5 }),
      sameAsBase: fc.boolean(),
      seed: fc.integer({ min: 1, max: 2 ** 30 }),
    })
    .map((r) => {
      const layers: LayerSpec[] = [];
      for (let i = 0; i <= r.overlays; i++) {
        const g = geometry(r.geometries[i]);
        // Big clusters get small images: a 2 MiB-cluster layer stays at a few clusters.
        const size = Math.max(512, Math.round((r.baseline * r.sizes[i]) / 1000 / 512) * 512 + r.tails[i] * 512);
        const isBase = i === 0;
        const format: Fmt = isBase && r.baseKind === 'raw' ? 'raw' : 'qcow2';
        layers.push({
          name: isBase ? (format === 'raw' ? 'l0.raw' : 'l0.qcow2') : `l${i}.qcow2`,
          format,
          size,
          ...g,
          fill: isBase ? (r.baseKind === 'raw' ? 'patterned' : r.baseKind === 'compressed' ? 'compressed' : 'io') : 'io',
          seed: r.seed + i * 7919,
          ops: r.ops[i],
          maxLen: r.maxLens[i],
        });
      }
      // The commit fast path: the top exactly like a qcow2 base (same cluster size, standard L2).
      if (r.sameAsBase && layers[0].format === 'qcow2') {
        const top = layers[layers.length - 1];
        top.clusterSize = layers[0].clusterSize;
        top.extendedL2 = false;
        layers[0].extendedL2 = false;
      }
      if (r.sameAsBase && layers[0].format === 'raw') {
        const top = layers[layers.length - 1];
        top.extendedL2 = false;
      }
      return { layers };
    });
}

/** One line per layer, for failure messages (and to replay a case by hand). */
export function describeChain(spec: ChainSpec): string {
  return spec.layers
    .map((l) =>
      l.format === 'raw'
        ? `${l.name}: raw size=${l.size} seed=${l.seed}`
        : `${l.name}: qcow2 size=${l.size} ${qcow2Options(l)} fill=${l.fill} ops=${l.ops} maxLen=${l.maxLen} seed=${l.seed}`,
    )
    .join('\n');
}

/** qemu-io commands that fill one qcow2 layer (deterministic from its seed). */
export function layerCommands(l: LayerSpec): string[] {
  if (l.commands) return l.commands;
  return randomCommands(l.seed, l.size, {
    count: l.ops,
    maxLen: Math.min(l.maxLen, l.size),
    zeroShare: 0.15,
    zeroUnmapShare: 0.05,
    discardShare: 0.1,
  });
}

/**
 * Make the chain in `dir` with qemu only. Returns the file names, bottom first; each overlay names
 * the layer below by its bare file name (relative to `dir`), with its format.
 *
 * qemu-img creates every layer first, then one qemu-io process fills them bottom first, opening
 * and closing each in turn (a qemu-io start per layer cost ~25 ms of CPU each). Bottom first as
 * before: an overlay's partial-cluster writes copy what the layers below read at that moment.
 */
export function buildChain(dir: string, spec: ChainSpec): string[] {
  const names: string[] = [];
  const fills: { file: string; cmds: string[] }[] = [];
  for (let i = 0; i < spec.layers.length; i++) {
    const l = spec.layers[i];
    const file = path.join(dir, l.name);
    if (i === 0) {
      if (l.format === 'raw') {
        writePatternedRaw(file, l.size, l.seed);
      } else if (l.fill === 'compressed') {
        const src = path.join(dir, `${l.name}.src.raw`);
        writePatternedRaw(src, l.size, l.seed);
        qemuImg(['convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', qcow2Options(l), src, file]);
        fs.rmSync(src);
        fills.push({ file, cmds: layerCommands({ ...l, ops: Math.min(l.ops, 8) }) });
      } else {
        qemuImg(['create', '-q', '-f', 'qcow2', '-o', qcow2Options(l), file, String(l.size)]);
        fills.push({ file, cmds: layerCommands(l) });
      }
    } else {
      const below = spec.layers[i - 1];
      qemuImg(['create', '-q', '-f', 'qcow2', '-o', qcow2Options(l), '-b', below.name, '-F', below.format, file, String(l.size)]);
      fills.push({ file, cmds: layerCommands(l) });
    }
    names.push(l.name);
  }
  const cmds = fills.flatMap((f, i) => [...(i > 0 ? ['close', `open -o driver=qcow2 ${f.file}`] : []), ...f.cmds]);
  if (fills.length > 0) qemuIo(fills[0].file, cmds, 'qcow2');
  return names;
}

/** Copy every file of `dir` (no subdirectories) into a fresh `dst` directory. */
export function copyDir(dir: string, dst: string): string {
  fs.mkdirSync(dst, { recursive: true });
  for (const f of fs.readdirSync(dir)) {
    const p = path.join(dir, f);
    if (fs.statSync(p).isFile()) fs.copyFileSync(p, path.join(dst, f));
  }
  return dst;
}

const chunkA = Buffer.alloc(1 << 20);
const chunkB = Buffer.alloc(1 << 20);

/**
 * Whether two files hold the same bytes, read a MiB at a time into two buffers reused for every
 * call: reading whole images into fresh buffers cost a page fault per 4 KiB (~11 µs each here).
 */
export function sameFileBytes(a: string, b: string): boolean {
  const fa = fs.openSync(a, 'r');
  const fb = fs.openSync(b, 'r');
  try {
    if (fs.fstatSync(fa).size !== fs.fstatSync(fb).size) return false;
    for (let at = 0; ; ) {
      const n = fs.readSync(fa, chunkA, 0, chunkA.length, at);
      const m = fs.readSync(fb, chunkB, 0, chunkB.length, at);
      if (n !== m || !chunkA.subarray(0, n).equals(chunkB.subarray(0, m))) return false;
      if (n === 0) return true;
      at += n;
    }
  } finally {
    fs.closeSync(fa);
    fs.closeSync(fb);
  }
}

/** The guest views of two images (each with its own chain) as qemu-img compare sees them. */
export function qemuCompare(a: string, b: string, fa?: Fmt, fb?: Fmt, strict = false): { status: number; out: string } {
  const args = ['compare', ...(fa ? ['-f', fa] : []), ...(fb ? ['-F', fb] : []), ...(strict ? ['-s'] : []), a, b];
  const r = qemuImg(args, { ok: [0, 1, 2] });
  return { status: r.status, out: (r.stdout + r.stderr).trim() };
}

/** `qemu-img compare` says identical (exit 0). */
export function expectIdentical(a: string, b: string, label: string, fa?: Fmt, fb?: Fmt): void {
  const r = qemuCompare(a, b, fa, fb);
  expect(r.status, `${label}\nqemu-img compare ${a} ${b}: ${r.out}`).toBe(0);
}

/** `qemu-img check`: 0 errors and 0 leaks (a raw file has nothing to check). */
export function expectCheckClean(file: string, format: Fmt, label: string): void {
  if (format === 'raw') return;
  const { status, result } = qemuCheck(file);
  expect(status, `${label}\nqemu-img check ${file}: ${JSON.stringify(result)}`).toBe(0);
}

/** `qemu-img check`: no corruption (exit 0 clean or 3 leaks only). */
export function expectNoCorruption(file: string, label: string): void {
  const { status, result } = qemuCheck(file);
  expect([0, 3], `${label}\nqemu-img check ${file}: exit ${status}: ${JSON.stringify(result)}`).toContain(status);
}

/** Header facts of one `qemu-img info` JSON object that two images made the same way must share. */
function facts(info: any): Record<string, unknown> {
  const d = info['format-specific']?.data ?? {};
  return {
    format: info.format,
    'virtual-size': info['virtual-size'],
    'cluster-size': info['cluster-size'],
    'backing-filename': info['backing-filename'],
    'backing-filename-format': info['backing-filename-format'],
    'dirty-flag': info['dirty-flag'],
    compat: d.compat,
    'compression-type': d['compression-type'],
    'lazy-refcounts': d['lazy-refcounts'],
    'refcount-bits': d['refcount-bits'],
    corrupt: d.corrupt,
    'extended-l2': d['extended-l2'],
  };
}

export function headerFacts(file: string, format?: Fmt): Record<string, unknown> {
  return facts(format ? JSON.parse(qemuImg(['info', '--output=json', '-f', format, file]).stdout) : qemuInfo(file));
}

/** Header facts of every image of the chain under `file` (qemu-img info --backing-chain), top first. */
export function chainFacts(file: string): Record<string, unknown>[] {
  return (qemuInfo(file, true) as any[]).map(facts);
}

export function expectSameHeader(ours: string, theirs: string, label: string, format?: Fmt): void {
  expect(headerFacts(ours, format), `${label}\nqemu-img info of ${ours} vs ${theirs}`).toStrictEqual(headerFacts(theirs, format));
}

/** Every image of both chains has the same header facts, layer by layer (top first). */
export function expectSameChainHeaders(ours: string, theirs: string, label: string): void {
  expect(chainFacts(ours), `${label}\nqemu-img info --backing-chain of ${ours} vs ${theirs}`).toStrictEqual(chainFacts(theirs));
}

/** The top image allocates nothing itself: opened without its backing file, qemu maps no cluster. */
export function expectNothingAllocated(file: string, label: string): void {
  const spec = JSON.stringify({ driver: 'qcow2', file: { driver: 'file', filename: file }, backing: null });
  const map = JSON.parse(qemuImg(['map', '--output=json', `json:${spec}`]).stdout) as { present: boolean; start: number; length: number }[];
  const present = map.filter((e) => e.present);
  expect(present, `${label}\n${file} still allocates ${JSON.stringify(present.slice(0, 4))}`).toStrictEqual([]);
}
