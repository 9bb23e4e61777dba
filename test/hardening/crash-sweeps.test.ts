// Crash sweeps (issue 8) where test/volume/crash.test.ts (detached snapshot create/delete killed
// before every write, attached ones at named points) and test/engine/write-faults.test.ts (guest
// writes) do not reach:
//
//  - safe rebase (rebaseImage) and overlay creation (createImage), in process: the process
//    "dies" just before its Nth file mutation (test/support/fs-faults.ts), for every N of the
//    operation. After each: qemu-img check finds no corruption, the guest view of every image is
//    unchanged (the rebased image reads as before; backing files are byte-identical), and a
//    re-run completes with the uninterrupted run's result.
//  - attached (in-use) snapshot delete through the driver — the hypervisor's commit + re-point
//    and its pull — and a detached delete on a qcow2 base volume (commit into qcow2 + rebase -u):
//    a child process (the driver child of test/volume) SIGKILLed just before every write(2)
//    after the journal. After each: qemu-img check finds no corruption (leaks only in the file
//    an attached guest writes), fsck then a re-run, and on a copy the re-run alone, end exactly
//    as the uninterrupted run; every snapshot reads as when it was taken.
// Every N in `npm run test:full`; in `npm test` the first and the last and a seeded sample
// (test/support/tier.ts).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CowError, checkImage, createImage, openImage, rebaseImage } from '../../src/index.js';
import type { VolumeStatus } from '../../src/volume/status.js';
import { bundleForNode } from '../support/bundle.js';
import { runDriverChild } from '../support/driver-child.js';
import { FakeHypervisor } from '../support/fake-hypervisor.js';
import { runWithCrashAt } from '../support/fs-faults.js';
import { FULL, atPoint, faultPoints, sweep } from '../support/tier.js';
import { expectSameBytes, rng } from '../support/images.js';
import { qemuCheck, qemuImg, qemuIo, requireQemu } from '../support/qemu.js';
import { BASE, SNAP, VOL, VolumeFixture, asBuffer, type SnapName } from '../support/volume.js';
import { Verdicts } from '../support/verdicts.js';

requireQemu();

// A SIGKILL (or our in-process crash) loses nothing the kernel accepted: tmpfs where available.
const SCRATCH = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'cowchain-sweep-'));
afterAll(() => fs.rmSync(SCRATCH, { recursive: true, force: true }));
const tmp = (prefix: string) => fs.mkdtempSync(path.join(SCRATCH, prefix));

const KiB = 1024;
const MiB = 1024 * KiB;

/** The guest view of an image's whole chain, by our engine. */
function view(file: string): Buffer {
  const img = openImage(file);
  try {
    return asBuffer(img.read(0, img.virtualSize));
  } finally {
    img.close();
  }
}

function backingName(file: string): string | null {
  const img = openImage(file, { noBacking: true });
  try {
    return img.headerInfo().backingFile ?? null;
  } finally {
    img.close();
  }
}

function expectNoCorruption(file: string, label: string): void {
  const { status, result } = qemuCheck(file);
  expect({ label, status, result }).toMatchObject({ status: expect.toSatisfy((s: number) => s === 0 || s === 3) });
}

function snapshotFiles(dir: string): Map<string, Buffer> {
  return new Map(fs.readdirSync(dir).map((n) => [n, fs.readFileSync(path.join(dir, n))]));
}

// ---------- engine level: safe rebase and overlay creation ----------

/**
 * base.raw (full, patterned) <- mid.qcow2 <- top.qcow2, and other.qcow2 on base.raw with other
 * data: 4 KiB clusters so that a rebase allocates many clusters and L2 tables.
 */
function rebaseChain(): string {
  const d = tmp('rebase-');
  const r = rng(42);
  const raw = Buffer.alloc(1 * MiB);
  for (let i = 0; i < raw.length; i += 512) raw.fill(1 + Math.floor(r() * 255), i, i + 512);
  fs.writeFileSync(path.join(d, 'base.raw'), raw);
  const create = (name: string, backing: string, fmt: 'raw' | 'qcow2') =>
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', '-b', backing, '-F', fmt, path.join(d, name)]);
  create('mid.qcow2', 'base.raw', 'raw');
  create('top.qcow2', 'mid.qcow2', 'qcow2');
  create('other.qcow2', 'base.raw', 'raw');
  qemuIo(path.join(d, 'mid.qcow2'), ['write -P 0x21 0 96k', 'write -P 0x22 300k 200k', 'write -z 600k 64k', 'write -P 0x23 900k 7k']);
  qemuIo(path.join(d, 'top.qcow2'), ['write -P 0x31 64k 64k', 'write -P 0x32 350k 5k', 'write -z 700k 8k']);
  qemuIo(path.join(d, 'other.qcow2'), ['write -P 0x41 32k 300k', 'write -P 0x42 800k 100k']);
  return d;
}

interface EngineOp {
  name: string;
  /** The file the operation changes; every other file must stay byte-identical. */
  target: string;
  run(dir: string): void;
  /** After an uninterrupted run: what the target's header names. */
  backing: string | null;
}

const REBASES: EngineOp[] = [
  { name: 'safe rebase of top onto base.raw (mid dropped)', target: 'top.qcow2', backing: 'base.raw', run: (d) => rebaseImage(path.join(d, 'top.qcow2'), 'base.raw', { backingFormat: 'raw' }) },
  { name: 'safe rebase of top onto another chain', target: 'top.qcow2', backing: 'other.qcow2', run: (d) => rebaseImage(path.join(d, 'top.qcow2'), 'other.qcow2', { backingFormat: 'qcow2' }) },
  { name: 'safe rebase of top onto nothing (flatten)', target: 'top.qcow2', backing: null, run: (d) => rebaseImage(path.join(d, 'top.qcow2'), '') },
];

describe('safe rebase, crashed before every file mutation', () => {
  let chain: string;
  beforeAll(() => {
    chain = rebaseChain();
  });

  for (const op of REBASES) {
    it(op.name, async () => {
      const guest = view(path.join(chain, op.target));
      // The uninterrupted run: how many mutations, and the result every recovery must reach.
      const twin = tmp('twin-');
      fs.cpSync(chain, twin, { recursive: true });
      const probe = runWithCrashAt(0, () => op.run(twin));
      expect(probe.error).toBeUndefined();
      expect(probe.mutations).toBeGreaterThan(5);
      expectSameBytes(view(path.join(twin, op.target)), guest, 'uninterrupted: guest view');
      expect(backingName(path.join(twin, op.target))).toBe(op.backing);

      await sweep(faultPoints(probe.mutations, `rebase: ${op.name}`), probe.mutations, (n) => {
        const d = tmp('case-');
        fs.cpSync(chain, d, { recursive: true });
        const others = [...snapshotFiles(d)].filter(([k]) => k !== op.target);
        const run = runWithCrashAt(n, () => op.run(d));
        const where = `crash before mutation ${atPoint(n, probe.mutations)}`;
        expect(run.crashed, where).toBe(true);
        expect(run.error, where).toBeInstanceOf(CowError);
        const file = path.join(d, op.target);
        // The image reads as before, whichever backing file its header names by now.
        expect([backingName(path.join(chain, op.target)), op.backing], where).toContain(backingName(file));
        expectSameBytes(view(file), guest, `${where}: guest view`);
        expectNoCorruption(file, where);
        for (const [k, b] of others) expect(fs.readFileSync(path.join(d, k)).equals(b), `${where}: ${k} untouched`).toBe(true);
        // A re-run completes, with the uninterrupted run's result.
        op.run(d);
        expect(backingName(file), where).toBe(op.backing);
        expectSameBytes(view(file), guest, `${where}, re-run: guest view`);
        expect([0, 3], `${where}, re-run: check`).toContain(checkImage(file).exitCode);
        fs.rmSync(d, { recursive: true });
      });
    });
  }
});

describe('overlay creation, crashed before every file mutation', () => {
  const CREATES: { name: string; run(d: string): void; backing: string }[] = [
    { name: 'overlay on a qcow2 chain (size and format from the backing file)', backing: 'top.qcow2', run: (d) => createImage(path.join(d, 'ov.qcow2'), { format: 'qcow2', backingFile: 'top.qcow2' }) },
    {
      name: 'overlay of 512 B clusters over a raw file, grown to 96 MiB (an L1 table of several clusters, a second refcount block)',
      backing: 'base.raw',
      run: (d) => createImage(path.join(d, 'ov.qcow2'), { format: 'qcow2', backingFile: 'base.raw', backingFormat: 'raw', size: 96 * MiB, clusterSize: 512 }),
    },
    { name: 'v2 (compat 0.10) overlay', backing: 'mid.qcow2', run: (d) => createImage(path.join(d, 'ov.qcow2'), { format: 'qcow2', backingFile: 'mid.qcow2', backingFormat: 'qcow2', compat: '0.10' }) },
  ];
  let chain: string;
  beforeAll(() => {
    chain = rebaseChain();
  });

  for (const c of CREATES) {
    it(c.name, async () => {
      const twin = tmp('twin-');
      fs.cpSync(chain, twin, { recursive: true });
      const probe = runWithCrashAt(0, () => c.run(twin));
      expect(probe.error).toBeUndefined();
      const want = fs.readFileSync(path.join(twin, 'ov.qcow2'));
      const below = view(path.join(chain, c.backing));
      expectSameBytes(view(path.join(twin, 'ov.qcow2')).subarray(0, below.length), below, 'uninterrupted: the overlay reads its backing file');
      expect(qemuCheck(path.join(twin, 'ov.qcow2')).status).toBe(0);
      let opened = 0;
      const points = faultPoints(probe.mutations, `create: ${c.name}`);
      await sweep(points, probe.mutations, (n) => {
        const d = tmp('case-');
        fs.cpSync(chain, d, { recursive: true });
        const before = snapshotFiles(d);
        const run = runWithCrashAt(n, () => c.run(d));
        const where = `crash before mutation ${atPoint(n, probe.mutations)}`;
        expect(run.crashed, where).toBe(true);
        for (const [k, b] of before) expect(fs.readFileSync(path.join(d, k)).equals(b), `${where}: ${k} untouched`).toBe(true);
        // The half-made overlay is refused with a CowError; or, before its header is written,
        // probed as a raw file (as qemu-img would); or it is a clean empty overlay.
        const ov = path.join(d, 'ov.qcow2');
        let img;
        try {
          img = openImage(ov);
        } catch (e) {
          expect(e, where).toBeInstanceOf(CowError);
        }
        if (img?.format === 'qcow2') {
          opened++;
          try {
            const n = Math.min(below.length, img.virtualSize);
            expectSameBytes(Buffer.from(img.read(0, n)), below.subarray(0, n), `${where}: the half-made overlay reads its backing file`);
          } finally {
            img.close();
          }
          expectNoCorruption(ov, where);
        } else img?.close();
        // Re-run: the same bytes as the uninterrupted run.
        c.run(d);
        expect(fs.readFileSync(ov).equals(want), `${where}: re-run gives the same image`).toBe(true);
        fs.rmSync(d, { recursive: true });
      });
      expect(opened).toBeLessThan(points.length);
    });
  }
});

// ---------- driver level: attached create/delete, and a qcow2 base volume ----------

const STEP_BYTES = 256 << 10;
const LOCK = { staleMs: 1_000 }; // the shortest stale time: the dead child's lock goes after 1 s
let child = '';

interface DriverCase {
  op: 'create' | 'delete';
  snap: SnapName;
  status: VolumeStatus;
  base: 'raw' | 'qcow2';
}

function fixture(dir: string, recorded?: Map<string, Buffer>): VolumeFixture {
  const v = new VolumeFixture(dir, 4 * MiB, { hypervisor: new FakeHypervisor(dir), stepBytes: STEP_BYTES, lock: LOCK });
  if (recorded) for (const [k, b] of recorded) v.recorded.set(k, b);
  return v;
}

/** volume <- .aaaa <- .bbbb with data before, between and after; one per base format. */
const templates = new Map<string, Promise<VolumeFixture>>();
function template(base: 'raw' | 'qcow2'): Promise<VolumeFixture> {
  let t = templates.get(base);
  if (!t) {
    t = (async () => {
      return fixture(tmp(`template-${base}-`)).seedSnapshots({ format: base, writes: 8 });
    })();
    templates.set(base, t);
  }
  return t;
}

async function copyOf(v: VolumeFixture, prefix: string): Promise<VolumeFixture> {
  const d = tmp(prefix);
  fs.cpSync(v.dir, d, { recursive: true });
  return fixture(d, v.recorded);
}

function runOp(v: VolumeFixture, c: DriverCase) {
  const id = SNAP[c.snap];
  return c.op === 'create' ? v.driver.createSnapshot(VOL, id, { status: c.status }) : v.driver.deleteSnapshot(VOL, id, { status: c.status });
}

/** The driver child, killed just before its `killWrite`-th write(2) after the journal (0: never). */
function runCase(v: VolumeFixture, c: DriverCase, killWrite: number) {
  return runDriverChild(child, { dir: v.dir, vol: VOL, op: c.op, snap: SNAP[c.snap], status: c.status, stepBytes: STEP_BYTES, staleMs: LOCK.staleMs, kill: killWrite ? { write: killWrite } : 'never' });
}

/**
 * Info file parses and names exactly the chain's files; every snapshot reads as recorded;
 * qemu-img check clean — except leaks in the active file of an attached volume, which fsck
 * does not repair while the guest writes it (it says so).
 */
async function expectConsistent(v: VolumeFixture, must: string[], may: string[], attached = false, referee: 'qemu' | 'ours' = 'qemu'): Promise<void> {
  const info = v.info() ?? { active: BASE };
  const snaps = Object.keys(info).filter((k) => k !== 'active');
  for (const s of must) expect(snaps).toContain(s);
  for (const s of snaps) expect([...must, ...may]).toContain(s);
  const saved = new Map(v.recorded);
  for (const k of [...v.recorded.keys()]) if (!snaps.includes(k)) v.recorded.delete(k);
  try {
    v.expectSnapshotsIntact(false);
  } finally {
    for (const [k, b] of saved) v.recorded.set(k, b);
  }
  const { chain } = await v.driver.volumeInfo(VOL);
  const names = chain.map((l) => l.name);
  expect(v.listing().filter((n) => n !== `${BASE}.info`)).toEqual([...names].sort());
  const state = verdicts.state();
  for (const l of chain) {
    if (l.format !== 'qcow2') continue;
    const leaksAllowed = attached && l.name === info.active;
    const check = () => {
      const r = referee === 'qemu' ? qemuCheck(v.p(l.name)) : { status: checkImage(v.p(l.name)).exitCode };
      if (leaksAllowed && r.status === 3) return;
      expect({ file: l.name, ...r }).toMatchObject({ status: 0 });
    };
    // qemu-img's verdict on bytes it has already passed is not asked for again (our own check runs every time)
    if (referee === 'qemu') verdicts.once(`check${leaksAllowed ? ', leaks allowed' : ''}`, names.slice(names.indexOf(l.name)).map((n) => v.p(n)), check, state);
    else check();
  }
}

const verdicts = new Verdicts();

function expectSameState(got: VolumeFixture, want: VolumeFixture): void {
  expect(fs.readFileSync(got.infoFile(), 'utf8')).toBe(fs.readFileSync(want.infoFile(), 'utf8'));
  expect(got.engineChain()).toEqual(want.engineChain());
  expect(got.listing()).toEqual(want.listing());
}

async function driverCrash(c: DriverCase, n: number, twin: VolumeFixture): Promise<void> {
  const v = await copyOf(await template(c.base), 'case-');
  const now = v.content();
  const id = SNAP[c.snap];
  const { killed } = await runCase(v, c, n);
  expect(killed, `killed before write ${n}`).toBe(true);
  // The dead child's lock: removed (takeover after staleMs is test/volume/lock.test.ts's subject).
  fs.rmSync(v.p(`${BASE}.lock`), { recursive: true, force: true });
  const b = await copyOf(v, 'rerun-');
  if (c.op === 'create') v.recorded.set(id, now), b.recorded.set(id, now);
  const others = (['aaaa', 'bbbb'] as SnapName[]).filter((s) => s !== c.snap).map((s) => SNAP[s]);
  const final = c.op === 'create' ? { must: [SNAP.aaaa, SNAP.bbbb, id], may: [] } : { must: others, may: [] };

  // A: fsck (detached: whether the guest moved onto an empty overlay is undecidable while
  // attached, see crash.test.ts), then the re-run.
  const fsckStatus = c.op === 'create' ? 'available' : c.status;
  const attached = fsckStatus === 'in-use';
  const report = await v.driver.fsck(VOL, { status: fsckStatus });
  expect(report.problems, JSON.stringify(report.actions)).toEqual([]);
  await expectConsistent(v, c.op === 'create' ? [SNAP.aaaa, SNAP.bbbb] : others, [id], attached);
  if (!(c.op === 'create' && Object.hasOwn(v.info() ?? {}, id))) await runOp(v, c);
  expectSameState(v, twin);
  await expectConsistent(v, final.must, final.may, attached, 'ours');

  // B: the re-run alone.
  try {
    await runOp(b, c);
  } catch (e) {
    // an attached create that may have switched the guest: refused until fsck decides (detached)
    expect(c.op === 'create' && c.status === 'in-use' && e instanceof CowError && e.code === 'ECOW_INVALID_STATE', String(e)).toBe(true);
    expect((await b.driver.fsck(VOL, { status: 'available' })).problems).toEqual([]);
    if (!Object.hasOwn(b.info() ?? {}, id)) await runOp(b, c);
  }
  expectSameState(b, twin);
  await expectConsistent(b, final.must, final.may, c.status === 'in-use', 'ours');
  expectSameBytes(b.content(), c.op === 'create' ? now : twin.content(), 'volume content after the re-run');
  fs.rmSync(v.dir, { recursive: true });
  fs.rmSync(b.dir, { recursive: true });
}

// (Snapshot create killed before every write is crash.test.ts's: the overlay is made before the
// hypervisor is called, the same writes attached or not.)
const DRIVER_CASES: DriverCase[] = [
  { op: 'delete', snap: 'aaaa', status: 'in-use', base: 'raw' }, // hypervisor blockCommit + re-point
  { op: 'delete', snap: 'bbbb', status: 'in-use', base: 'raw' }, // hypervisor pull (stream)
  { op: 'delete', snap: 'aaaa', status: 'available', base: 'qcow2' }, // commit into a qcow2 base + rebase -u
];

describe.concurrent('driver: SIGKILL before every write, then fsck / re-run', () => {
  beforeAll(async () => {
    child = await bundleForNode('test/volume/fixtures/driver-child.ts', SCRATCH, 'driver-child');
  });

  for (const c of DRIVER_CASES) {
    it(`${c.status} ${c.op} ${c.snap} on a ${c.base} base volume`, async () => {
      const probe = await copyOf(await template(c.base), 'probe-');
      const { killed, writes } = await runCase(probe, c, 0);
      expect(killed).toBe(false);
      expect(writes).toBeGreaterThan(0);
      // the uninterrupted run in process: the state every recovery must reach
      const twin = await copyOf(await template(c.base), 'twin-');
      await runOp(twin, c);
      expectSameState(probe, twin);
      await sweep(faultPoints(writes, `driver ${c.status} ${c.op} ${c.snap} on a ${c.base} base, killed before write`), writes, (n) => driverCrash(c, n, twin));
    });
  }
});
