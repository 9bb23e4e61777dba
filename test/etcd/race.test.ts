// The snapshot race (test/support/race-run.ts, as test/hardening/concurrency.test.ts runs it with
// the share lease) with the etcd lock on the live 3-member cluster: 8 racer processes on one
// volume and on 8 volumes, racers SIGKILLed while holding a lock (the next holder continues once
// etcd expires the lease), and in the first race the cluster's leader SIGKILLed half way
// through — the race goes on with two members — and restarted afterwards.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleForNode } from '../support/bundle.js';
import { requireQemu } from '../support/qemu.js';
import { expectRace, race } from '../support/race-run.js';
import { byTier } from '../support/tier.js';
import { etcdRaceLock, leaderMember, member } from './support.js';

requireQemu();

const SECONDS = Number(process.env.COWCHAIN_SOAK_SECONDS ?? byTier(20, 60));
/** Lease TTL of the race's locks: short, so that killed holders are followed quickly. */
const TTL_S = 3;
/**
 * How long a killed holder's lock may block the others: its lease's TTL, once more when a leader
 * election falls inside it (a new leader restarts every lease's TTL: measured 7.7 s here with
 * TTL 3 s), plus the election, the waiters' retry delay and a loaded machine.
 */
const TAKEOVER_LIMIT_MS = 2 * TTL_S * 1000 + 5_000;

const SCRATCH = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'cowchain-etcd-race-'));
afterAll(() => fs.rmSync(SCRATCH, { recursive: true, force: true }));

let child = '';
beforeAll(async () => {
  child = await bundleForNode('test/hardening/fixtures/race-child.ts', SCRATCH, 'race-child');
});

describe('8 processes racing snapshot create / delete with the etcd lock', () => {
  it(`on one volume for ${SECONDS} s, holders killed inside operations, the etcd leader killed half way`, async () => {
    const { lock, close } = etcdRaceLock(TTL_S);
    let killed = -1;
    try {
      const r = await race({
        name: 'etcd-one',
        nVols: 1,
        seconds: SECONDS,
        child,
        scratch: SCRATCH,
        lock,
        midRace: async () => {
          killed = await leaderMember();
          member('kill', killed);
          console.log(`etcd-one: killed the leader, member m${killed}`);
        },
      });
      expectRace(r);
      expect(killed).toBeGreaterThanOrEqual(0);
      expect(r.kills.length).toBeGreaterThan(0);
      for (const k of r.kills) {
        expect(k.blockedMs, `kill at ${k.step}`).not.toBeNull();
        expect(k.blockedMs!, `kill at ${k.step}`).toBeLessThanOrEqual(TAKEOVER_LIMIT_MS);
      }
    } finally {
      if (killed >= 0) member('start', killed);
      await close();
    }
  }, (SECONDS + 120) * 1000);

  it(`on 8 volumes for ${SECONDS} s, holders killed inside operations`, async () => {
    const { lock, close } = etcdRaceLock(TTL_S);
    try {
      expectRace(await race({ name: 'etcd-eight', nVols: 8, seconds: SECONDS, child, scratch: SCRATCH, lock }));
    } finally {
      await close();
    }
  }, (SECONDS + 120) * 1000);
});
