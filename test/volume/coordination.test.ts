// The driver takes every volume lock through its coordinator (coordination.ts): a coordinator
// handed in is the only one used, its handle's check guards every change and write, and a handle
// that says the lock is lost stops the operation with ECOW_LOCK_LOST before the next change; the
// handle's fencing token goes into the journal, and a later holder's journal stops an earlier one.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CowError } from '../../src/errors.js';
import type { VolumeCoordinator, VolumeLockHandle } from '../../src/volume/coordination.js';
import { readJournal, writeJournal } from '../../src/volume/journal.js';
import { lockFilePath, shareLease } from '../../src/volume/lock.js';
import { VolumeFiles } from '../../src/volume/volume-files.js';
import { rejection } from '../support/errors.js';
import { requireQemu, tmpDir } from '../support/qemu.js';
import { MiB, SNAP, VOL, VolumeFixture, f } from '../support/volume.js';

requireQemu();

/** A coordinator that grants every lock at once and counts what the driver does with it. */
function countingCoordinator(): VolumeCoordinator & { locks: string[]; checks: number; loseAfter: number } {
  const c = {
    description: 'counting',
    locks: [] as string[],
    checks: 0,
    loseAfter: Infinity,
    async withLock<T>(dir: string, volumeId: string, fn: (lock: VolumeLockHandle) => Promise<T> | T): Promise<T> {
      c.locks.push(`${dir} ${volumeId}`);
      const controller = new AbortController();
      return fn({
        signal: controller.signal,
        fence: '42',
        assertHeld: () => {
          if (++c.checks > c.loseAfter) throw new CowError('ECOW_LOCK_LOST', 'counting coordinator: lost');
        },
      });
    },
    close: async () => {},
  };
  return c;
}

describe('volume coordination', () => {
  it('the driver locks through the coordinator it is given, never the share lease', async () => {
    const coordination = countingCoordinator();
    const v = new VolumeFixture(tmpDir('cowchain-coord-'), 2 * MiB, { coordination, jobs: undefined });
    await v.createVolume();
    v.write();
    await v.snap('aaaa');
    await v.del('aaaa');
    expect(coordination.locks.length).toBeGreaterThanOrEqual(3);
    expect(new Set(coordination.locks)).toEqual(new Set([`${v.dir} ${VOL}`]));
    expect(coordination.checks).toBeGreaterThan(0);
    expect(fs.existsSync(lockFilePath(v.dir, VOL))).toBe(false);
  });

  it('a handle that says the lock is lost stops the operation with ECOW_LOCK_LOST', async () => {
    const coordination = countingCoordinator();
    const v = new VolumeFixture(tmpDir('cowchain-coord-'), 2 * MiB, { coordination, jobs: undefined });
    await v.createVolume();
    coordination.loseAfter = coordination.checks; // the next check fails
    expect((await rejection(v.driver.createSnapshot(VOL, 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', { status: 'available' }))).code).toBe('ECOW_LOCK_LOST');
    expect(v.info()).toBeNull();
  });

  it('shareLease() is the share lease with its options: a second holder waits and gives up', async () => {
    const dir = tmpDir('cowchain-coord-');
    const lease = shareLease({ staleMs: 5_000, acquireTimeoutMs: 300 });
    const inner = await lease.withLock(dir, VOL, async (lock) => {
      expect(fs.existsSync(lockFilePath(dir, VOL))).toBe(true);
      expect(lock.fence).toBeUndefined();
      return rejection(lease.withLock(dir, VOL, () => 'taken'));
    });
    expect(inner.code).toBe('ECOW_LOCKED');
    expect(fs.existsSync(lockFilePath(dir, VOL))).toBe(false);
  });
});

describe('the fencing token in the journal', () => {
  it("is recorded by the holder that writes the journal; a later holder's journal stops an earlier one", async () => {
    const v = new VolumeFixture(tmpDir('cowchain-coord-'), 2 * MiB, { jobs: undefined });
    await v.createVolume();
    const files = new VolumeFiles(v.dir, VOL);
    const journal = { version: 1, op: 'create-snapshot', snapshot: SNAP.aaaa, file: f('aaaa'), backing: v.base, phase: 'overlay' } as const;
    files.fence = '9';
    await writeJournal(files, journal);
    expect(JSON.parse(fs.readFileSync(path.join(v.dir, files.journalName), 'utf8')).fence).toBe('9');
    expect((await readJournal(files))?.fence).toBe('9');
    const earlier = new VolumeFiles(v.dir, VOL);
    earlier.fence = '8';
    expect((await rejection(readJournal(earlier))).code).toBe('ECOW_LOCK_LOST');
    expect((await rejection(writeJournal(earlier, journal))).code).toBe('ECOW_LOCK_LOST');
    expect(JSON.parse(fs.readFileSync(path.join(v.dir, files.journalName), 'utf8')).fence).toBe('9');
    // A later holder, and the share lease (no token), read it as any journal.
    const later = new VolumeFiles(v.dir, VOL);
    later.fence = '10';
    expect((await readJournal(later))?.snapshot).toBe(SNAP.aaaa);
    expect((await readJournal(new VolumeFiles(v.dir, VOL)))?.snapshot).toBe(SNAP.aaaa);
  });
});
