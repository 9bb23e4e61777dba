// Fault injection on the write path (issue 3). A Backend wrapper around a FileBackend makes the
// engine's N-th write fail; for every N of a multi-cluster write sequence (`npm run test:full`; `npm test` samples them, test/support/tier.ts) we stop there, reopen the
// file with a fresh open, and require:
//   - `qemu-img check`: no corruption and no check errors (leaked clusters are allowed: exit 0 or 3);
//   - every guest cluster reads either its data from before the sequence or its data after it
//     (the sequence touches each guest cluster at most once, so nothing in between exists);
//   - the image stays writable: a write after the crash leaves it free of corruption too.
//
// Four failure models:
//   fail-after-N    writes 1..N reach the file, write N+1 and every later one throw (EIO);
//   crash-drop      writes go to a volatile cache that only flush() makes durable; at write N+1
//                   the machine "loses power": every write since the last flush is lost;
//   crash-newest    as crash-drop, but the newest unflushed write did reach the disk and none of
//                   the older ones: with a fault after every write, any write issued without a
//                   flush after one it depends on is caught (the adversarial reordering);
//   crash-subset    as crash-drop, but a seeded random subset of the unflushed writes did reach
//                   the disk (a disk cache reorders freely between flushes).
// The engine orders metadata with flushes (data → refcounts → L2 → L1, frees deferred), so all four
// leave at worst leaks. The Image is then closed without flushing (Image.close() abandons an image
// whose write failed).
//
// (Checked by mutation: with the refcount blocks written after the L2/L1 tables every mode fails;
// with the flush between refcount blocks and L2 tables removed, crash-newest and crash-subset
// fail where that window exists.)
//
// Geometries are chosen so that the sequence allocates L2 tables, creates refcount blocks, grows
// (moves) the refcount table, copies-on-write partial clusters from a backing file, overwrites in
// place, zero-writes and discards (deferred frees); the fault-free run asserts that it did.
import * as fs from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { FileBackend, openImage, openImageOn, type Backend, type Image } from '../../src/index.js';
import { Engine } from '../../src/engine/engine.js';
import { createImage, type CreateOptions } from '../../src/image/create.js';
import { qemuCheck, qemuImg, requireQemu, tmpDir } from '../support/qemu.js';
import { H, join, readBE, rng, writePatternedRaw } from '../support/images.js';
import { FULL, faultPoints, sweep } from '../support/tier.js';
import { VolatileCache } from '../support/volatile-cache.js';

const KiB = 1024;
const MiB = 1024 * KiB;

class InjectedFault extends Error {
  constructor(n: number) {
    super(`injected fault at write ${n}`);
  }
}

type Mode = 'fail-after-N' | 'crash-drop' | 'crash-newest' | 'crash-subset';

/**
 * A FileBackend whose write number `failAt` (1-based) and every later one throw. In the crash
 * modes writes are held in a volatile cache until flush(); reads see them (the process does).
 */
class FaultyBackend implements Backend {
  writes = 0;
  flushes = 0;
  crashed = false;
  private readonly cache: VolatileCache;

  constructor(
    private readonly inner: FileBackend,
    private readonly mode: Mode,
    private readonly failAt: number,
    private readonly seed = 1,
  ) {
    this.cache = new VolatileCache(inner);
  }

  read(buf: Uint8Array, offset: number): number {
    return this.cache.read(buf, offset);
  }

  write(buf: Uint8Array, offset: number): void {
    this.writes++;
    if (this.crashed || this.writes >= this.failAt) {
      if (!this.crashed) this.crash();
      throw new InjectedFault(this.writes);
    }
    if (this.mode === 'fail-after-N') this.inner.write(buf, offset);
    else this.cache.hold(buf, offset);
  }

  size(): number {
    return this.cache.size();
  }

  truncate(size: number): void {
    this.write(new Uint8Array(0), 0); // counts as a write (and fails like one)
    this.cache.apply();
    this.inner.truncate(size);
  }

  flush(): void {
    if (this.crashed && this.mode !== 'fail-after-N') throw new InjectedFault(this.writes);
    this.flushes++;
    this.cache.apply();
    this.inner.flush();
  }

  close(): void {
    this.inner.close();
  }

  /** Power loss: what was not flushed is gone — or, in crash-subset, partly made it to disk. */
  private crash(): void {
    this.crashed = true;
    if (this.mode === 'crash-subset') {
      const r = rng(this.seed * 7919 + this.failAt);
      this.cache.lose(() => r() < 0.5);
    } else if (this.mode === 'crash-newest') {
      this.cache.lose((_, i, all) => i === all.length - 1);
    } else {
      this.cache.lose(() => false);
    }
  }
}

interface Scenario {
  name: string;
  create: Omit<CreateOptions, 'format'> & { size: number };
  backing?: { format: 'raw' | 'qcow2'; size: number };
  /** Writes made and flushed before the sequence (the "before" state has them). */
  setup(img: Image): void;
  /** The sequence: each guest cluster touched at most once. Ends with flush(). */
  run(img: Image): void;
  /** What the fault-free run must have done to the metadata. */
  expectGrowth: { l2Tables: boolean; refblocks: boolean; refcountTableMoves: boolean };
  modes: Mode[];
}

const pat = (n: number, byte: number) => new Uint8Array(n).fill(byte);

const SCENARIOS: Scenario[] = [
  {
    // A refcount block covers 64 clusters (32 KiB) and the one-cluster refcount table 64 blocks
    // (2 MiB of file): the setup fills the file to just under 2 MiB, the sequence crosses it.
    name: '512 B clusters, 64-bit refcounts, raw backing file',
    create: { size: 6 * MiB, clusterSize: 512, refcountBits: 64 },
    backing: { format: 'raw', size: 6 * MiB },
    setup: (img) => {
      img.write(0, pat(64 * KiB, 0x11));
      img.write(1 * MiB, pat(1800 * KiB, 0x12));
    },
    run: (img) => {
      img.write(16 * KiB, pat(16 * KiB, 0x22)); // in place (ours alone)
      img.write(64 * KiB + 100, pat(200, 0x33)); // partial: copy-on-write from the backing file
      img.write(128 * KiB, pat(320 * KiB, 0x44)); // 10 L2 tables, new refblocks, table growth
      img.writeZeroes(3 * MiB + 512 * KiB, 10 * KiB); // zero clusters
      img.discard(40 * KiB, 8 * KiB); // drops our clusters (deferred frees)
      img.discard(2 * MiB + 3 * KiB, 20 * KiB); // more, in the setup's run
      img.write(4 * MiB - 700, pat(1400, 0x55)); // straddles clusters, partial at both ends
      img.write(6 * MiB - 2 * KiB, pat(2 * KiB, 0x66)); // the end of the image
      img.flush();
    },
    expectGrowth: { l2Tables: true, refblocks: true, refcountTableMoves: true },
    modes: ['fail-after-N', 'crash-newest', 'crash-subset'],
  },
  {
    // Extended L2 writes subcluster by subcluster (one host write per cluster), so the sequence is
    // kept short; it crosses an L2 table boundary (1024 entries: 16 MiB of guest) once.
    // (A 2-bit refcount block covers 1 GiB here: no new blocks; the first scenario grows them.)
    name: '16 KiB clusters with extended L2, 2-bit refcounts, qcow2 backing file smaller than the image',
    create: { size: 20 * MiB + 4 * KiB, clusterSize: 16 * KiB, refcountBits: 2, extendedL2: true },
    backing: { format: 'qcow2', size: 12 * MiB },
    setup: (img) => img.write(0, pat(256 * KiB, 0x11)),
    run: (img) => {
      img.write(32 * KiB + 1000, pat(5000, 0x22)); // subclusters in place
      img.write(256 * KiB + 512, pat(3 * KiB, 0x33)); // subclusters of a new cluster over the backing
      img.write(1 * MiB, pat(512 * KiB, 0x44)); // whole clusters
      img.write(16 * MiB - 40 * KiB, pat(80 * KiB, 0x45)); // across the L2 table boundary
      img.writeZeroes(10 * MiB + 1536, 40 * KiB); // zero subclusters and whole clusters
      img.discard(128 * KiB, 64 * KiB); // all-zero bitmaps, deferred frees
      img.write(20 * MiB, pat(4 * KiB, 0x66)); // the partial last cluster
      img.flush();
    },
    expectGrowth: { l2Tables: true, refblocks: false, refcountTableMoves: false },
    modes: ['fail-after-N', 'crash-newest'],
  },
  {
    name: 'compat=0.10, 1 KiB clusters, no backing file',
    create: { size: 3 * MiB - 512, clusterSize: 1024, compat: '0.10' },
    setup: (img) => img.write(0, pat(32 * KiB, 0x11)),
    run: (img) => {
      img.write(4 * KiB, pat(4 * KiB, 0x22));
      img.write(40 * KiB + 3, pat(10, 0x33));
      img.write(64 * KiB, pat(2 * MiB, 0x44));
      img.writeZeroes(2 * MiB + 128 * KiB, 9 * KiB + 5); // v2: zeros written as data
      img.discard(16 * KiB, 8 * KiB); // v2 without backing: unallocated
      img.write(3 * MiB - 1536, pat(1024, 0x66));
      img.flush();
    },
    expectGrowth: { l2Tables: true, refblocks: true, refcountTableMoves: false },
    modes: ['fail-after-N', 'crash-drop', 'crash-newest', 'crash-subset'],
  },
];

let dir: string;

beforeAll(() => {
  requireQemu();
  dir = tmpDir('cowchain-write-faults-');
});

interface Prepared {
  pristine: Buffer;
  file: string;
  backingFile?: string;
  before: Uint8Array;
  after: Uint8Array;
  totalWrites: number;
  cs: number;
}

function openOn(s: Scenario, p: Prepared, backend: Backend): Image {
  const backing = p.backingFile ? openImage(p.backingFile) : null;
  return openImageOn(backend, { name: p.file, format: 'qcow2', writable: true, backing });
}

/**
 * Non-zero 8-byte entries of the L1 table (sizeField = l1_size, in entries) or of the refcount
 * table (sizeField = refcount_table_clusters, times cs/8 entries), read from the file.
 */
function usedEntries(file: string, offsetField: number, sizeField: number, cs?: number): number {
  const off = Number(readBE(file, offsetField, 8));
  const n = cs === undefined ? Number(readBE(file, sizeField, 4)) : (Number(readBE(file, sizeField, 4)) * cs) / 8;
  const buf = fs.readFileSync(file).subarray(off, off + n * 8);
  let used = 0;
  for (let i = 0; i < buf.length; i += 8) if (buf.readBigUInt64BE(i) !== 0n) used++;
  return used;
}

function guestView(file: string): Uint8Array {
  const img = openImage(file);
  try {
    return img.read(0, img.virtualSize);
  } finally {
    img.close();
  }
}

function prepare(s: Scenario, tag: string): Prepared {
  const file = join(dir, `${tag}.qcow2`);
  let backingFile: string | undefined;
  if (s.backing) {
    const raw = join(dir, `${tag}-base.raw`);
    writePatternedRaw(raw, s.backing.size, 4242);
    if (s.backing.format === 'raw') backingFile = raw;
    else {
      backingFile = join(dir, `${tag}-base.qcow2`);
      qemuImg(['convert', '-f', 'raw', '-O', 'qcow2', raw, backingFile]);
    }
  }
  createImage(file, { format: 'qcow2', ...s.create, ...(backingFile ? { backingFile, backingFormat: s.backing!.format } : {}) });
  const img = openImage(file, { writable: true });
  try {
    s.setup(img);
  } finally {
    img.close();
  }
  expect(qemuCheck(file).status).toBe(0);
  const pristine = fs.readFileSync(file);
  const before = guestView(file);
  const rtBefore = readBE(file, H.rtOffset, 8);
  const cs0 = s.create.clusterSize!;
  const l2Before = usedEntries(file, H.l1Offset, H.l1Size);
  const rbBefore = usedEntries(file, H.rtOffset, H.rtClusters, cs0);
  // The fault-free run: count the writes, record the after state, prove the sequence's reach.
  const counting = new FaultyBackend(new FileBackend(file, true), 'fail-after-N', Number.MAX_SAFE_INTEGER);
  const img2 = openOn(s, { pristine, file, backingFile, before, after: before, totalWrites: 0, cs: 0 }, counting);
  try {
    s.run(img2);
  } finally {
    img2.close();
  }
  expect(qemuCheck(file).status, 'fault-free run is clean').toBe(0);
  const after = guestView(file);
  const cs = s.create.clusterSize!;
  if (s.expectGrowth.refcountTableMoves) expect(readBE(file, H.rtOffset, 8), 'the refcount table moved').not.toBe(rtBefore);
  if (s.expectGrowth.l2Tables) expect(l2Before, 'the sequence allocated L2 tables').toBeLessThan(usedEntries(file, H.l1Offset, H.l1Size));
  if (s.expectGrowth.refblocks) expect(rbBefore, 'the sequence created refcount blocks').toBeLessThan(usedEntries(file, H.rtOffset, H.rtClusters, cs));
  expect(counting.writes).toBeGreaterThan(20);
  return { pristine, file, backingFile, before, after, totalWrites: counting.writes, cs };
}

/** Per guest cluster: old, new, or (the failure) neither. */
function classify(p: Prepared, got: Uint8Array): { old: number; new: number; bad: number[] } {
  const out = { old: 0, new: 0, bad: [] as number[] };
  const view = (a: Uint8Array, lo: number, hi: number) => Buffer.from(a.buffer, a.byteOffset + lo, hi - lo);
  for (let lo = 0; lo < got.length; lo += p.cs) {
    const hi = Math.min(got.length, lo + p.cs);
    const g = view(got, lo, hi);
    const isNew = g.equals(view(p.after, lo, hi));
    const isOld = g.equals(view(p.before, lo, hi));
    if (isNew && isOld) continue; // untouched by the sequence
    if (isNew) out.new++;
    else if (isOld) out.old++;
    else if (out.bad.length < 5) out.bad.push(lo);
  }
  return out;
}

/** Run the sequence with a fault at write `failAt`, then judge the file. */
function faultAt(s: Scenario, p: Prepared, mode: Mode, failAt: number): { old: number; new: number } {
  fs.writeFileSync(p.file, p.pristine);
  const backend = new FaultyBackend(new FileBackend(p.file, true), mode, failAt, 1);
  const img = openOn(s, p, backend);
  let failed: unknown;
  try {
    s.run(img);
  } catch (e) {
    failed = e;
  } finally {
    img.close(); // abandons: the write failed
  }
  const label = `${s.name}, ${mode}, fault at write ${failAt}/${p.totalWrites}`;
  expect(failed, `${label}: the injected fault surfaced`).toBeDefined();
  expect(String((failed as Error).message), label).toMatch(/injected fault/);
  const check = qemuCheck(p.file);
  expect([0, 3], `${label}: qemu-img check ${JSON.stringify(check.result)}`).toContain(check.status);
  expect(check.result['check-errors'] ?? 0, label).toBe(0);
  expect(check.result.corruptions ?? 0, label).toBe(0);
  const c = classify(p, guestView(p.file));
  expect(c.bad, `${label}: clusters at these offsets are neither old nor new`).toEqual([]);
  return c;
}

/** After a crash the image must still take writes without corruption. */
function writableAfter(p: Prepared): void {
  const img = openImage(p.file, { writable: true });
  try {
    img.write(0, pat(3 * p.cs + 17, 0x99));
    img.write(p.after.length - p.cs, pat(p.cs, 0x98));
  } finally {
    img.close();
  }
  const check = qemuCheck(p.file);
  expect([0, 3], JSON.stringify(check.result)).toContain(check.status);
  expect(check.result.corruptions ?? 0).toBe(0);
  const v = guestView(p.file);
  expect(v.subarray(0, 3 * p.cs + 17).every((b) => b === 0x99)).toBe(true);
  expect(v.subarray(v.length - p.cs).every((b) => b === 0x98)).toBe(true);
}

// Every fault point in `npm run test:full`; in `npm test` the first and the last and a seeded
// sample (test/support/tier.ts).
describe('a failed write at any point of a write sequence leaves a consistent image', () => {
  const prepared: Prepared[] = [];
  for (const [i, s] of SCENARIOS.entries()) {
    for (const mode of s.modes) {
      it(`${s.name}: ${mode}, ${FULL ? 'every fault point' : 'sampled fault points'}`, async () => {
        // The image, the fault-free run and its write count are the same for every mode: made
        // once per scenario (each point starts from the pristine bytes).
        const p = (prepared[i] ??= prepare(s, `s${i}`));
        const seen = { mixed: 0, allOld: 0, allNew: 0, points: 0 };
        const points = faultPoints(p.totalWrites, `write ${s.name} / ${mode}`);
        await sweep(points, p.totalWrites, (n) => {
          const c = faultAt(s, p, mode, n);
          seen.points++;
          if (c.old > 0 && c.new > 0) seen.mixed++;
          else if (c.new === 0) seen.allOld++;
          else seen.allNew++;
          if (!FULL || n % 25 === 0 || n === p.totalWrites) writableAfter(p);
        });
        expect(seen.points).toBe(points.length);
        // The judge has teeth: early faults keep the old data, and the sequence's many flush
        // epochs make states that mix old and new clusters.
        expect(seen.allOld, JSON.stringify(seen)).toBeGreaterThan(0);
        expect(seen.mixed + seen.allNew, JSON.stringify(seen)).toBeGreaterThan(0);
        // The counts behind those checks, printed for the full sweep (the quick tier stays quiet).
        if (FULL) console.log(`${s.name} / ${mode}: ${p.totalWrites} fault points`, seen);
      });
    }
  }
});

describe('a fault inside close()', () => {
  it('the flush in close() fails: the error surfaces, the file is consistent, engine memory is not leaked', () => {
    const s = SCENARIOS[2];
    const p = prepare(s, 'close-fault');
    // Without an explicit flush, the metadata reaches the file only in close(); fail there.
    const run = (img: Image) => {
      img.write(64 * KiB, pat(256 * KiB, 0x44));
      img.write(40 * KiB + 3, pat(10, 0x33));
    };
    const countingFile = join(dir, 'close-fault-count.qcow2');
    fs.writeFileSync(countingFile, p.pristine);
    const counting = new FaultyBackend(new FileBackend(countingFile, true), 'fail-after-N', Number.MAX_SAFE_INTEGER);
    const img0 = openOn(s, { ...p, file: countingFile }, counting);
    run(img0);
    const writesBeforeClose = counting.writes;
    img0.close();
    expect(counting.writes, 'close() writes the metadata').toBeGreaterThan(writesBeforeClose + 2);
    const mem0 = Engine.get().memoryBytes();
    for (let k = 0; k < 120; k++) {
      fs.writeFileSync(p.file, p.pristine);
      const backend = new FaultyBackend(new FileBackend(p.file, true), 'fail-after-N', writesBeforeClose + 2 + (k % 3));
      const img = openOn(s, p, backend);
      run(img);
      expect(() => img.close()).toThrow(/injected fault/);
      if (k % 40 === 0) {
        const check = qemuCheck(p.file);
        expect([0, 3], JSON.stringify(check.result)).toContain(check.status);
        expect(check.result.corruptions ?? 0).toBe(0);
      }
    }
    // Each leaked image would hold its caches (megabytes): 120 of them would be hundreds of MiB.
    expect(Engine.get().memoryBytes() - mem0).toBeLessThan(64 * MiB);
  });
});
