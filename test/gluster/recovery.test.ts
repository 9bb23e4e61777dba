// An interrupted operation on GlusterFS, recovered from the other host: a child process deletes
// a snapshot through mount A and is SIGKILLed in the middle (during the commit, between the
// commit and the rebase, after the info file, or at a random instant); then, through mount B,
// fsck takes the dead process's lock over once it is stale and finishes or undoes the delete,
// and re-running the delete there ends exactly as an uninterrupted run did on a copy (info file
// bytes, chain, files), with every snapshot's content intact and qemu-img check clean.
//
// The child is test/volume/fixtures/driver-child.ts, the crash tests' own.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { expectSameBytes } from '../support/images.js';
import { qemuCheck, qemuRaw, requireQemu } from '../support/qemu.js';
import { BASE, SNAP, VOL, VolumeFixture, type SnapName } from '../support/volume.js';
import { bundleChild, glusterMounts, runChild, sharedDir, type SharedDir } from './support.js';

requireQemu();
const m = glusterMounts();

const SIZE = 4 << 20;
const STEP_BYTES = 256 << 10;
const LOCK = { staleMs: 2_000 }; // short stale time: a dead holder's lock is taken over after 2 s

let child = '';
let root: SharedDir;
let template: VolumeFixture;
beforeAll(async () => {
  child = await bundleChild('test/volume/fixtures/driver-child.ts');
  root = sharedDir(m, 'recovery');
  // volume-1234 <- .aaaa <- .bbbb with data before, between and after, on the volume
  fs.mkdirSync(path.join(root.a, 'template'));
  template = new VolumeFixture(path.join(root.a, 'template'), SIZE, { lock: LOCK });
  await template.createVolume();
  template.write(8);
  await template.snap('aaaa');
  template.write(8);
  await template.snap('bbbb');
  template.write(8);
});

let n = 0;
/** A copy of the template: the fixture through mount A and through mount B. */
function copy(label: string): { a: VolumeFixture; b: VolumeFixture; name: string } {
  const name = `${label}-${n++}`;
  fs.cpSync(template.dir, path.join(root.a, name), { recursive: true });
  const a = new VolumeFixture(path.join(root.a, name), SIZE, { stepBytes: STEP_BYTES, lock: LOCK });
  const b = new VolumeFixture(path.join(root.b, name), SIZE, { stepBytes: STEP_BYTES, lock: LOCK });
  for (const [k, v] of template.recorded) a.recorded.set(k, v), b.recorded.set(k, v);
  return { a, b, name };
}

type Kill = { step: string; nth?: number } | { delayMs: number };

async function killedDelete(snap: SnapName, kill: Kill, label: string): Promise<string> {
  const { a, b, name } = copy(snap);
  const now = a.content();
  // the uninterrupted run, on another copy: the state recovery must reach
  const twin = copy(`${snap}-twin`).a;
  await twin.del(snap);

  const r = await runChild(child, {
    env: {
      DIR: a.dir,
      VOL,
      OP: 'delete',
      SNAP: SNAP[snap],
      STATUS: 'available',
      STEP_BYTES: String(STEP_BYTES),
      LOCK_STALE_MS: String(LOCK.staleMs),
      ...('step' in kill ? { KILL_AT: kill.step, KILL_NTH: String(kill.nth ?? 1) } : {}),
    },
    onStdout: (out, proc) => {
      if ('delayMs' in kill && out.startsWith('ready') && !proc.killed) setTimeout(() => proc.kill('SIGKILL'), kill.delayMs);
    },
    timeoutMs: 60_000,
  });
  if ('step' in kill) expect(r.signal, `killed at ${kill.step} (stderr: ${r.stderr})`).toBe('SIGKILL');
  else expect(r.signal === 'SIGKILL' || r.code === 0, r.stderr).toBe(true);
  const interrupted = r.signal === 'SIGKILL';
  // the dead process's lock is on the volume (killed at a random instant, it may have been
  // between releasing the lock and exiting)
  if ('step' in kill) expect(fs.existsSync(path.join(b.dir, `${BASE}.lock`)), 'the dead holder left its lock').toBe(true);

  // Host B: fsck waits for the lock to go stale, takes it over, recovers.
  const t0 = Date.now();
  const report = await b.driver.fsck(VOL, { status: 'available' });
  const waited = Date.now() - t0;
  expect(report.problems, JSON.stringify(report.actions)).toEqual([]);
  expect(fs.existsSync(path.join(b.dir, `${BASE}.journal`)), 'no journal left').toBe(false);
  expect(fs.existsSync(path.join(a.dir, `${BASE}.lock`)), 'no lock left').toBe(false);
  // consistent after fsck: the other snapshot survives, the deleted one may or may not remain
  const info = b.info()!;
  const other = (['aaaa', 'bbbb'] as SnapName[]).find((s) => s !== snap)!;
  expect(Object.keys(info)).toContain(SNAP[other]);
  for (const k of [...b.recorded.keys()]) if (!Object.hasOwn(info, k)) b.recorded.delete(k);
  b.expectSnapshotsIntact();
  b.expectContent(now);

  // Re-run the delete from host B: the same end as the uninterrupted run.
  await b.driver.deleteSnapshot(VOL, SNAP[snap], { status: 'available' });
  expect(fs.readFileSync(b.infoFile(), 'utf8')).toBe(fs.readFileSync(twin.infoFile(), 'utf8'));
  expect(b.engineChain()).toEqual(twin.engineChain());
  expect(b.qemuChain()).toEqual(twin.engineChain());
  expect(b.listing()).toEqual(twin.listing());
  b.recorded.delete(SNAP[snap]);
  b.expectSnapshotsIntact();
  expectSameBytes(qemuRaw(b.p(b.active()), b.dir), now, 'volume content after recovery (qemu, mount B)');
  for (const f of b.listing()) {
    if (f.endsWith('.info') || f === BASE) continue;
    const { status, result } = qemuCheck(b.p(f));
    expect({ f, status, result }, `qemu-img check ${f}`).toMatchObject({ status: 0 });
  }
  return `delete ${snap} ${label} (${name}): ${interrupted ? 'killed' : 'finished before the kill'}; fsck through mount B after ${waited} ms: ${report.actions.map((x) => x.detail).join('; ') || 'nothing to do'}`;
}

describe.concurrent('SIGKILL mid-delete through mount A, fsck and re-run through mount B', () => {
  const cases: [SnapName, Kill][] = [
    ['aaaa', { step: 'delete:commit-progress', nth: 3 }],
    ['aaaa', { step: 'delete:commit' }],
    ['aaaa', { step: 'delete:info' }],
    ['bbbb', { step: 'delete:commit-progress', nth: 2 }],
    ['bbbb', { step: 'delete:unlink' }],
    ['aaaa', { delayMs: 40 + Math.floor(Math.random() * 200) }],
  ];
  for (const [snap, kill] of cases) {
    const label = 'step' in kill ? `at ${kill.step}${kill.nth ? ` #${kill.nth}` : ''}` : `${kill.delayMs} ms after start`;
    it(`delete ${snap}${snap === 'aaaa' ? ' (commit + rebase)' : ' (active)'}, killed ${label}`, async () => {
      console.log(await killedDelete(snap, kill, label));
    });
  }
});
