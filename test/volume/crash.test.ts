// Crash safety of snapshot create and delete: a real child process runs the operation and is
// SIGKILLed at every named point (driver steps, points of the hypervisor's live work), just
// before every write(2) the engine makes (a seeded sample of them in `npm test`, all in
// `npm run test:full`: test/support/tier.ts; the engine in-process, as the child counts write(2)
// in its own thread), and at random instants (the engine in a worker thread, the driver's
// default). Then, on one copy, fsck and a re-run; on another, the re-run alone. Both must end exactly as an uninterrupted run (info file
// bytes, chain, files), with every snapshot's data intact at every stage and qemu-img check clean.
//
// The child is test/volume/fixtures/driver-child.ts (runnable with vite-node, as lock-child.ts).
// Here it is bundled once with esbuild (vite's own bundler) and run by plain node: the same
// source, started in 0.4 s instead of 2.5 s, which keeps these ~70 crashes within the budget.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as os from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CowError } from '../../src/errors.js';
import type { VolumeStatus } from '../../src/volume/status.js';
import { bundleForNode } from '../support/bundle.js';
import { runDriverChild, type DriverKill } from '../support/driver-child.js';
import { FULL, atPoint, faultPoints } from '../support/tier.js';
import { FakeHypervisor } from '../support/fake-hypervisor.js';
import { Verdicts } from '../support/verdicts.js';
import { expectSameBytes, rng } from '../support/images.js';
import { qemuCheck, qemuRaw, requireQemu } from '../support/qemu.js';
import { BASE, SNAP, VOL, VolumeFixture, type SnapName } from '../support/volume.js';

requireQemu();

// A SIGKILL loses nothing the kernel has accepted, so fsync plays no part in what these tests
// can observe: run them in memory (tmpfs) where available, where an fsync costs nothing.
const SCRATCH = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'cowchain-crash-'));
afterAll(() => fs.rmSync(SCRATCH, { recursive: true, force: true }));
const tmpDir = (prefix: string) => fs.mkdtempSync(path.join(SCRATCH, prefix));

let child = '';

beforeAll(async () => {
  child = await bundleForNode('test/volume/fixtures/driver-child.ts', SCRATCH, 'driver-child');
});

const SIZE = 4 << 20;
const STEP_BYTES = 256 << 10;

const LOCK = { staleMs: 1_000 }; // the shortest stale time: a dead child's lock is taken over after 1 s

interface Case {
  op: 'create' | 'delete';
  snap: SnapName;
  status: VolumeStatus;
  /**
   * Where the child dies: at a driver step or a point of the hypervisor's work
   * (`hv:switched|merged|done`), just before the Nth write(2) after the journal, after a delay
   * (ms) from its start, or never.
   */
  kill: DriverKill;
  /** After the guest switched onto the new file, it writes this many bytes there. */
  guestWrite?: number;
  /**
   * Where the child runs its engine jobs (default: a worker thread, the driver's default). The
   * write kills run inline: the child counts write(2) in its own thread.
   */
  engine?: 'inline' | 'worker';
  /** fsck's status (default: the operation's). */
  fsckStatus?: VolumeStatus;
  /**
   * Let fsck take the dead child's lock over once it is stale (1 s), as a real restart would;
   * otherwise the lock directory is removed first (the lock's own tests cover takeover).
   */
  staleLock?: boolean;
}

function fixture(dir: string, recorded?: Map<string, Buffer>): VolumeFixture {
  const v = new VolumeFixture(dir, SIZE, { hypervisor: new FakeHypervisor(dir), stepBytes: STEP_BYTES, lock: LOCK });
  if (recorded) for (const [k, b] of recorded) v.recorded.set(k, b);
  return v;
}

/** volume-1234 <- .aaaa <- .bbbb, data written before, between and after: made once, copied per case. */
let template: Promise<VolumeFixture> | undefined;
async function makeTemplate(): Promise<VolumeFixture> {
  return fixture(tmpDir('template-')).seedSnapshots({ writes: 8 });
}
async function prepare(): Promise<VolumeFixture> {
  const t = await (template ??= makeTemplate());
  const dir = tmpDir('case-');
  fs.cpSync(t.dir, dir, { recursive: true });
  return fixture(dir, t.recorded);
}

/** The template's guest view, read once (every case starts from a copy of its files). */
let content: Promise<Buffer> | undefined;
function templateContent(): Promise<Buffer> {
  return (content ??= (async () => (await (template ??= makeTemplate())).content())());
}

/**
 * The uninterrupted run of an operation on the template, made once per operation (its state is
 * the same for every kill point: the files, the info file, the chain) and only read afterwards.
 */
const twins = new Map<string, Promise<VolumeFixture>>();
function twinOf(c: Case): Promise<VolumeFixture> {
  const key = `${c.status} ${c.op} ${c.snap}`;
  let twin = twins.get(key);
  if (!twin) {
    twin = (async () => {
      const t = await prepare();
      await runOp(t, c);
      return t;
    })();
    twins.set(key, twin);
  }
  return twin;
}

function copy(v: VolumeFixture, suffix: string): VolumeFixture {
  const to = `${v.dir}-${suffix}`;
  fs.cpSync(v.dir, to, { recursive: true });
  return fixture(to, v.recorded);
}

async function runOp(v: VolumeFixture, c: Case) {
  const id = SNAP[c.snap];
  return c.op === 'create' ? v.driver.createSnapshot(VOL, id, { status: c.status }) : v.driver.deleteSnapshot(VOL, id, { status: c.status });
}

function runCase(v: VolumeFixture, c: Case) {
  return runDriverChild(child, { dir: v.dir, vol: VOL, op: c.op, snap: SNAP[c.snap], status: c.status, stepBytes: STEP_BYTES, staleMs: LOCK.staleMs, kill: c.kill, guestWrite: c.guestWrite, engine: c.engine ?? 'worker' });
}

/** qemu-img's verdicts, each asked for once per distinct set of bytes (many points leave the same files). */
const verdicts = new Verdicts();

/**
 * The state a crashed or recovered volume must always be in. `referee`: also read every
 * snapshot with qemu-img compare and run qemu-img check on every qcow2 file.
 */
async function expectConsistent(v: VolumeFixture, allowed: { must: string[]; may: string[] }, referee: boolean): Promise<void> {
  const info = v.info() ?? { active: BASE };
  const snaps = Object.keys(info).filter((k) => k !== 'active').sort();
  for (const s of allowed.must) expect(snaps, `snapshot ${s} must survive`).toContain(s);
  for (const s of snaps) expect([...allowed.must, ...allowed.may], `unexpected snapshot ${s}`).toContain(s);
  // nothing left over: every file of the volume is in the active chain
  const { chain } = await v.driver.volumeInfo(VOL);
  const names = chain.map((l) => l.name);
  expect(v.listing().filter((n) => n !== `${BASE}.info`)).toEqual([...names].sort());
  const state = verdicts.state();
  const below = (name: string) => {
    expect(names, `${name} in the active chain`).toContain(name);
    return names.slice(names.indexOf(name)).map((n) => v.p(n));
  };
  // every surviving snapshot reads as when it was taken (our engine; once per distinct set of
  // bytes: the engine is deterministic, and many points leave the same files)
  for (const s of snaps) {
    const file = v.snapshotFile(s);
    const want = v.recorded.get(s);
    expect(want, `snapshot ${s} was recorded`).toBeDefined();
    verdicts.once(`engine reads ${verdicts.of(want!)}`, below(file), () => expectSameBytes(v.snapshotContent(s, false).engine, want!, `snapshot ${s} (our engine)`), state);
  }
  if (!referee) return;
  for (const s of snaps) {
    const file = v.snapshotFile(s);
    verdicts.once(`reads ${verdicts.of(v.recorded.get(s)!)}`, below(file), () => v.expectQemuReads(v.p(file), v.recorded.get(s)!, `snapshot ${s} (qemu-img compare)`), state);
  }
  for (const l of chain) {
    if (l.format !== 'qcow2') continue;
    verdicts.once('check', below(l.name), () => {
      const { status, result } = qemuCheck(v.p(l.name));
      expect({ file: l.name, status, result }, 'qemu-img check').toMatchObject({ status: 0 });
    }, state);
  }
}

function expectSameState(got: VolumeFixture, want: VolumeFixture, referee: boolean): void {
  expect(fs.readFileSync(got.infoFile(), 'utf8')).toBe(fs.readFileSync(want.infoFile(), 'utf8'));
  const chain = got.engineChain();
  expect(chain).toEqual(want.engineChain());
  if (referee) verdicts.once('chain', chain.map(([n]) => got.p(n)), () => expect(got.qemuChain()).toEqual(want.engineChain()));
  expect(got.listing()).toEqual(want.listing());
}

/** Returns what fsck reported doing. */
async function crashCase(c: Case): Promise<string[]> {
  const v = await prepare();
  const now = await templateContent(); // v is a copy of the template's files
  const id = SNAP[c.snap];
  // The uninterrupted run: the state every recovery must reach.
  const twin = await twinOf(c);
  const afterB = copy(v, 'b'); // placeholder copy, replaced after the crash

  const { killed, err } = await runCase(v, c);
  if (c.kill !== 'never' && !('delayMs' in c.kill)) expect(killed, `killed at ${JSON.stringify(c.kill)} (stderr: ${err})`).toBe(true);
  fs.rmSync(afterB.dir, { recursive: true });
  fs.cpSync(v.dir, afterB.dir, { recursive: true });
  // The dead child's lock: copy A waits until it is stale and takes it over (when asked); copy
  // B's is a copy nobody ever held.
  fs.rmSync(path.join(afterB.dir, `${BASE}.lock`), { recursive: true, force: true });
  if (!c.staleLock) fs.rmSync(path.join(v.dir, `${BASE}.lock`), { recursive: true, force: true });
  const expectedContent = (f: VolumeFixture, referee: boolean) => {
    if (!c.guestWrite) {
      const files = f.engineChain().map(([n]) => f.p(n));
      const state = verdicts.state();
      verdicts.once(`engine reads ${verdicts.of(now)}`, files, () => expectSameBytes(f.content(), now, 'volume content'), state);
      if (referee) verdicts.once(`reads ${verdicts.of(now)}`, files, () => f.expectQemuReads(f.p(f.active()), now, 'volume content (qemu-img compare)'), state);
      return;
    }
    for (const got of referee ? [f.content(), qemuRaw(f.p(f.active()), f.dir)] : [f.content()]) {
      // the guest's write must never be lost
      expect(got.subarray(12345, 12345 + c.guestWrite).equals(Buffer.alloc(c.guestWrite, 0x5a)), 'guest write kept').toBe(true);
    }
  };
  const others = (['aaaa', 'bbbb'] as SnapName[]).filter((s) => s !== c.snap).map((s) => SNAP[s]);
  if (c.op === 'create') v.recorded.set(id, now), afterB.recorded.set(id, now);
  const allowed = { must: c.op === 'create' ? [SNAP.aaaa, SNAP.bbbb] : others, may: [id] };

  // A: fsck, then the re-run.
  const report = await v.driver.fsck(VOL, { status: c.fsckStatus ?? c.status });

  expect(report.problems, JSON.stringify(report.actions)).toEqual([]);
  expect(fs.existsSync(v.p(`${BASE}.journal`))).toBe(false);
  await expectConsistent(v, allowed, true);
  expectedContent(v, true);
  const created = c.op === 'create' && Object.hasOwn(v.info() ?? {}, id);
  if (!created) await runOp(v, c);
  expectSameState(v, twin, true);
  await expectConsistent(v, c.op === 'create' ? { must: [SNAP.aaaa, SNAP.bbbb, id], may: [] } : { must: others, may: [] }, false);
  expectedContent(v, false);

  // B: the re-run alone finishes (or undoes and redoes) the interrupted operation.
  const rerun = async (): Promise<void> => {
    try {
      await runOp(afterB, c);
    } catch (e) {
      // a create that had completed (or was adopted) is already there
      if (c.op === 'create' && e instanceof CowError && e.code === 'ECOW_EXISTS') return;
      throw e;
    }
  };
  try {
    await rerun();
  } catch (e) {
    // The guest may or may not be on the (empty) new overlay of an interrupted attached create:
    // undecidable while attached, so the re-run refuses, changing nothing; detached, fsck decides.
    expect(c.op === 'create' && c.status === 'in-use' && e instanceof CowError && e.code === 'ECOW_NEEDS_FSCK', String(e)).toBe(true);
    const before = afterB.listing();
    expect(before).toContain(`${BASE}.journal`);
    expect((await afterB.driver.fsck(VOL, { status: 'in-use' })).problems.join()).toMatch(/whether the guest moved onto \S+ cannot be told from the files/);
    expect(afterB.listing()).toEqual(before);
    expect((await afterB.driver.fsck(VOL, { status: 'available' })).problems).toEqual([]);
    await rerun();
  }
  expectSameState(afterB, twin, false);
  await expectConsistent(afterB, c.op === 'create' ? { must: [SNAP.aaaa, SNAP.bbbb, id], may: [] } : { must: others, may: [] }, false);
  expectedContent(afterB, false);
  return report.actions.map((a) => a.detail);
}

const step = (name: string) => ({ step: name });
const WRITE_SCENARIOS: Omit<Case, 'kill'>[] = [
  { op: 'delete', snap: 'aaaa', status: 'available' },
  { op: 'delete', snap: 'bbbb', status: 'available' },
  { op: 'create', snap: 'cccc', status: 'available' },
];
const RANDOM_CASES: Omit<Case, 'kill'>[] = [
  { op: 'delete', snap: 'aaaa', status: 'available' },
  { op: 'delete', snap: 'bbbb', status: 'available' },
  { op: 'delete', snap: 'aaaa', status: 'in-use' },
  { op: 'create', snap: 'cccc', status: 'in-use' },
];
const SEED = Number(process.env.CRASH_SEED ?? Date.now() % 100_000);
const random = rng(SEED);
const stale = { staleLock: true } as const;

describe.concurrent('SIGKILL, then fsck / re-run', () => {
  // before every write(2) the engine makes (first: the longest)
  for (const sc of WRITE_SCENARIOS) {
    it(`${sc.status} ${sc.op} ${sc.snap}, killed before ${FULL ? 'every write' : 'sampled writes'}`, async () => {
      // An uninterrupted child says how many writes there are.
      const probe = await prepare();
      const { killed, writes } = await runCase(probe, { ...sc, kill: 'never', engine: 'inline' });
      expect(killed).toBe(false);
      expect(writes).toBeGreaterThan(0);
      const points = faultPoints(writes, `${sc.status} ${sc.op} ${sc.snap}, killed before write`);
      const details: string[] = [];
      await pool(points, 3, async (n) => {
        try {
          details.push(...(await crashCase({ ...sc, kill: { write: n }, engine: 'inline' })));
        } catch (e) {
          throw new Error(`killed before write ${atPoint(n, writes)}: ${(e as Error).message}`, { cause: e });
        }
      });
      // A commit killed between allocating a cluster and referencing it leaks it; recovery frees
      // it. (A full sweep passes such a point for certain; a sample may not.)
      if (sc.snap === 'bbbb' && FULL) expect(details.join('\n')).toMatch(/freed \d+ leaked cluster/);
    });
  }


  // at every named point
  // (detached: the points between two writes of the engine are covered by the write kills below)
  for (const kill of ['create:overlay', 'create:info', 'create:done']) {
    it(`detached create, killed at ${kill}`, () => crashCase({ ...stale, op: 'create', snap: 'cccc', status: 'available', kill: step(kill) }));
  }
  for (const kill of ['create:journal', 'create:overlay', 'hv:switched', 'create:hypervisor', 'create:info']) {
    // fsck runs detached: an empty overlay the guest may have moved onto is undecidable while attached
    it(`attached create, killed at ${kill} (fsck detached)`, () => crashCase({ ...stale, op: 'create', snap: 'cccc', status: 'in-use', kill: step(kill), fsckStatus: 'available' }));
  }
  it('attached create, the guest wrote to the new file, killed before the info file', () =>
    crashCase({ ...stale, op: 'create', snap: 'cccc', status: 'in-use', kill: step('create:hypervisor'), guestWrite: 70_000 }));
  // The commit in its engine worker, the process killed at its 2nd step (the random kills below hit it mid-step).
  for (const snap of ['aaaa', 'bbbb'] as const) {
    it(`detached delete ${snap}, killed between steps of the commit in the engine worker`, () =>
      crashCase({ ...stale, op: 'delete', snap, status: 'available', kill: { step: 'delete:commit-progress', nth: 2 } }));
  }
  for (const kill of ['delete:info', 'delete:unlink']) {
    it(`detached delete aaaa (commit + rebase), killed at ${kill}`, () => crashCase({ ...stale, op: 'delete', snap: 'aaaa', status: 'available', kill: step(kill) }));
  }
  for (const kill of ['delete:info', 'delete:unlink']) {
    it(`detached delete bbbb (active), killed at ${kill}`, () => crashCase({ ...stale, op: 'delete', snap: 'bbbb', status: 'available', kill: step(kill) }));
  }
  for (const kill of ['delete:journal', 'hv:merged', 'hv:done', 'delete:info', 'delete:unlink']) {
    it(`attached delete aaaa (blockCommit), killed at ${kill}`, () => crashCase({ ...stale, op: 'delete', snap: 'aaaa', status: 'in-use', kill: step(kill) }));
  }
  for (const kill of ['delete:journal', 'hv:done', 'delete:info', 'delete:unlink']) {
    it(`attached delete bbbb (pull), killed at ${kill}`, () => crashCase({ ...stale, op: 'delete', snap: 'bbbb', status: 'in-use', kill: step(kill) }));
  }

  // at random instants
  for (const c of RANDOM_CASES) {
    const delayMs = Math.floor(random() * 150);
    it(`${c.status} ${c.op} ${c.snap}, killed ${delayMs} ms after start (CRASH_SEED=${SEED})`, () => crashCase({ ...c, kill: { delayMs }, fsckStatus: 'available' }));
  }
});

/** Run `fn` over `items`, `limit` at a time. */
async function pool<T>(items: T[], limit: number, fn: (t: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  await Promise.all(Array.from({ length: limit }, async () => {
    for (let t = queue.shift(); t !== undefined; t = queue.shift()) await fn(t);
  }));
}

