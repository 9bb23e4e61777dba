// Property test of the engine's write path against qemu (issue 3). fast-check draws, with a fixed
// seed, a geometry (cluster size 512 B..2 MiB, refcount_bits 1..64, compat 0.10/1.1, extended L2,
// no / raw / qcow2 backing file with patterned data, smaller or larger than the overlay, sizes not
// cluster-aligned) and a sequence of writes, zero writes, discards and reopen points at offsets that
// are unaligned, on cluster boundaries, straddling them, multi-cluster, near and at the end.
//
// Every sequence is applied three ways:
//   1. through our engine (Image.write / writeZeroes / discard) on an image we created, or on one
//      qemu-img convert -c filled with compressed clusters (writes over compressed data);
//   2. mirrored into a plain buffer: the model of the guest view, with qemu 7.2's semantics;
//   3. through qemu-io on a twin image made by qemu-img create with the same geometry.
// Then: `qemu-img check` of ours reports 0 errors and 0 leaks (exit 0), and `qemu-img convert -O
// raw` of ours, our own read of ours, and `convert` of the twin all equal the model. The twin keeps
// the model honest: a semantic we model wrongly fails on qemu's own image.
//
// The model (qemu's qcow2_co_pdiscard): a discard affects whole clusters inside the range only, plus
// the partial last cluster of an image whose size is not cluster-aligned when the range covers all
// of it up to the end. Discarded clusters read as zeros (v3: zero flag; extended L2: all-zero
// bitmap; v2 without backing file: unallocated). A v2 image WITH a backing file cannot express
// "reads as zeros" and qemu then ignores the discard (it would expose stale backing data), so the
// guest view does not change. Writes and zero writes are byte-exact.
//
// The CLI half runs sequences through `cowchain io` (in-process main(), one invocation per
// sequence) and verifies them with `qemu-io -c 'read -P …'` over every uniform run of the model, and
// the reverse: qemu-io writes, `cowchain io -c 'read -P …'` verifies (and reports a wrong pattern).
import * as fs from 'node:fs';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { openImage, type Image } from '../../src/index.js';
import { createImage } from '../../src/image/create.js';
import { expectSameGuest, qemuCheck, qemuImg, qemuIo, requireQemu, tmpDir } from '../support/qemu.js';
import { firstDiff, join, rng, writePatternedRaw } from '../support/images.js';
import { cli } from '../support/cli.js';
import { byTier } from '../support/tier.js';

/**
 * Cases of the properties: a smoke in `npm test`, more in `npm run test:full`. The engine
 * property's quick seed is one whose 6 draws still cover every kind it counts (found by running
 * its arbitrary over seeds 0..2999 and counting); the full tier keeps 70 from the old seed.
 */
const SEED = 0x3a11c0de;
const ENGINE_SEED = byTier(198, SEED);
const RUNS = byTier({ engine: 6, ioWrites: 3, ioReads: 3 }, { engine: 70, ioWrites: 14, ioReads: 10 });
const MiB = 1 << 20;

interface Geometry {
  clusterSize: number;
  refcountBits: number;
  compat: '0.10' | '1.1';
  extendedL2: boolean;
  backing: 'none' | 'raw' | 'qcow2';
  /** Virtual size of the overlay (whole sectors, often not cluster-aligned). */
  size: number;
  /** Size of the backing file (may be smaller or larger than the overlay). */
  backingSize: number;
  backingSeed: number;
  /** The overlay starts empty (our createImage) or full of compressed clusters (qemu-img convert -c). */
  start: 'empty' | 'compressed';
}

type Op =
  | { kind: 'write'; off: number; len: number; pattern: number }
  | { kind: 'zero'; off: number; len: number }
  | { kind: 'discard'; off: number; len: number }
  | { kind: 'reopen' };

const geometryArb: fc.Arbitrary<Geometry> = fc
  .record({
    clusterBits: fc.constantFrom(9, 9, 10, 12, 14, 15, 16, 16, 21),
    v3: fc.boolean(),
    refcountOrder: fc.integer({ min: 0, max: 6 }),
    extendedL2: fc.boolean(),
    backing: fc.constantFrom('none', 'raw', 'qcow2'),
    clusters: fc.integer({ min: 1, max: 96 }),
    tailSectors: fc.integer({ min: -3, max: 3 }),
    backingPermille: fc.integer({ min: 1, max: 1300 }),
    backingSeed: fc.integer({ min: 1, max: 1 << 30 }),
    start: fc.constantFrom('empty', 'empty', 'compressed'),
  })
  .map((g) => {
    const cs = 2 ** g.clusterBits;
    const v3 = g.v3;
    // Keep the guest buffer small (≤ 8 MiB): big clusters get few of them.
    const clusters = Math.max(1, Math.min(g.clusters, Math.floor((8 * MiB) / cs)));
    const size = Math.max(512, clusters * cs + g.tailSectors * 512);
    const backingSize = Math.max(512, Math.round((size * g.backingPermille) / 1000 / 512) * 512);
    return {
      clusterSize: cs,
      refcountBits: v3 ? 2 ** g.refcountOrder : 16,
      compat: v3 ? '1.1' : '0.10',
      extendedL2: v3 && g.extendedL2 && cs >= 16384,
      backing: g.backing as Geometry['backing'],
      size,
      backingSize,
      backingSeed: g.backingSeed,
      start: g.start as Geometry['start'],
    } satisfies Geometry;
  });

/** An offset biased towards cluster boundaries (± a few bytes or sectors) and the end. */
function offsetArb(g: Geometry): fc.Arbitrary<number> {
  const cs = g.clusterSize;
  const last = g.size - 1;
  const clusters = Math.ceil(g.size / cs);
  return fc.oneof(
    fc.integer({ min: 0, max: last }),
    fc
      .tuple(fc.integer({ min: 0, max: clusters }), fc.constantFrom(0, 0, 0, 1, -1, 7, -7, 512, -512, 513))
      .map(([c, d]) => Math.min(last, Math.max(0, c * cs + d))),
    fc.integer({ min: Math.max(0, g.size - 2 * cs - 1024), max: last }),
  );
}

/** A length: tiny, sub-cluster, whole clusters, multi-cluster, large (refcount growth), or to the end. */
function lengthArb(g: Geometry): fc.Arbitrary<number | 'end'> {
  const cs = g.clusterSize;
  return fc.oneof(
    fc.integer({ min: 1, max: 64 }),
    fc.integer({ min: 1, max: cs }),
    fc.integer({ min: 1, max: 4 }).map((n) => n * cs),
    fc.integer({ min: cs, max: 5 * cs }),
    fc.integer({ min: 1, max: Math.max(1, Math.min(g.size, 3 * MiB)) }),
    fc.constant('end' as const),
  );
}

function opArb(g: Geometry): fc.Arbitrary<Op> {
  const range = fc.tuple(offsetArb(g), lengthArb(g)).map(([off, l]) => {
    const len = l === 'end' ? g.size - off : Math.max(1, Math.min(l, g.size - off));
    return { off, len };
  });
  return fc.oneof(
    { weight: 12, arbitrary: fc.tuple(range, fc.integer({ min: 1, max: 255 })).map(([r, pattern]) => ({ kind: 'write' as const, ...r, pattern })) },
    { weight: 4, arbitrary: range.map((r) => ({ kind: 'zero' as const, ...r })) },
    { weight: 4, arbitrary: range.map((r) => ({ kind: 'discard' as const, ...r })) },
    { weight: 1, arbitrary: fc.constant({ kind: 'reopen' as const }) },
  );
}

const caseArb = geometryArb.chain((g) => fc.tuple(fc.constant(g), fc.array(opArb(g), { minLength: 1, maxLength: 24 })));

// ---------------------------------------------------------------- the model

/** What the guest sees through the backing file alone (zeros past its end). */
function backingView(g: Geometry, backingBytes: Uint8Array | null): Uint8Array {
  const view = new Uint8Array(g.size);
  if (backingBytes) view.set(backingBytes.subarray(0, Math.min(g.size, backingBytes.length)));
  return view;
}

/** The clusters a discard of [off, off+len) drops, as qemu: [from, to) cluster-aligned. */
function discardedRange(g: Pick<Geometry, 'clusterSize' | 'size'>, off: number, len: number): [number, number] {
  const cs = g.clusterSize;
  const from = Math.ceil(off / cs) * cs;
  const end = off + len;
  const to = end === g.size ? Math.ceil(end / cs) * cs : Math.floor(end / cs) * cs;
  return [from, Math.min(to, g.size)];
}

function applyToModel(model: Uint8Array, g: Geometry, op: Op): void {
  switch (op.kind) {
    case 'write':
      model.fill(op.pattern, op.off, op.off + op.len);
      return;
    case 'zero':
      model.fill(0, op.off, op.off + op.len);
      return;
    case 'discard': {
      if (g.compat === '0.10' && g.backing !== 'none') return; // qemu: -ENOTSUP, nothing changes
      const [from, to] = discardedRange(g, op.off, op.len);
      if (from < to) model.fill(0, from, to);
      return;
    }
    case 'reopen':
      return;
  }
}

function qemuIoCommand(op: Op): string | null {
  switch (op.kind) {
    case 'write':
      return `write -P ${op.pattern} ${op.off} ${op.len}`;
    case 'zero':
      return `write -z ${op.off} ${op.len}`;
    case 'discard':
      return `discard ${op.off} ${op.len}`;
    case 'reopen':
      return null;
  }
}

// ---------------------------------------------------------------- fixtures

let dir: string;
let counter = 0;

beforeAll(() => {
  requireQemu();
  dir = tmpDir('cowchain-write-random-', { memory: true }); // checks and guest views: no fsync or holes observed
});

function createOptions(g: Geometry): string {
  return [`cluster_size=${g.clusterSize}`, `refcount_bits=${g.refcountBits}`, `compat=${g.compat}`, `extended_l2=${g.extendedL2 ? 'on' : 'off'}`].join(',');
}

/** The backing file (qemu-made for qcow2) and its guest bytes; null without one. */
function makeBacking(g: Geometry, name: string): { file: string; format: 'raw' | 'qcow2'; bytes: Uint8Array } | null {
  if (g.backing === 'none') return null;
  const raw = join(dir, `${name}-base.raw`);
  const bytes = writePatternedRaw(raw, g.backingSize, g.backingSeed);
  if (g.backing === 'raw') return { file: `${name}-base.raw`, format: 'raw', bytes };
  const q = join(dir, `${name}-base.qcow2`);
  qemuImg(['convert', '-f', 'raw', '-O', 'qcow2', '-o', `cluster_size=${Math.max(g.clusterSize, 4096)}`, raw, q]);
  return { file: `${name}-base.qcow2`, format: 'qcow2', bytes };
}

function convertRaw(file: string): Buffer {
  const out = `${file}.convert.raw`;
  qemuImg(['convert', '-O', 'raw', file, out]);
  const b = fs.readFileSync(out);
  fs.rmSync(out);
  return b;
}

function describeCase(g: Geometry, ops: Op[]): string {
  return `${JSON.stringify(g)}\n${ops.map((o) => (o.kind === 'reopen' ? 'reopen' : qemuIoCommand(o))).join('\n')}`;
}

function cleanup(name: string): void {
  for (const f of fs.readdirSync(dir)) if (f.startsWith(`${name}-`)) fs.rmSync(join(dir, f), { force: true });
}

/** One drawn case through engine, model and qemu-io twin; every comparison with a clear label. */
function runEngineCase(g: Geometry, ops: Op[]): void {
  const name = `c${counter++}`;
  try {
    const backing = makeBacking(g, name);
    const ours = join(dir, `${name}-ours.qcow2`);
    const twin = join(dir, `${name}-twin.qcow2`);
    let model: Uint8Array;
    if (g.start === 'compressed') {
      // qemu-img convert -c: compressed clusters (several per host cluster), with -B only where
      // the data differs from the backing file. Both images start as this same file.
      const raw = join(dir, `${name}-start.raw`);
      model = new Uint8Array(writePatternedRaw(raw, g.size, g.backingSeed + 1));
      qemuImg(['convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', createOptions(g), ...(backing ? ['-B', backing.file, '-F', backing.format] : []), raw, ours], { cwd: dir });
      fs.copyFileSync(ours, twin);
    } else {
      createImage(ours, {
        format: 'qcow2',
        size: g.size,
        clusterSize: g.clusterSize,
        refcountBits: g.refcountBits,
        compat: g.compat,
        extendedL2: g.extendedL2,
        ...(backing ? { backingFile: backing.file, backingFormat: backing.format } : {}),
      });
      // The twin: same geometry and backing, made by qemu-img create.
      qemuImg(['create', '-q', '-f', 'qcow2', '-o', createOptions(g), ...(backing ? ['-b', backing.file, '-F', backing.format] : []), twin, String(g.size)]);
      model = backingView(g, backing?.bytes ?? null);
    }

    let img: Image = openImage(ours, { writable: true });
    try {
      for (const op of ops) {
        if (op.kind === 'reopen') {
          img.close();
          img = openImage(ours, { writable: true });
        } else if (op.kind === 'write') img.write(op.off, new Uint8Array(op.len).fill(op.pattern));
        else if (op.kind === 'zero') img.writeZeroes(op.off, op.len);
        else img.discard(op.off, op.len);
        applyToModel(model, g, op);
      }
    } finally {
      img.close();
    }

    // The twin, written by qemu-io.
    const cmds = ops.map(qemuIoCommand).filter((c): c is string => c !== null);
    for (let i = 0; i < cmds.length; i += 100) qemuIo(twin, cmds.slice(i, i + 100));

    const label = describeCase(g, ops);
    const check = qemuCheck(ours);
    expect(check.status, `qemu-img check of ours (0 errors, 0 leaks expected): ${JSON.stringify(check.result)}\n${label}`).toBe(0);
    const theirs = convertRaw(twin);
    expect(firstDiff(theirs, model), `qemu-io's twin differs from the model (the model is wrong)\n${label}`).toBe(-1);
    // Ours as qemu reads it: the same guest view as the twin, which equals the model.
    expectSameGuest(ours, twin, `qemu reads ours otherwise than the twin (so otherwise than the model)\n${label}`);
    const reread = openImage(ours);
    try {
      expect(firstDiff(reread.read(0, g.size), model), `our read of ours differs from the model\n${label}`).toBe(-1);
    } finally {
      reread.close();
    }
  } finally {
    cleanup(name);
  }
}

// ---------------------------------------------------------------- engine property

describe('random write sequences through the engine, refereed by qemu', () => {
  it('fast-check: check clean, guest view equals the model and qemu-io\'s twin (seeded)', async () => {
    const seen = { runs: 0, discards: 0, zero: 0, writes: 0, reopen: 0, backing: 0, v2: 0, extl2: 0, unaligned: 0, compressed: 0 };
    await fc.assert(
      fc.asyncProperty(caseArb, async ([g, ops]) => {
        // Let the test runner's messages through between (synchronous) cases.
        await new Promise((r) => setImmediate(r));
        seen.runs++;
        if (g.backing !== 'none') seen.backing++;
        if (g.compat === '0.10') seen.v2++;
        if (g.extendedL2) seen.extl2++;
        if (g.start === 'compressed') seen.compressed++;
        for (const o of ops) {
          if (o.kind === 'write') seen.writes++;
          else if (o.kind === 'zero') seen.zero++;
          else if (o.kind === 'discard') seen.discards++;
          else seen.reopen++;
          if (o.kind !== 'reopen' && (o.off % 512 !== 0 || o.len % 512 !== 0)) seen.unaligned++;
        }
        runEngineCase(g, ops);
      }),
      { seed: ENGINE_SEED, numRuns: RUNS.engine, endOnFailure: true },
    );
    // The draw really covered what this file claims.
    expect(seen.runs).toBe(RUNS.engine);
    for (const [k, v] of Object.entries(seen)) expect(v, `cases with ${k}`).toBeGreaterThan(byTier(0, 3));
  });

  // Fixed regressions of qemu semantics the engine once got wrong (see the discard model above).
  const fixed: [string, Geometry, Op[]][] = [
    [
      'discard of the partial last cluster, up to the end, drops it (v3 → zeros)',
      { clusterSize: 65536, refcountBits: 16, compat: '1.1', extendedL2: false, backing: 'none', size: MiB + 4096, backingSize: 512, backingSeed: 1, start: 'empty' },
      [{ kind: 'write', off: 0, len: MiB + 4096, pattern: 0xaa }, { kind: 'discard', off: MiB, len: 4096 }],
    ],
    [
      'discard starting inside the partial last cluster keeps it',
      { clusterSize: 65536, refcountBits: 16, compat: '1.1', extendedL2: false, backing: 'raw', size: MiB + 4096, backingSize: MiB, backingSeed: 2, start: 'empty' },
      [{ kind: 'write', off: 0, len: MiB + 4096, pattern: 0xab }, { kind: 'discard', off: MiB + 512, len: 3584 }],
    ],
    [
      'discard in a v2 image with a backing file changes nothing',
      { clusterSize: 4096, refcountBits: 16, compat: '0.10', extendedL2: false, backing: 'raw', size: MiB, backingSize: MiB, backingSeed: 3, start: 'empty' },
      [{ kind: 'write', off: 0, len: 65536, pattern: 0x22 }, { kind: 'discard', off: 0, len: 65536 }, { kind: 'discard', off: 128 * 1024, len: 8192 }],
    ],
    [
      'discard in a v2 image without a backing file reads zeros',
      { clusterSize: 4096, refcountBits: 16, compat: '0.10', extendedL2: false, backing: 'none', size: MiB - 512, backingSize: 512, backingSeed: 4, start: 'empty' },
      [{ kind: 'write', off: 0, len: MiB - 512, pattern: 0x33 }, { kind: 'discard', off: 1000, len: 20000 }, { kind: 'discard', off: MiB - 4096, len: 3584 }],
    ],
    [
      'extended L2: partial-cluster discard ignored, whole clusters read zeros over a backing file',
      { clusterSize: 32768, refcountBits: 8, compat: '1.1', extendedL2: true, backing: 'qcow2', size: MiB, backingSize: MiB, backingSeed: 5, start: 'empty' },
      [{ kind: 'write', off: 0, len: 131072, pattern: 0x44 }, { kind: 'discard', off: 1024, len: 1024 }, { kind: 'discard', off: 32768, len: 32768 }, { kind: 'discard', off: 200 * 1024, len: 32768 }],
    ],
  ];
  for (const [name, g, ops] of fixed) it(name, () => runEngineCase(g, ops));
});

// ---------------------------------------------------------------- CLI


/** Maximal runs of one byte value: the `read -P` commands that verify the whole model. */
function uniformRuns(model: Uint8Array): [number, number, number][] {
  const runs: [number, number, number][] = [];
  let start = 0;
  for (let i = 1; i <= model.length; i++) {
    if (i === model.length || model[i] !== model[start]) {
      runs.push([start, i - start, model[start]]);
      start = i;
    }
  }
  return runs;
}

/** A raw backing file written by qemu-io in a few uniform pieces (so the model has few runs). */
function uniformBacking(file: string, size: number, seed: number): Uint8Array {
  const r = rng(seed);
  qemuImg(['create', '-q', '-f', 'raw', file, String(size)]);
  const bytes = new Uint8Array(size);
  const cmds: string[] = [];
  for (let off = 0; off < size; ) {
    const len = Math.min(size - off, 512 * (1 + Math.floor(r() * 64)));
    const p = 1 + Math.floor(r() * 255);
    cmds.push(`write -P ${p} ${off} ${len}`);
    bytes.fill(p, off, off + len);
    off += len;
  }
  for (let i = 0; i < cmds.length; i += 100) qemuIo(file, cmds.slice(i, i + 100), 'raw');
  return bytes;
}

const cliCaseArb = geometryArb
  .map((g) => ({ ...g, backing: g.backing === 'qcow2' ? ('raw' as const) : g.backing, size: Math.min(g.size, 4 * MiB) }))
  .map((g) => ({ ...g, backingSize: Math.min(g.backingSize, g.size + 65536) }))
  .chain((g) => fc.tuple(fc.constant(g), fc.array(opArb(g).filter((o) => o.kind !== 'reopen'), { minLength: 1, maxLength: 16 })));

function sizeForm(n: number): string {
  // Exercise the suffix and hex forms of OFF/LEN where they are exact.
  if (n > 0 && n % MiB === 0) return `${n / MiB}M`;
  if (n > 0 && n % 1024 === 0) return `${n / 1024}k`;
  if (n % 2 === 1) return `0x${n.toString(16)}`;
  return String(n);
}

function cliCommand(op: Op): string {
  if (op.kind === 'write') return `write -P 0x${op.pattern.toString(16)} ${sizeForm(op.off)} ${sizeForm(op.len)}`;
  if (op.kind === 'zero') return `write -z ${sizeForm(op.off)} ${sizeForm(op.len)}`;
  if (op.kind === 'discard') return `discard ${sizeForm(op.off)} ${sizeForm(op.len)}`;
  throw new Error('no reopen in CLI sequences');
}

describe('cowchain io against qemu-io', () => {
  it('cowchain img create + cowchain io write sequences verify with qemu-io read -P (seeded)', async () => {
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(cliCaseArb, async ([g, ops]) => {
        runs++;
        const name = `cli${counter++}`;
        try {
          const file = join(dir, `${name}-ours.qcow2`);
          const base = g.backing === 'raw' ? uniformBacking(join(dir, `${name}-base.raw`), g.backingSize, g.backingSeed) : null;
          const created = await cli(...[
            'img', 'create', '-q', '-f', 'qcow2', '-o', createOptions(g),
            ...(base ? ['-b', `${name}-base.raw`, '-F', 'raw'] : []), file, String(g.size),
          ]);
          expect(created, 'img create').toEqual({ status: 0, stdout: '', stderr: '' });
          const model = backingView(g, base);
          for (const op of ops) applyToModel(model, g, op);
          const r = await cli(...['io', ...ops.flatMap((op) => ['-c', cliCommand(op)]), file]);
          expect(r.stderr, describeCase(g, ops)).toBe('');
          expect(r.status).toBe(0);
          // qemu-io's report lines, one pair per command.
          const first = r.stdout.split('\n').filter((l) => /^(wrote|read|discard) /.test(l));
          expect(first).toEqual(ops.map((op) => `${op.kind === 'discard' ? 'discard' : 'wrote'} ${(op as any).len}/${(op as any).len} bytes at offset ${(op as any).off}`));
          expect(qemuCheck(file).status, describeCase(g, ops)).toBe(0);
          const reads = uniformRuns(model).map(([off, len, p]) => `read -P ${p} ${off} ${len}`);
          for (let i = 0; i < reads.length; i += 200) qemuIo(file, reads.slice(i, i + 200));
        } finally {
          cleanup(name);
        }
      }),
      { seed: SEED + 1, numRuns: RUNS.ioWrites, endOnFailure: true },
    );
    expect(runs).toBe(RUNS.ioWrites);
  });

  it('qemu-io write sequences verify with cowchain io -c "read -P", and a wrong pattern fails like qemu-io', async () => {
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(cliCaseArb, async ([g, ops]) => {
        runs++;
        const name = `rev${counter++}`;
        try {
          const file = join(dir, `${name}-theirs.qcow2`);
          const base = g.backing === 'raw' ? uniformBacking(join(dir, `${name}-base.raw`), g.backingSize, g.backingSeed) : null;
          qemuImg(['create', '-q', '-f', 'qcow2', '-o', createOptions(g), ...(base ? ['-b', `${name}-base.raw`, '-F', 'raw'] : []), file, String(g.size)]);
          const model = backingView(g, base);
          for (const op of ops) applyToModel(model, g, op);
          const cmds = ops.map(qemuIoCommand).filter((c): c is string => c !== null);
          for (let i = 0; i < cmds.length; i += 100) qemuIo(file, cmds.slice(i, i + 100));
          const runsOfModel = uniformRuns(model);
          const reads = runsOfModel.map(([off, len, p]) => `read -P 0x${p.toString(16)} ${sizeForm(off)} ${sizeForm(len)}`);
          const before = fs.readFileSync(file);
          for (let i = 0; i < reads.length; i += 200) {
            const r = await cli(...['io', '-q', ...reads.slice(i, i + 200).flatMap((c) => ['-c', c]), file]);
            expect(r, describeCase(g, ops)).toEqual({ status: 0, stdout: '', stderr: '' });
          }
          // Reads only: the file is opened read-only and left byte for byte as it was.
          expect(Buffer.compare(fs.readFileSync(file), before)).toBe(0);
          // One wrong pattern among right ones: reported, the others still run, exit 1.
          const [off, len, p] = runsOfModel[Math.floor(runsOfModel.length / 2)];
          const wrong = `read -P ${(p + 1) & 0xff} ${off} ${len}`;
          const r = await cli(...['io', '-c', reads[0], '-c', wrong, '-c', reads[reads.length - 1], file]);
          expect(r.status).toBe(1);
          const lines = r.stdout.split('\n');
          expect(lines).toContain(`Pattern verification failed at offset ${off}, ${len} bytes`);
          expect(lines.filter((l) => l.startsWith('read ')).length).toBe(3);
          expect(r.stderr).toMatch(/^cowchain: ECOW_IO: 1 of 3 commands failed; first: "read -P \d+ \d+ \d+": Pattern verification failed at offset \d+, \d+ bytes\n$/);
        } finally {
          cleanup(name);
        }
      }),
      { seed: SEED + 2, numRuns: RUNS.ioReads, endOnFailure: true },
    );
    expect(runs).toBe(RUNS.ioReads);
  });

  it('io keeps earlier writes when a later command fails, and reports every failure', async () => {
    const file = join(dir, 'io-fail.qcow2');
    expect((await cli(...['img', 'create', '-q', '-f', 'qcow2', file, '1M'])).status).toBe(0);
    const r = await cli(...['io', '-c', 'write -P 0xab 0 64k', '-c', 'write 0 2M', '-c', 'write -P 7 1x 5', '-c', 'frobnicate 0 1', '-c', 'read -P 0xab 0 64k', file]);
    expect(r.status).toBe(1);
    expect(r.stdout).toContain('wrote 65536/65536 bytes at offset 0');
    expect(r.stdout).toMatch(/^write failed: ECOW_RANGE: /m);
    expect(r.stdout).toMatch(/^write failed: ECOW_BAD_ARGUMENT: invalid offset "1x"/m);
    expect(r.stdout).toMatch(/^frobnicate failed: ECOW_BAD_ARGUMENT: command "frobnicate" not found/m);
    expect(r.stdout).toContain('read 65536/65536 bytes at offset 0');
    expect(r.stderr).toMatch(/^cowchain: ECOW_RANGE: 3 of 5 commands failed; first: "write 0 2M": /);
    expect(r.stderr.split('\n').length).toBe(2);
    expect(qemuCheck(file).status).toBe(0);
    qemuIo(file, ['read -P 0xab 0 64k', 'read -P 0 64k 960k']);
  });

  it('io argument forms: suffixes, hex, grouped flags, -P attached, default pattern 0xcd, -z with -P refused', async () => {
    const file = join(dir, 'io-forms.qcow2');
    expect((await cli(...['img', 'create', '-q', '-f', 'qcow2', file, '2M'])).status).toBe(0);
    const ok = await cli(...['io', '-c', 'write 0 1k', '-c', 'write -P0x11 0x400 1.5k', '-c', 'w -qz 2k 0x200', '-c', 'write -P 010 1M 0.5k', '-c', 'd 1M 1M', '-c', 'r -P 0xcd 0 1024', file]);
    expect(ok.stderr).toBe('');
    expect(ok.status).toBe(0);
    expect(ok.stdout.split('\n').filter((l) => /^(wrote|read|discard) /.test(l))).toEqual([
      'wrote 1024/1024 bytes at offset 0',
      'wrote 1536/1536 bytes at offset 1024',
      'wrote 512/512 bytes at offset 1048576',
      'discard 1048576/1048576 bytes at offset 1048576',
      'read 1024/1024 bytes at offset 0',
    ]);
    expect(ok.stdout).toContain('1.500 KiB, 1 ops; ');
    qemuIo(file, ['read -P 0xcd 0 1k', 'read -P 0x11 1k 1k', 'read -P 0 2k 1046528', 'read -P 0 1M 1M']);
    const bad = await cli(...['io', '-c', 'write -z -P 1 0 512', '-c', 'write -P 256 0 1', '-c', 'read -x 0 1', '-c', 'read 0', '-c', 'write 0 3G', file]);
    expect(bad.status).toBe(1);
    expect(bad.stdout).toMatch(/-z and -P cannot be specified at the same time/);
    expect(bad.stdout).toMatch(/256 is not a valid pattern byte/);
    expect(bad.stdout).toMatch(/invalid option -- 'x'/);
    expect(bad.stdout).toMatch(/bad argument count 1 to read/);
    expect(bad.stdout).toMatch(/length cannot exceed 2147483136, given 3G/);
    expect(bad.stderr).toMatch(/^cowchain: ECOW_BAD_ARGUMENT: 5 of 5 commands failed/);
    // Nothing was written: the image is unchanged for qemu.
    qemuIo(file, ['read -P 0xcd 0 1k']);
    expect(qemuCheck(file).status).toBe(0);
  });

  it('io on a read-only open (-r) refuses writes with ECOW_READ_ONLY and leaves the file alone', async () => {
    const file = join(dir, 'io-ro.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', file, '1M']);
    const before = fs.readFileSync(file);
    const r = await cli(...['io', '-r', '-c', 'write -P 1 0 512', file]);
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/^write failed: ECOW_READ_ONLY: /m);
    expect(r.stderr).toMatch(/^cowchain: ECOW_READ_ONLY: /);
    expect(Buffer.compare(fs.readFileSync(file), before)).toBe(0);
  });

  it('io on a raw image writes through and qemu-io agrees', async () => {
    const file = join(dir, 'io.raw');
    expect((await cli(...['img', 'create', '-q', file, '1M'])).status).toBe(0);
    const r = await cli(...['io', '-f', 'raw', '-c', 'write -P 0x5a 1000 3000', '-c', 'write -z 1500 100', '-c', 'read -P 0x5a 1000 500', file]);
    expect(r.status).toBe(0);
    qemuIo(file, ['read -P 0x5a 1000 500', 'read -P 0 1500 100', 'read -P 0x5a 1600 2400', 'read -P 0 0 1000', 'read -P 0 4000 1044576'], 'raw');
  });
});
