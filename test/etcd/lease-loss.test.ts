// Lease loss aborts the job: while a snapshot delete commits (engine job in a worker), etcd
// revokes the lock's lease (as it does when keep-alives stop reaching it). The holder hears it,
// and the commit stops at its next step with ECOW_LOCK_LOST — not finished, nothing past the
// check written — and the next operation, under a new lock, finishes the delete from the journal
// with every snapshot's data intact.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { etcdLockKey } from '../../src/volume/etcd-lock.js';
import { rejection } from '../support/errors.js';
import { requireQemu, tmpDir } from '../support/qemu.js';
import { SNAP, VOL, VolumeFixture, f, infoOf, BASE } from '../support/volume.js';
import { etcdEndpoints, etcdTarget, etcdUrl, testCoordinator } from './support.js';

requireQemu();

const MiB = 1 << 20;

/** Revoke the lease that holds `key` (etcdctl, synchronously: called from a driver step hook). */
function revokeLeaseOf(key: string): string {
  const ctl = (...args: string[]) => spawnSync('etcdctl', ['--endpoints', etcdEndpoints().join(','), ...args], { env: { ...process.env, ETCDCTL_API: '3' }, encoding: 'utf8' });
  const got = ctl('get', key, '-w', 'json');
  // The lease id is a 64-bit number: read it from the text, not through JSON.parse.
  const lease = /"lease":(\d+)/.exec(got.stdout)?.[1];
  if (!lease) throw new Error(`no lease on ${key}: ${got.stdout} ${got.stderr}`);
  const hex = BigInt(lease).toString(16);
  const r = ctl('lease', 'revoke', hex);
  if (r.status !== 0) throw new Error(`etcdctl lease revoke ${hex}: ${r.stderr}`);
  return hex;
}

describe('lease loss', () => {
  it('etcd revokes the lease during a commit: the job stops with ECOW_LOCK_LOST; the next operation finishes the delete', async () => {
    const url = etcdUrl();
    const key = etcdLockKey(etcdTarget(url), VOL);
    const coordination = testCoordinator(url, { ttlSeconds: 5 });
    let progress = 0;
    let revoked = '';
    let slow = false;
    const v = new VolumeFixture(tmpDir('cowchain-etcd-loss-'), 16 * MiB, {
      coordination,
      stepBytes: 64 << 10,
      onStep: (step) => {
        if (step !== 'delete:commit-progress' || !slow) return;
        if (++progress === 1) revoked = revokeLeaseOf(key);
        // Each step 20 ms longer, so that the commit outlasts the news of the loss (at most a
        // keep-alive period, TTL / 3); between steps this thread is free to hear it.
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
      },
    });
    try {
      await v.seedSnapshots({ writes: 40 });
      const before = v.content();
      slow = true;
      const lost = await rejection(v.driver.deleteSnapshot(VOL, SNAP.aaaa, { status: 'available' }));
      slow = false;
      expect(lost.code).toBe('ECOW_LOCK_LOST');
      console.log(`lease ${revoked} revoked at commit step 1; the commit stopped after step ${progress}: ${lost.message}`);
      expect(revoked).not.toBe('');
      expect(lost.message).toContain(key);
      // Stopped part-way: the delete is pending (journal kept), not done.
      expect(progress).toBeGreaterThan(0);
      expect((await v.driver.volumeInfo(VOL)).pending).toMatchObject({ op: 'delete-snapshot', snapshot: SNAP.aaaa });
      // The next operation (a new lock, a new lease) finishes it.
      expect(await v.del('aaaa')).toMatchObject({ outcome: 'deleted' });
      v.expectInfo(infoOf(f('bbbb'), { bbbb: f('bbbb') }));
      v.expectChain([f('bbbb'), BASE]);
      v.expectSnapshotsIntact();
      v.expectContent(before);
      v.expectAllClean();
    } finally {
      await coordination.close();
    }
  });
});
