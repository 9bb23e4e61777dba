// A driver operation whose lock is taken over in the middle (its holder stalled past the stale
// time, and another process took the lock) must change nothing more: every change checks the
// lock first (VolumeFiles' guard, the engine job's checkpoint). At each step of a create and of
// a detached delete, the lock directory is replaced by "another holder's"; the directory's
// content is recorded at that instant and must be the same when the operation has failed with
// ECOW_LOCK_LOST. Then that other holder goes away, and the next operation (fsck) finishes or
// undoes the interrupted one: the volume ends consistent with every snapshot intact.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CowError } from '../../src/errors.js';
import type { DriverStep } from '../../src/volume/context.js';
import { lockFilePath } from '../../src/volume/lock.js';
import { requireQemu, tmpDir } from '../support/qemu.js';
import { SNAP, VOL, VolumeFixture, MiB } from '../support/volume.js';

requireQemu();

/** Every entry of `dir` with a hash of its bytes (directories: marked as such). */
function snapshotDir(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of fs.readdirSync(dir).sort()) {
    const p = path.join(dir, n);
    out[n] = fs.statSync(p).isDirectory() ? 'dir' : createHash('sha256').update(fs.readFileSync(p)).digest('hex');
  }
  return out;
}

interface Case {
  op: 'create' | 'delete';
  at: DriverStep;
}

const CASES: Case[] = [
  ...(['create:journal', 'create:overlay', 'create:info', 'create:done'] as const).map((at) => ({ op: 'create' as const, at })),
  ...(['delete:journal', 'delete:commit-progress', 'delete:commit', 'delete:rebase', 'delete:info', 'delete:unlink', 'delete:done'] as const).map((at) => ({ op: 'delete' as const, at })),
];

describe('a lock taken over in the middle of an operation', () => {
  for (const c of CASES) {
    it(`${c.op}, taken over at ${c.at}: nothing changes after that, and the next operation ends clean`, async () => {
      const dir = tmpDir('cowchain-lost-');
      let armed = false;
      let seen: Record<string, string> | null = null;
      const lockDir = lockFilePath(dir, VOL);
      const v = new VolumeFixture(dir, 4 * MiB, {
        stepBytes: 256 << 10, // several commit steps
        lock: { staleMs: 60_000 },
        onStep: (step) => {
          if (!armed || step !== c.at || seen) return;
          // Another holder took the lock over: a new directory with its own mtime.
          fs.rmSync(lockDir, { recursive: true });
          fs.mkdirSync(lockDir);
          const theirs = new Date(Date.now() + 10_000);
          fs.utimesSync(lockDir, theirs, theirs);
          seen = snapshotDir(dir);
        },
      });
      await v.createVolume('qcow2');
      v.write();
      await v.snap('aaaa');
      v.write();
      await v.snap('bbbb');
      v.write();

      armed = true;
      const op = c.op === 'create' ? v.driver.createSnapshot(VOL, SNAP.cccc, { status: 'available' }) : v.driver.deleteSnapshot(VOL, SNAP.aaaa, { status: 'available' });
      const err = await op.then(
        () => null,
        (e: unknown) => e,
      );
      expect(seen, `step ${c.at} was reached`).not.toBeNull();
      expect(err).toBeInstanceOf(CowError);
      expect((err as CowError).code).toBe('ECOW_LOCK_LOST');
      // Not a byte changed since the lock was lost, and the other holder's lock is still there.
      expect(snapshotDir(dir)).toEqual(seen);

      // The other holder is gone; the next operation recovers.
      armed = false;
      fs.rmSync(lockDir, { recursive: true });
      const report = await v.driver.fsck(VOL);
      expect(report.problems).toEqual([]);
      const d = await v.driver.volumeInfo(VOL);
      expect(d.pending).toBeNull();
      expect(d.active).toBe(d.chain[0].name);
      // The interrupted operation either happened or did not, as a whole.
      const ids = Object.keys(d.snapshots).sort();
      if (c.op === 'create') {
        // nothing wrote since the create began: the volume's content now is what cccc must hold
        if (ids.includes(SNAP.cccc)) v.recorded.set(SNAP.cccc, v.content());
        expect([[SNAP.aaaa, SNAP.bbbb].sort(), [SNAP.aaaa, SNAP.bbbb, SNAP.cccc].sort()]).toContainEqual(ids);
      } else {
        if (!ids.includes(SNAP.aaaa)) v.recorded.delete(SNAP.aaaa);
        expect([[SNAP.bbbb], [SNAP.aaaa, SNAP.bbbb].sort()]).toContainEqual(ids);
      }
      v.expectSnapshotsIntact();
      expect(fs.readdirSync(dir).filter((n) => n.endsWith('.lock') || n.includes('.journal') || n.includes('.takeover'))).toEqual([]);
    });
  }
});
