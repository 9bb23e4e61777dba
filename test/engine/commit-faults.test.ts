// Fault injection in commit (issue 4). The chain (made by qemu) is opened on Backends that wrap
// FileBackends and share one write counter; the commit is driven as commitImage drives it
// (commitLive: the engine's commitStart/jobStep, then makeEmpty on the top). For every write index
// N of the fault-free commit (`npm run test:full`; `npm test` samples them, test/support/tier.ts) (the base's data, refcount blocks, L2 and L1 tables, header, the
// top's emptying, the truncates), write N and every later one fail; the images are closed (their
// close cannot flush any more) and then, reopened from disk:
//   - `qemu-img check` of the base and the top: no corruption, no check error (leaks allowed);
//   - the guest view of the top — what the user sees through the chain — is unchanged
//     (`qemu-img compare` with an untouched copy of the chain);
//   - re-running the commit (commitImage, on files) completes, and the base then reads exactly as
//     after an uninterrupted commit (`qemu-img compare`), the top is empty and reads as before.
// A second failure model, crash-newest, holds writes in a volatile cache until flush() and, at
// the fault, keeps only the newest unflushed write (an adversarial disk cache): any write the
// engine issues without a flush after one it depends on is caught.
//
// (Checked by mutation: with the flush between the refcount blocks and the L2 tables removed from
// flushMetadata, crash-newest fails in the generic-path scenario; with the grown size written to
// the header before the new range is zeroed, the smaller-base scenario fails at the first fault
// point after the header write.)
//
// Scenarios: the fast path (same cluster size, qcow2 base), the generic path (different cluster
// sizes), a raw base, 512-byte clusters with 64-bit refcounts in the base (new refcount blocks and
// a refcount table that moves), and a base smaller than the top over a longer backing file (the
// base's L1 table moves and its new range is zeroed before the size switches).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { FileBackend, commitImage, openImage, openImageOn, type Backend, type Image } from '../../src/index.js';
import { commitLive } from '../../src/image/live.js';
import { imageEngine, imageId } from '../../src/image/image.js';
import { qemuCheck, qemuImg, requireQemu, tmpDir } from '../support/qemu.js';
import { H, KiB, MiB, readBE } from '../support/images.js';
import { type ChainSpec, type LayerSpec, buildChain, copyDir, expectNothingAllocated } from '../support/chains.js';
import { FULL, faultPoints, sweep } from '../support/tier.js';
import { VolatileCache } from '../support/volatile-cache.js';
import { Verdicts } from '../support/verdicts.js';

class InjectedFault extends Error {
  constructor(n: number) {
    super(`injected fault at write ${n}`);
  }
}

type Mode = 'fail-after-N' | 'crash-newest';

/** One write counter for every file of the chain: the N-th write anywhere fails, and all after it. */
class FaultPlan {
  writes = 0;
  crashed = false;
  readonly backends: FaultyBackend[] = [];
  constructor(
    readonly mode: Mode,
    readonly failAt: number,
  ) {}

  /** Counts a write; throws from the fault on. At the fault, a crash-newest disk keeps its newest unflushed write only. */
  count(): void {
    this.writes++;
    if (this.crashed || this.writes >= this.failAt) {
      if (!this.crashed) {
        this.crashed = true;
        const newest = this.mode === 'crash-newest' ? Math.max(-1, ...this.backends.map((b) => b.newestPending())) : -1;
        for (const b of this.backends) b.powerLoss(newest);
      }
      throw new InjectedFault(this.writes);
    }
  }
}

class FaultyBackend implements Backend {
  private readonly cache: VolatileCache;

  constructor(
    private readonly inner: FileBackend,
    private readonly plan: FaultPlan,
  ) {
    this.cache = new VolatileCache(inner);
    plan.backends.push(this);
  }

  private get volatile(): boolean {
    return this.plan.mode === 'crash-newest';
  }

  read(buf: Uint8Array, offset: number): number {
    return this.cache.read(buf, offset);
  }

  write(buf: Uint8Array, offset: number): void {
    this.plan.count();
    if (this.volatile) this.cache.hold(buf, offset);
    else this.inner.write(buf, offset);
  }

  size(): number {
    return this.cache.size();
  }

  truncate(size: number): void {
    this.plan.count(); // a truncate changes the file: it counts (and fails) as a write
    this.cache.apply();
    this.inner.truncate(size);
  }

  flush(): void {
    if (this.plan.crashed && this.volatile) throw new InjectedFault(this.plan.writes);
    this.cache.apply();
    this.inner.flush();
  }

  close(): void {
    this.inner.close();
  }

  newestPending(): number {
    return this.cache.newest();
  }

  /** Of the unflushed writes, only the one numbered `keep` (the chain's newest) reaches the disk. */
  powerLoss(keep: number): void {
    this.cache.lose((w) => w.seq === keep);
  }
}

const layer = (o: Partial<LayerSpec> & Pick<LayerSpec, 'name'>): LayerSpec => ({
  format: 'qcow2', size: 4 * MiB, clusterSize: 64 * KiB, compat: '1.1', extendedL2: false, refcountBits: 16, fill: 'io', seed: 1, ops: 20, maxLen: 256 * KiB, ...o,
});

interface Scenario {
  name: string;
  spec: ChainSpec;
  /** What the fault-free commit must have done to the base. */
  expect?: { refcountTableMoves?: boolean; l1Moves?: boolean; grows?: boolean };
  modes: Mode[];
}

const SCENARIOS: Scenario[] = [
  {
    name: 'fast path: 64 KiB clusters, qcow2 base, zero clusters and discards in the top',
    spec: { layers: [layer({ name: 'l0.qcow2', seed: 11, ops: 12 }), layer({ name: 'l1.qcow2', seed: 12, ops: 30 })] },
    modes: ['fail-after-N', 'crash-newest'],
  },
  {
    name: 'generic path: 64 KiB top over a 4 KiB-cluster v2 base',
    spec: { layers: [layer({ name: 'l0.qcow2', clusterSize: 4 * KiB, compat: '0.10', seed: 13, ops: 12 }), layer({ name: 'l1.qcow2', seed: 14, ops: 16, maxLen: 128 * KiB })] },
    modes: ['fail-after-N', 'crash-newest'],
  },
  {
    name: 'raw base, 64 KiB top with extended L2 (the raw base is written in place, the top emptied)',
    spec: { layers: [layer({ name: 'l0.raw', format: 'raw', fill: 'patterned', size: 3 * MiB, seed: 15 }), layer({ name: 'l1.qcow2', clusterSize: 64 * KiB, extendedL2: true, seed: 16, ops: 24 })] },
    modes: ['fail-after-N', 'crash-newest'],
  },
  {
    // A 64-bit refcount block covers 64 clusters (32 KiB) and the one-cluster refcount table 64
    // blocks (2 MiB of file): the base starts near 2 MiB, the commit crosses it.
    name: '512-byte clusters, 64-bit refcounts in the base: new refcount blocks, the refcount table moves',
    spec: {
      layers: [
        layer({ name: 'l0.qcow2', size: 3 * MiB, clusterSize: 512, refcountBits: 64, commands: ['write -P 0x11 0 1800k', 'write -z 64k 64k', 'discard 256k 32k'] }),
        layer({
          name: 'l1.qcow2', size: 3 * MiB, clusterSize: 512,
          commands: ['write -P 0x21 16k 8k', 'write -P 0x22 2m 100k', 'write -z 2200k 20k', 'write -P 0x23 2300k 120k', 'write -P 0x24 100k 1000', 'discard 300k 2k', 'write -P 0x25 3071k 1k'],
        }),
      ],
    },
    expect: { refcountTableMoves: true },
    modes: ['fail-after-N', 'crash-newest'],
  },
  {
    name: 'a 512-byte-cluster base smaller than the top over a longer backing file: L1 moves, the new range is zeroed',
    spec: {
      layers: [
        layer({ name: 'l0.raw', format: 'raw', fill: 'patterned', size: 3 * MiB, seed: 19 }),
        layer({ name: 'l1.qcow2', size: 1 * MiB + 512, clusterSize: 512, seed: 20, ops: 6, maxLen: 64 * KiB }),
        layer({ name: 'l2.qcow2', size: 3 * MiB, clusterSize: 512, seed: 21, ops: 8, maxLen: 64 * KiB }),
      ],
    },
    expect: { l1Moves: true, grows: true },
    modes: ['fail-after-N'],
  },
];

let root: string;
const verdicts = new Verdicts();

beforeAll(() => {
  requireQemu();
  root = tmpDir('cowchain-commit-faults-');
});

interface Prepared {
  /** The untouched chain (the reference for the top's guest view). */
  pristine: string;
  /** The chain as an uninterrupted commit leaves it. */
  committed: string;
  /** Where each fault point runs. */
  work: string;
  top: LayerSpec;
  base: LayerSpec;
  below: LayerSpec | null;
  totalWrites: number;
}

/** Open top and base on faulty backends (anything below the base read-only from its file). */
function openChain(p: Prepared, plan: FaultPlan): Image {
  const file = (l: LayerSpec) => path.join(p.work, l.name);
  const below = p.below ? openImage(file(p.below), { format: p.below.format }) : null;
  let base: Image;
  try {
    base = openImageOn(new FaultyBackend(new FileBackend(file(p.base), true), plan), { name: file(p.base), format: p.base.format, writable: true, backing: below });
  } catch (e) {
    below?.close();
    throw e;
  }
  try {
    return openImageOn(new FaultyBackend(new FileBackend(file(p.top), true), plan), { name: file(p.top), format: 'qcow2', writable: true, backing: base });
  } catch (e) {
    base.close();
    throw e;
  }
}

/** What commitImage(top) does, on the opened chain. */
function commitOn(top: Image): void {
  commitLive(top, 1, { stepBytes: 512 * KiB });
  imageEngine(top).call((e) => e.makeEmpty(imageId(top)));
}

function restore(p: Prepared): void {
  for (const l of [p.base, p.top]) fs.copyFileSync(path.join(p.pristine, l.name), path.join(p.work, l.name));
}

function compare(a: string, b: string, fa: string, fb: string): { status: number; out: string } {
  const r = qemuImg(['compare', '-f', fa, '-F', fb, a, b], { ok: [0, 1, 2] });
  return { status: r.status, out: (r.stdout + r.stderr).trim() };
}

function prepare(s: Scenario, tag: string): Prepared {
  const pristine = path.join(root, `${tag}-pristine`);
  fs.mkdirSync(pristine);
  buildChain(pristine, s.spec);
  const n = s.spec.layers.length;
  const p: Prepared = {
    pristine,
    committed: copyDir(pristine, path.join(root, `${tag}-committed`)),
    work: copyDir(pristine, path.join(root, `${tag}-work`)),
    top: s.spec.layers[n - 1],
    base: s.spec.layers[n - 2],
    below: n > 2 ? s.spec.layers[n - 3] : null,
    totalWrites: 0,
  };
  // The fault-free run, on the same kind of backends: count the writes, keep the result.
  const plan = new FaultPlan('fail-after-N', Number.MAX_SAFE_INTEGER);
  const top = openChain({ ...p, work: p.committed }, plan);
  try {
    commitOn(top);
  } finally {
    top.close();
  }
  p.totalWrites = plan.writes;
  const baseFile = path.join(p.committed, p.base.name);
  if (p.base.format === 'qcow2') expect(qemuCheck(baseFile).status, 'fault-free commit: base clean').toBe(0);
  expect(qemuCheck(path.join(p.committed, p.top.name)).status, 'fault-free commit: top clean').toBe(0);
  expect(compare(path.join(p.committed, p.top.name), path.join(pristine, p.top.name), 'qcow2', 'qcow2').status, 'fault-free commit: top view').toBe(0);
  // The same base as qemu-img commit makes.
  const qemu = copyDir(pristine, path.join(root, `${tag}-qemu`));
  qemuImg(['commit', '-q', path.join(qemu, p.top.name)]);
  expect(compare(baseFile, path.join(qemu, p.base.name), p.base.format, p.base.format).out, 'fault-free commit vs qemu-img commit').toBe('Images are identical.');
  const pb = path.join(pristine, p.base.name);
  if (s.expect?.refcountTableMoves) expect(readBE(baseFile, H.rtOffset, 8), 'the refcount table moved').not.toBe(readBE(pb, H.rtOffset, 8));
  if (s.expect?.l1Moves) expect(readBE(baseFile, H.l1Offset, 8), 'the L1 table moved').not.toBe(readBE(pb, H.l1Offset, 8));
  if (s.expect?.grows) expect(readBE(baseFile, H.size, 8), 'the base grew').toBe(BigInt(p.top.size));
  return p;
}

/** Commit with a fault at write `failAt`, then judge the files. */
function faultAt(s: Scenario, p: Prepared, mode: Mode, failAt: number): void {
  restore(p);
  const label = `${s.name}, ${mode}, fault at write ${failAt}/${p.totalWrites}`;
  const plan = new FaultPlan(mode, failAt);
  const top = openChain(p, plan);
  let failed: unknown;
  try {
    commitOn(top);
  } catch (e) {
    failed = e;
  }
  try {
    top.close(); // after a fault its flush fails too (the disk is gone): the images are abandoned
  } catch (e) {
    failed ??= e;
    expect(String((e as Error).message), `${label}: close`).toMatch(/injected fault/);
  }
  expect(failed, `${label}: the injected fault surfaced`).toBeDefined();
  expect(String((failed as Error).message), label).toMatch(/injected fault/);

  const topFile = path.join(p.work, p.top.name);
  const baseFile = path.join(p.work, p.base.name);
  // What qemu-img reads: the base's chain, and the top's (a verdict on the same bytes is not asked again).
  const baseChain = [baseFile, ...(p.below ? [path.join(p.work, p.below.name)] : [])];
  const topChain = [topFile, ...baseChain];
  let state = verdicts.state();
  for (const [what, f] of [['base', p.base.format === 'qcow2' ? baseFile : null], ['top', topFile]] as const) {
    if (!f) continue;
    verdicts.once('check after a fault', what === 'base' ? baseChain : topChain, () => {
      const c = qemuCheck(f);
      expect([0, 3], `${label}: qemu-img check of the ${what}: ${JSON.stringify(c.result)}`).toContain(c.status);
      expect(c.result.corruptions ?? 0, `${label}: ${what}`).toBe(0);
      expect(c.result['check-errors'] ?? 0, `${label}: ${what}`).toBe(0);
    }, state);
  }
  verdicts.once(`reads as ${p.pristine}`, topChain, () => {
    const view = compare(topFile, path.join(p.pristine, p.top.name), 'qcow2', 'qcow2');
    expect(view.status, `${label}: the top's guest view changed: ${view.out}`).toBe(0);
  }, state);

  // Re-run to the end, on files: the same base as an uninterrupted commit.
  commitImage(topFile);
  state = verdicts.state();
  verdicts.once(`reads as ${p.committed}`, baseChain, () => {
    const base = compare(baseFile, path.join(p.committed, p.base.name), p.base.format, p.base.format);
    expect(base.status, `${label}: base after the re-run vs an uninterrupted commit: ${base.out}`).toBe(0);
  }, state);
  if (!FULL || failAt % 7 === 0 || failAt === p.totalWrites) {
    // At every sampled point, or now and then in a full sweep: the rest of what a re-run promises.
    verdicts.once(`reads as ${p.pristine}`, topChain, () => {
      const again = compare(topFile, path.join(p.pristine, p.top.name), 'qcow2', 'qcow2');
      expect(again.status, `${label}: the top's guest view after the re-run: ${again.out}`).toBe(0);
    }, state);
    verdicts.once('nothing allocated', [topFile], () => expectNothingAllocated(topFile, `${label}: the top after the re-run`), state);
    if (p.base.format === 'qcow2') {
      verdicts.once('check after the re-run', baseChain, () => {
        const c = qemuCheck(baseFile);
        expect([0, 3], `${label}: base after the re-run: ${JSON.stringify(c.result)}`).toContain(c.status);
        expect(c.result.corruptions ?? 0, label).toBe(0);
      }, state);
    }
  }
}

// Every fault point in `npm run test:full`; in `npm test` the first and the last and a seeded
// sample (test/support/tier.ts).
describe('a failed write at any point of a commit leaves a consistent chain, and a re-run finishes it', () => {
  const prepared: Prepared[] = [];
  for (const [i, s] of SCENARIOS.entries()) {
    for (const mode of s.modes) {
      it(`${s.name}: ${mode}, ${FULL ? 'every fault point' : 'sampled fault points'}`, async () => {
        // The chain, the fault-free commit and its write count are the same for every mode: made
        // once per scenario (each point restores the work files from the pristine chain).
        const p = (prepared[i] ??= prepare(s, `s${i}`));
        expect(p.totalWrites, 'the commit writes enough to be worth it').toBeGreaterThan(10);
        await sweep(faultPoints(p.totalWrites, `commit ${s.name} / ${mode}`), p.totalWrites, (n) => faultAt(s, p, mode, n));
      });
    }
  }
});
