// Rebase and stream acceptance tests (issue 4), refereed by `qemu-img rebase` 7.2.
//
// fast-check draws (seeded) a chain as in commit.test.ts (1–4 qcow2 overlays over a raw, qcow2 or
// compressed qcow2 base; cluster sizes 512 B..2 MiB, compat 0.10/1.1, extended L2, refcount
// widths, zero clusters, discards, every layer a different size) and, for each chain, three
// operations, each run by cowchain and by qemu-img on identical copies (cp):
//  - a safe rebase of the top onto an image deeper in the chain (skipping at least one
//    intermediate), onto an unrelated image (raw or qcow2, compressed or not, smaller or larger),
//    or onto "" (flatten); the new backing format given or probed;
//  - an unsafe rebase (-u: the header only) onto a deeper image, an unrelated one, a name that
//    does not exist, or "": the file must be byte-for-byte what qemu-img writes;
//  - a stream (libvirt's blockRebase; qemu-img has none, its referee is the safe `qemu-img rebase`
//    onto the same base, which gives the same guest view): all of it, or down to a deeper image.
// Then, for the safe operations: the top's guest view is unchanged (compare with the untouched
// chain) and identical to qemu's result, `qemu-img check` reports 0 errors and 0 leaks on the top,
// every image of the new chain has the same header facts as qemu's (`qemu-img info
// --backing-chain`: virtual size, backing name and format, cluster size, compat, …), no other file
// was written, and progress was non-decreasing up to the total.
import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { rebaseImage, streamImage } from '../../src/index.js';
import { qemuImg, requireQemu, tmpDir } from '../support/qemu.js';
import { KiB, MiB, writePatternedRaw } from '../support/images.js';
import { byTier } from '../support/tier.js';
import {
  type ChainSpec, type Fmt, type LayerSpec, buildChain, chainArb, copyDir, describeChain, expectCheckClean, expectIdentical,
  expectSameChainHeaders, sameFileBytes,
} from '../support/chains.js';

/**
 * Cases of the property: a smoke in `npm test`, more in `npm run test:full`. The quick tier's seed
 * was picked for three cases that between them still draw every kind the test counts (each safe
 * target, a probed format, unsafe onto a missing name and onto none, both streams, a v2 top,
 * extended L2, 512 B clusters, a raw and a compressed base).
 */
const SEED = byTier(1105, 0x2eba5e00);
const RUNS = byTier(3, 30);

let root: string;
let counter = 0;

beforeAll(() => {
  requireQemu();
  root = tmpDir('cowchain-rebase-', { memory: true }); // guest views, checks, headers and header bytes: no fsync needed
});

/** An image outside the chain, to rebase onto. */
interface Other {
  format: Fmt;
  size: number;
  clusterSize: number;
  compressed: boolean;
  seed: number;
}

const otherArb: fc.Arbitrary<Other> = fc.record({
  format: fc.constantFrom<Fmt>('raw', 'qcow2', 'qcow2'),
  size: fc.integer({ min: 64, max: 1024 }).map((n) => n * 4096),
  clusterSize: fc.constantFrom(512, 4096, 65536, 2 * MiB),
  compressed: fc.boolean(),
  seed: fc.integer({ min: 1, max: 2 ** 30 }),
});

function otherName(o: Other): string {
  return o.format === 'raw' ? 'other.raw' : 'other.qcow2';
}

function makeOther(dir: string, o: Other): void {
  const raw = path.join(dir, 'other.src.raw');
  writePatternedRaw(raw, o.size, o.seed);
  if (o.format === 'raw') {
    fs.renameSync(raw, path.join(dir, 'other.raw'));
    return;
  }
  qemuImg(['convert', ...(o.compressed ? ['-c'] : []), '-f', 'raw', '-O', 'qcow2', '-o', `cluster_size=${o.clusterSize}`, raw, path.join(dir, 'other.qcow2')]);
  fs.rmSync(raw);
}

type Target = { kind: 'deeper'; index: number } | { kind: 'other' } | { kind: 'none' } | { kind: 'missing' };

/** The backing name and format a target stands for (names are relative to the chain's directory). */
function targetOf(spec: ChainSpec, other: Other, t: Target): { name: string; format: Fmt | '' } {
  switch (t.kind) {
    case 'deeper':
      return { name: spec.layers[t.index].name, format: spec.layers[t.index].format };
    case 'other':
      return { name: otherName(other), format: other.format };
    case 'none':
      return { name: '', format: '' };
    case 'missing':
      return { name: '../elsewhere/not-there.qcow2', format: 'qcow2' };
  }
}

interface Op {
  kind: 'safe' | 'unsafe' | 'stream';
  target: Target;
  /** Safe rebase only: leave the format to the probe (qemu is always given -F). */
  probe: boolean;
}

function opLabel(op: Op, spec: ChainSpec, other: Other): string {
  const t = targetOf(spec, other, op.target);
  if (op.kind === 'stream') return op.target.kind === 'none' ? 'stream (all)' : `stream -b ${t.name}`;
  return `rebase${op.kind === 'unsafe' ? ' -u' : ''} -b ${JSON.stringify(t.name)}${t.format && !op.probe ? ` -F ${t.format}` : ''}${op.probe ? ' (format probed)' : ''}`;
}

/** Progress reports: non-decreasing, within the total, ending at it. */
function progressRecorder(label: string): { onProgress: (done: number, total: number) => void; check: (size: number) => void } {
  const calls: [number, number][] = [];
  return {
    onProgress: (done, total) => calls.push([done, total]),
    check: (size) => {
      expect(calls.length, `${label}: progress calls`).toBeGreaterThan(0);
      for (let i = 0; i < calls.length; i++) {
        expect(calls[i][1], label).toBe(size);
        expect(calls[i][0], label).toBeLessThanOrEqual(size);
        if (i > 0) expect(calls[i][0], label).toBeGreaterThanOrEqual(calls[i - 1][0]);
      }
      expect(calls[calls.length - 1][0], label).toBe(size);
    },
  };
}

function runOp(src: string, spec: ChainSpec, other: Other, op: Op): void {
  const ours = copyDir(src, `${src}-${op.kind}-ours`);
  const theirs = copyDir(src, `${src}-${op.kind}-qemu`);
  const top: LayerSpec = spec.layers[spec.layers.length - 1];
  const label = `${opLabel(op, spec, other)}\n${describeChain(spec)}\nother: ${JSON.stringify(other)}`;
  const t = (d: string) => path.join(d, top.name);
  const target = targetOf(spec, other, op.target);
  try {
    const progress = progressRecorder(label);
    if (op.kind === 'unsafe') {
      rebaseImage(t(ours), target.name, { unsafe: true, backingFormat: target.format || undefined });
      qemuImg(['rebase', '-u', '-b', target.name, ...(target.format ? ['-F', target.format] : []), t(theirs)]);
      // Header only: the very bytes qemu writes.
      expect(sameFileBytes(t(ours), t(theirs)), `${label}\nthe top's bytes differ from qemu's`).toBe(true);
    } else {
      if (op.kind === 'safe') {
        rebaseImage(t(ours), target.name, { backingFormat: op.probe ? undefined : target.format || undefined, stepBytes: 256 * KiB, onProgress: progress.onProgress });
      } else {
        streamImage(t(ours), { base: target.name === '' ? null : path.join(ours, target.name), stepBytes: 256 * KiB, onProgress: progress.onProgress });
      }
      qemuImg(['rebase', '-b', target.name, ...(target.format ? ['-F', target.format] : []), t(theirs)]);
      progress.check(top.size);
      expectIdentical(t(ours), t(src), `${label}\ntop after the operation vs the untouched chain`, 'qcow2', 'qcow2');
      expectIdentical(t(ours), t(theirs), `${label}\ntop: ours vs qemu's`, 'qcow2', 'qcow2');
      expectCheckClean(t(ours), 'qcow2', `${label}\ntop`);
      expectSameChainHeaders(t(ours), t(theirs), label);
    }
    // Nothing but the top was written.
    for (const f of fs.readdirSync(src)) {
      if (f === top.name) continue;
      expect(sameFileBytes(path.join(ours, f), path.join(src, f)), `${label}\n${f} must not be written`).toBe(true);
    }
  } finally {
    fs.rmSync(ours, { recursive: true, force: true });
    fs.rmSync(theirs, { recursive: true, force: true });
  }
}

const caseArb = chainArb().chain((spec) => {
  const n = spec.layers.length;
  // Deeper images: below the top's backing file (at least one intermediate skipped).
  const deeper: fc.Arbitrary<Target> = n >= 3 ? fc.integer({ min: 0, max: n - 3 }).map((index) => ({ kind: 'deeper' as const, index })) : fc.constant({ kind: 'none' as const });
  return fc.record({
    spec: fc.constant(spec),
    other: otherArb,
    safe: fc.oneof(deeper, fc.constant<Target>({ kind: 'other' }), fc.constant<Target>({ kind: 'none' })),
    probe: fc.boolean(),
    unsafe: fc.oneof(deeper, fc.constant<Target>({ kind: 'other' }), fc.constant<Target>({ kind: 'none' }), fc.constant<Target>({ kind: 'missing' })),
    stream: fc.oneof(deeper, fc.constant<Target>({ kind: 'none' })),
  });
});

describe('rebase and stream: random chains, cowchain vs qemu-img rebase on identical copies', () => {
  it(`fast-check (${RUNS} chains × safe rebase, unsafe rebase, stream)`, async () => {
    const seen = { runs: 0, deeper: 0, other: 0, flatten: 0, probed: 0, unsafeMissing: 0, unsafeNone: 0, streamAll: 0, streamToBase: 0, v2Top: 0, extl2: 0, c512: 0, rawBase: 0, compressedBase: 0 };
    await fc.assert(
      fc.asyncProperty(caseArb, async (c) => {
        await new Promise((r) => setImmediate(r));
        const src = path.join(root, `c${counter++}`);
        fs.mkdirSync(src);
        try {
          buildChain(src, c.spec);
          if (c.safe.kind === 'other' || c.unsafe.kind === 'other') makeOther(src, c.other);
          const layers = c.spec.layers;
          seen.runs++;
          if (c.safe.kind === 'deeper') seen.deeper++;
          if (c.safe.kind === 'other') seen.other++;
          if (c.safe.kind === 'none') seen.flatten++;
          if (c.probe && c.safe.kind !== 'none') seen.probed++;
          if (c.unsafe.kind === 'missing') seen.unsafeMissing++;
          if (c.unsafe.kind === 'none') seen.unsafeNone++;
          if (c.stream.kind === 'none') seen.streamAll++;
          else seen.streamToBase++;
          if (layers[layers.length - 1].compat === '0.10') seen.v2Top++;
          if (layers.some((l) => l.extendedL2)) seen.extl2++;
          if (layers.some((l) => l.format === 'qcow2' && l.clusterSize === 512)) seen.c512++;
          if (layers[0].format === 'raw') seen.rawBase++;
          if (layers[0].fill === 'compressed') seen.compressedBase++;
          runOp(src, c.spec, c.other, { kind: 'safe', target: c.safe, probe: c.probe });
          runOp(src, c.spec, c.other, { kind: 'unsafe', target: c.unsafe, probe: false });
          runOp(src, c.spec, c.other, { kind: 'stream', target: c.stream, probe: false });
        } finally {
          fs.rmSync(src, { recursive: true, force: true });
        }
      }),
      { seed: SEED, numRuns: RUNS, endOnFailure: true },
    );
    expect(seen.runs).toBe(RUNS);
    for (const [k, n] of Object.entries(seen)) expect(n, `cases with ${k}`).toBeGreaterThanOrEqual(byTier(1, 2));
  });

  // Fixed corners.
  const g = (o: Partial<LayerSpec> & Pick<LayerSpec, 'name'>): LayerSpec => ({
    format: 'qcow2', size: 2 * MiB, clusterSize: 64 * KiB, compat: '1.1', extendedL2: false, refcountBits: 16, fill: 'io', seed: 7, ops: 24, maxLen: 256 * KiB, ...o,
  });
  const noOther: Other = { format: 'raw', size: MiB, clusterSize: 4096, compressed: false, seed: 1 };
  const fixed: [string, ChainSpec, Other, Op[]][] = [
    [
      'stream to a base through a short intermediate: the zeros it reads past its end are kept',
      { layers: [g({ name: 'l0.qcow2', seed: 31 }), g({ name: 'l1.qcow2', size: 600 * KiB, seed: 32 }), g({ name: 'l2.qcow2', clusterSize: 4 * KiB, seed: 33, ops: 8 })] },
      noOther,
      [{ kind: 'stream', target: { kind: 'deeper', index: 0 }, probe: false }, { kind: 'safe', target: { kind: 'deeper', index: 0 }, probe: false }],
    ],
    [
      'stream when the top\'s own backing file is short and the new base longer',
      { layers: [g({ name: 'l0.raw', format: 'raw', fill: 'patterned', seed: 34 }), g({ name: 'l1.qcow2', size: 300 * KiB, seed: 35 }), g({ name: 'l2.qcow2', size: 1200 * KiB, seed: 36 }), g({ name: 'l3.qcow2', compat: '0.10', seed: 37, ops: 8 })] },
      noOther,
      [{ kind: 'stream', target: { kind: 'deeper', index: 0 }, probe: false }, { kind: 'stream', target: { kind: 'none' }, probe: false }],
    ],
    [
      'safe rebase of a v2 top onto a larger unrelated compressed image (zeros must be written as data)',
      { layers: [g({ name: 'l0.qcow2', size: 700 * KiB, seed: 38 }), g({ name: 'l1.qcow2', compat: '0.10', clusterSize: 512, seed: 39, maxLen: 32 * KiB })] },
      { format: 'qcow2', size: 3 * MiB, clusterSize: 4096, compressed: true, seed: 40 },
      [{ kind: 'safe', target: { kind: 'other' }, probe: true }, { kind: 'safe', target: { kind: 'none' }, probe: false }],
    ],
  ];
  for (const [name, spec, other, ops] of fixed) {
    it(name, () => {
      const src = path.join(root, `f${counter++}`);
      fs.mkdirSync(src);
      buildChain(src, spec);
      if (ops.some((o) => o.target.kind === 'other')) makeOther(src, other);
      for (const op of ops) runOp(src, spec, other, op);
    });
  }
});
