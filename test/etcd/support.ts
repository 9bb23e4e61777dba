/**
 * Shared pieces of the etcd suite (npm run test:etcd): the 3-member cluster test/etcd/setup.sh
 * started (COWCHAIN_ETCD_ENDPOINTS), a key prefix of its own for every test (so runs never see
 * each other's locks), and stopping/restarting one member through test/etcd/member.sh, which
 * acts only on the processes setup.sh recorded.
 *
 * Without the cluster the suite FAILS (it never skips): a run that silently tested nothing
 * would look like a pass.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { etcdCoordinator, etcdLockKey, type EtcdLockOptions } from '../../src/volume/etcd-lock.js';
import { parseEtcdUrl, type EtcdTarget } from '../../src/volume/etcd-target.js';
import type { VolumeCoordinator } from '../../src/volume/coordination.js';
import { ROOT } from '../support/bundle.js';
import type { RaceLock } from '../support/race-run.js';

/** `host:port` of the three members, in member order (m0, m1, m2). */
export function etcdEndpoints(): string[] {
  const e = process.env.COWCHAIN_ETCD_ENDPOINTS;
  if (!e) throw new Error('no etcd cluster: run `bash test/etcd/setup.sh` first (it writes /run/cowchain-etcd/env), then `npm run test:etcd`');
  return e.split(',');
}

/** A coordination URL on the whole cluster with a fresh key prefix (one per call). */
export function etcdUrl(): string {
  return `etcd://${etcdEndpoints().join(',')}/cowchain-test/${randomBytes(6).toString('hex')}`;
}

export function etcdTarget(url = etcdUrl()): EtcdTarget {
  return parseEtcdUrl(url, 'test');
}

/** A coordinator with a short TTL (tests wait for expiries); the caller closes it. */
export function testCoordinator(url = etcdUrl(), options: EtcdLockOptions = {}): VolumeCoordinator {
  return etcdCoordinator(etcdTarget(url), { ttlSeconds: 2, acquireTimeoutMs: 20_000, ...options });
}

/** Stop (SIGKILL) or restart member `n` of the cluster; only the process setup.sh recorded. */
export function member(action: 'kill' | 'start', n: number): void {
  const r = spawnSync('bash', [path.join(ROOT, 'test/etcd/member.sh'), action === 'kill' ? 'stop' : 'start', String(n)], {
    env: { ...process.env, KILL: action === 'kill' ? '1' : '0' },
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`member.sh ${action} ${n} failed (${r.status}): ${r.stderr}`);
}

type Etcd3 = InstanceType<typeof import('etcd3').Etcd3>;

/** A plain etcd client on `hosts` (default: the whole cluster), for looking at the cluster. */
export async function etcdClient(hosts = etcdEndpoints()): Promise<Etcd3> {
  const { Etcd3 } = await import('etcd3');
  return new Etcd3({ hosts: hosts.map((h) => `http://${h}`), dialTimeout: 3_000 });
}

/** The member (index into etcdEndpoints()) that leads the cluster now. */
export async function leaderMember(): Promise<number> {
  const endpoints = etcdEndpoints();
  for (let i = 0; i < endpoints.length; i++) {
    const c = await etcdClient([endpoints[i]]);
    try {
      const s = await c.maintenance.status();
      if (s.leader === s.header.member_id) return i;
    } catch {
      // a stopped member: not the leader
    } finally {
      c.close();
    }
  }
  throw new Error(`no member of ${endpoints.join(',')} says it leads`);
}

/**
 * The etcd lock for the snapshot race (test/support/race-run.ts): racers and the parent lock
 * through the cluster with lease TTL `ttlSeconds`; a lock's holder is its key's create revision.
 */
export function etcdRaceLock(ttlSeconds: number): { lock: RaceLock; close(): Promise<void> } {
  const url = etcdUrl();
  const target = etcdTarget(url);
  const coordination = testCoordinator(url, { ttlSeconds, acquireTimeoutMs: 120_000, maxRetryDelayMs: 200 });
  let client: Promise<Etcd3> | undefined;
  return {
    lock: {
      env: { ETCD_URL: url, TTL_S: String(ttlSeconds) },
      driver: { coordination },
      holder: async (_dir, vol) => {
        client ??= etcdClient();
        const res = await (await client).get(etcdLockKey(target, vol)).exec();
        return res.kvs[0] ? String(res.kvs[0].create_revision) : null;
      },
    },
    close: async () => {
      await coordination.close();
      if (client) (await client).close();
    },
  };
}
