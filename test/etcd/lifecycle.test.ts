// The seed lifecycle with the etcd lock on the live cluster: the driver (in-process, engine jobs
// in workers) and the CLI (COWCHAIN_COORDINATION) take every lock through etcd — never a lock
// directory on the share — record the lock's fence in the journal, and wait for (then give up
// on) a lock another holder has in etcd. A CLI whose clock runs 40 s ahead (the preload
// test/support/clock-ahead.mjs) waits for a live lock like any other.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { lockFilePath } from '../../src/volume/lock.js';
import { runProcess } from '../support/child.js';
import { CLI_MAIN } from '../support/cli.js';
import { rejection } from '../support/errors.js';
import { requireQemu, tmpDir } from '../support/qemu.js';
import { ROOT } from '../support/bundle.js';
import { BASE, MiB, SNAP, VOL, VolumeFixture, f, infoOf } from '../support/volume.js';
import { etcdUrl, testCoordinator } from './support.js';

requireQemu();

describe('the seed lifecycle with the etcd lock', () => {
  for (const format of ['raw', 'qcow2'] as const) {
    it(`${format} base: snapshots aaaa, bbbb; delete aaaa then bbbb; every lock through etcd, its fence in the journal`, async () => {
      const url = etcdUrl();
      const coordination = testCoordinator(url);
      const journals: string[] = [];
      const v = new VolumeFixture(tmpDir('cowchain-etcd-seed-'), 4 * MiB, {
        coordination,
        onStep: (step) => {
          if (step === 'create:journal' || step === 'delete:journal') journals.push(fs.readFileSync(path.join(v.dir, `${BASE}.journal`), 'utf8'));
          // never a lock directory on the share
          expect(fs.existsSync(lockFilePath(v.dir, VOL))).toBe(false);
        },
      });
      try {
        await v.seedSnapshots({ format });
        v.expectInfo(infoOf(f('bbbb'), { aaaa: f('aaaa'), bbbb: f('bbbb') }));
        v.expectChain([f('bbbb'), f('aaaa'), BASE]);
        v.expectSnapshotsIntact();
        const now = v.content();
        expect(await v.del('aaaa')).toMatchObject({ outcome: 'deleted', removed: [f('aaaa')] });
        v.expectInfo(infoOf(f('bbbb'), { bbbb: f('bbbb') }));
        v.expectChain([f('bbbb'), BASE]);
        v.expectSnapshotsIntact();
        expect(await v.del('bbbb')).toMatchObject({ outcome: 'deleted', removed: [f('bbbb')] });
        v.expectInfo(infoOf(BASE, {}));
        v.expectContent(now);
        v.expectAllClean();
        // Every operation journalled its lock's fence, and every new lock's fence was larger.
        const fences = journals.map((j) => BigInt(JSON.parse(j).fence as string));
        expect(fences).toHaveLength(4);
        for (let i = 1; i < fences.length; i++) expect(fences[i]).toBeGreaterThan(fences[i - 1]);

        // A lock held elsewhere in etcd: the driver waits for it, then gives up (ECOW_LOCKED).
        const other = testCoordinator(url);
        const short = testCoordinator(url, { acquireTimeoutMs: 1_500 });
        const impatient = new VolumeFixture(v.dir, 4 * MiB, { coordination: short });
        try {
          await other.withLock(v.dir, VOL, async () => {
            expect((await rejection(impatient.driver.volumeInfo(VOL))).code).toBe('ECOW_LOCKED');
          });
          expect((await impatient.driver.volumeInfo(VOL)).active).toBe(BASE);
        } finally {
          await other.close();
          await short.close();
        }
      } finally {
        await coordination.close();
      }
    });
  }

  it('through the CLI with COWCHAIN_COORDINATION: create, snapshot create / delete, info, delete', async () => {
    const dir = tmpDir('cowchain-etcd-cli-');
    const env = { ...process.env, COWCHAIN_COORDINATION: etcdUrl() };
    const at = ['--dir', dir, '--volume', VOL];
    const cli = async (...argv: string[]) => {
      const r = await runProcess(process.execPath, [CLI_MAIN, ...argv], { env, timeoutMs: 120_000 });
      expect({ argv, status: r.status, stderr: r.stderr }).toEqual({ argv, status: 0, stderr: '' });
      return r.stdout;
    };
    await cli('volume', 'create', ...at, '--size', '1M');
    await cli('snapshot', 'create', ...at, '--snapshot', SNAP.aaaa);
    await cli('snapshot', 'create', ...at, '--snapshot', SNAP.bbbb);
    await cli('snapshot', 'delete', ...at, '--snapshot', SNAP.aaaa);
    expect(JSON.parse(await cli('volume', 'info', ...at, '--output', 'json'))).toMatchObject({ active: f('bbbb'), snapshots: { [SNAP.bbbb]: f('bbbb') }, pending: null });
    expect(await cli('volume', 'fsck', ...at)).toBe('clean\n');
    await cli('volume', 'delete', ...at);
    expect(fs.readdirSync(dir).filter((n) => n !== '.cinderSecureEnvIndicator')).toEqual([]);
  });

  it('a CLI whose clock runs 40 s ahead cannot take a live etcd lock: it waits for the holder', async () => {
    const dir = tmpDir('cowchain-etcd-skew-');
    const url = etcdUrl();
    const at = ['--dir', dir, '--volume', VOL];
    const skewed = (...argv: string[]) =>
      runProcess(process.execPath, ['--import', path.join(ROOT, 'test/support/clock-ahead.mjs'), CLI_MAIN, ...argv], { env: { ...process.env, COWCHAIN_COORDINATION: url }, timeoutMs: 120_000 });
    // The preload works: that process's clock is 40 s ahead of ours.
    const probe = await runProcess(process.execPath, ['--import', path.join(ROOT, 'test/support/clock-ahead.mjs'), '-e', 'console.log(Date.now(), new Date().getTime())']);
    for (const t of probe.stdout.trim().split(' ').map(Number)) expect(t - Date.now()).toBeGreaterThan(30_000);
    expect((await skewed('volume', 'create', ...at, '--size', '1M')).status).toBe(0);
    const holder = testCoordinator(url);
    let released = 0;
    let finished = 0;
    try {
      const run = await holder.withLock(dir, VOL, async () => {
        const cli = skewed('snapshot', 'create', ...at, '--snapshot', SNAP.aaaa).then((r) => ((finished = performance.now()), r));
        // Held for three lease TTLs of ours (2 s): a waiter judging by its own clock would have taken it.
        await new Promise((r) => setTimeout(r, 6_000));
        expect(fs.existsSync(path.join(dir, f('aaaa'))), 'the skewed CLI changed the volume while the lock was held').toBe(false);
        expect(finished).toBe(0);
        released = performance.now();
        return { cli }; // not awaited here: the lock is released first
      });
      const r = await run.cli;
      expect({ status: r.status, stderr: r.stderr }).toMatchObject({ status: 0 });
      expect(r.stderr).toMatch(/waiting for the etcd lock/);
      expect(finished).toBeGreaterThan(released);
      expect(fs.existsSync(path.join(dir, f('aaaa')))).toBe(true);
    } finally {
      await holder.close();
    }
  });
});
