// Issue 19, item 4: interrupted commands. Ctrl-C or SIGTERM must not leave a lock that makes the
// next command wait in silence: a command interrupted while it waits releases what it holds and
// exits 130/143; one killed inside an engine job (nothing can answer a signal there) dies as a
// crash does, and the next command takes its lock over at once, saying so, and finishes the
// journaled operation. Real child processes throughout (the CLI bundled, test/support/child.ts).
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { lockFilePath } from '../../src/volume/lock.js';
import { VolumeDriver } from '../../src/volume/driver.js';
import { bundleForNode } from '../support/bundle.js';
import { runChild, type ChildResult } from '../support/child.js';
import { cli } from '../support/cli.js';
import { rejection } from '../support/errors.js';
import { expectClean, requireQemu, tmpDir } from '../support/qemu.js';
import { BASE, SNAP, VOL, VolumeFixture, f } from '../support/volume.js';

let bundles: string;
let cliChild: string;
let lockChild: string;

beforeAll(async () => {
  requireQemu();
  bundles = tmpDir('cowchain-interrupted-bundles-');
  cliChild = await bundleForNode('test/volume/fixtures/cli-child.ts', bundles, 'cli-child');
  lockChild = await bundleForNode('test/volume/fixtures/lock-child.ts', bundles, 'lock-child');
});
afterAll(() => fs.rmSync(bundles, { recursive: true, force: true }));
/** Each test has a directory of its own, so the ones that wait for a lock run at once. */
const it = test.extend<{ dir: string }>({
  // eslint-disable-next-line no-empty-pattern
  dir: async ({}, use) => {
    const dir = tmpDir('cowchain-interrupted-');
    await use(dir);
    fs.rmSync(dir, { recursive: true, force: true });
  },
});

const journal = (dir: string) => path.join(dir, `${BASE}.journal`);
const lockDir = (dir: string) => lockFilePath(dir, VOL);

/** The CLI in its own process; `signal` goes out just before the first write(2) once `after` exists. */
function cliRun(dir: string, args: string[], options: { signal?: NodeJS.Signals; after?: string; onStderr?: Parameters<typeof runChild>[1]['onStderr'] } = {}): Promise<ChildResult> {
  return runChild(cliChild, {
    env: {
      ARGS: JSON.stringify([...args, '--dir', dir, '--volume', VOL]),
      ...(options.signal ? { SIGNAL: options.signal, SIGNAL_AFTER: options.after ?? '' } : {}),
    },
    onStderr: options.onStderr,
    timeoutMs: 300_000,
  });
}

describe('an interrupted volume command', () => {
  it('SIGINT inside the data move: dies as a crash does; the next command takes the lock over at once, says so, and the delete finishes with every snapshot intact', async ({ dir }) => {
    const v = new VolumeFixture(dir, 8 << 20, { jobs: undefined });
    await v.seedSnapshots();
    const before = v.content();

    const r = await cliRun(dir, ['snapshot', 'delete', '--snapshot', SNAP.aaaa], { signal: 'SIGINT', after: journal(dir) });
    // Inside the engine job the signal's default action runs: the process is gone at once (a
    // shell reports 130), the journal stays, and so does its lock, with its owner recorded.
    expect(r.signal, r.stderr).toBe('SIGINT');
    expect(fs.existsSync(journal(dir))).toBe(true);
    expect(fs.existsSync(lockDir(dir))).toBe(true);

    // The next command does not wait out the 30 s lease: the lock's holder is gone.
    const info = await cliRun(dir, ['volume', 'info']);
    expect(info.code, info.stderr).toBe(0);
    expect(info.stderr).toMatch(/^cowchain: volume \S+: took over the lock left by process \d+ of this host, which is gone/m);
    expect(info.stdout).toContain(`pending: interrupted delete-snapshot of snapshot ${SNAP.aaaa}`);

    // Another command finishes the pending delete first, and says so.
    const again = await cliRun(dir, ['snapshot', 'delete', '--snapshot', SNAP.aaaa]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toContain(`finishing the pending delete of snapshot ${SNAP.aaaa}`);
    expect(fs.existsSync(journal(dir))).toBe(false);
    expect(fs.existsSync(lockDir(dir))).toBe(false);
    v.recorded.delete(SNAP.aaaa);
    v.expectChain([f('bbbb'), BASE]);
    v.expectSnapshotsIntact();
    expect(v.content().equals(before)).toBe(true);
    expectClean(path.join(dir, f('bbbb'))); // the base is raw
  });

  for (const [signal, code] of [
    ['SIGTERM', 143],
    ['SIGINT', 130],
  ] as const) {
    it.concurrent(`${signal} while waiting for the lock: exits ${code} with one line, and leaves the holder's lock alone`, async ({ dir }) => {
      let holderProc: ChildProcess | undefined;
      const holder = runChild(lockChild, {
        env: { LOCK_DIR: dir, LOCK_VOL: VOL, LOCK_STALE_MS: '2000', CHILD_ID: 'holder', MODE: 'hold' },
        onStdout: (_all, proc) => (holderProc = proc),
      });
      while (!holderProc) await new Promise((res) => setTimeout(res, 20));
      let sent = false;
      const r = await cliRun(dir, ['volume', 'info'], {
        onStderr: (all, proc) => {
          if (!sent && all.includes('waiting for the lock, held by another operation')) sent = proc.kill(signal);
        },
      });
      expect(r.code, r.stderr).toBe(code);
      const lines = r.stderr.trimEnd().split('\n');
      expect(lines[0]).toMatch(/^cowchain: volume \S+: waiting for the lock, held by another operation \(\d+ s\)$/);
      expect(lines.at(-1)).toMatch(/^cowchain: ECOW_CANCELLED: waiting for the lock of volume \S+ was cancelled$/);
      // The holder's lock is still there, still its own.
      const owner = JSON.parse(fs.readFileSync(path.join(lockDir(dir), 'owner'), 'utf8')) as { pid: number };
      expect(owner.pid).toBe(holderProc.pid);
      holderProc.kill('SIGKILL');
      const child = await holder;
      expect(child.signal).toBe('SIGKILL');
    });
  }

  // With the two above: three tests that wait for a lock, run at once.
  it.concurrent('waiting on a lock nobody renews says "waiting for a stale lock (N s)" until it takes it over', async ({ dir }) => {
    const v = new VolumeFixture(dir, 1 << 20, { jobs: undefined });
    await v.createVolume();
    fs.mkdirSync(lockDir(dir)); // left by a host that is gone: no owner this host can judge
    const notices: string[] = [];
    const d = new VolumeDriver({ dir, lock: { staleMs: 2_000, acquireTimeoutMs: 60_000 }, onNotice: (m) => notices.push(m) });
    const info = await d.volumeInfo(VOL);
    expect(info.active).toBe(BASE);
    expect(notices.length).toBeGreaterThan(0);
    expect(notices.every((n) => /^volume \S+: waiting for a stale lock \(\d+ s\): .* has not been renewed for \d+ s; it is taken over once unchanged for 2 s$/.test(n)), notices.join('\n')).toBe(true);
  });

  it('interrupted after its journal (driver signal): stops before its next change, releases the lock, keeps the journal; the next operation finishes it, saying so', async ({ dir }) => {
    const v = new VolumeFixture(dir, 4 << 20, { jobs: undefined });
    await v.seedSnapshots();
    const controller = new AbortController();
    const notices: string[] = [];
    const d = new VolumeDriver({ dir, signal: controller.signal, onStep: (s) => s === 'delete:journal' && controller.abort() });
    const e = await rejection(d.deleteSnapshot(VOL, SNAP.aaaa, { status: 'available' }));
    expect(e.code).toBe('ECOW_CANCELLED');
    expect(e.message).toContain('stopped before its next change and released the lock');
    expect(fs.existsSync(lockDir(dir))).toBe(false);
    expect(fs.existsSync(journal(dir))).toBe(true);

    const next = new VolumeDriver({ dir, onNotice: (m) => notices.push(m) });
    await next.extendVolume(VOL, 8 << 20, { status: 'available' });
    expect(notices).toEqual([expect.stringContaining(`finishing the pending delete of snapshot ${SNAP.aaaa} (interrupted earlier: ${BASE}.journal) before extending the volume`)]);
    expect(fs.existsSync(journal(dir))).toBe(false);
    v.expectChain([f('bbbb'), BASE]);
  });

  it('after a delete failed on a full disk, the next unrelated command says it is finishing the pending delete, then does both', async ({ dir }) => {
    const v = new VolumeFixture(dir, 4 << 20, { jobs: undefined });
    await v.seedSnapshots();
    const enospc = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    const failing = new VolumeDriver({
      dir,
      onStep: (s) => {
        if (s === 'delete:commit-progress') throw enospc;
      },
    });
    await expect(failing.deleteSnapshot(VOL, SNAP.aaaa, { status: 'available' })).rejects.toThrow();
    expect(fs.existsSync(journal(dir))).toBe(true);

    const r = await cli('snapshot', 'create', '--dir', dir, '--volume', VOL, '--snapshot', SNAP.cccc);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toBe(`cowchain: volume ${VOL}: finishing the pending delete of snapshot ${SNAP.aaaa} (interrupted earlier: ${BASE}.journal) before creating snapshot ${SNAP.cccc}\n`);
    expect(fs.existsSync(journal(dir))).toBe(false);
    v.expectChain([f('cccc'), f('bbbb'), BASE]);
  });

  it('the help of the volume and snapshot commands gives the exit codes of an interrupted command', async () => {
    for (const args of [
      ['snapshot', 'delete'],
      ['snapshot', 'create'],
      ['volume', 'info'],
      ['volume', 'fsck'],
    ]) {
      const r = await cli(...args, '--help');
      expect(r.status, args.join(' ')).toBe(0);
      expect(r.stdout.replace(/\s+/g, ' '), args.join(' ')).toContain('130 / 143 interrupted by SIGINT / SIGTERM');
    }
  });
});
