// Concurrency (issue 8): 8 processes race snapshot create / delete / verify through the real
// driver — on ONE volume, then spread over 8 volumes — for a bounded time (COWCHAIN_SOAK_SECONDS
// per race; 2 s in `npm test`, 30 s in `npm run test:full`, `npm run soak` runs 600 s). The parent checks all along and after:
//  - the info file always parses (read lock-free, many times a second) and every file it names
//    exists; under the lock, with no operation pending, it matches the chain exactly;
//  - no snapshot's data is lost: each child writes its own pattern into its own region of the
//    active file before each snapshot and verifies its snapshots (flattened) later; at the end
//    the parent verifies every snapshot that must exist, and that nothing else exists;
//  - no lock, journal or temp file is left behind; qemu-img check is clean on every file;
//  - a process SIGKILLed while holding the lock (paused inside an operation) blocks the others
//    only until one of them takes its lock over (at once: its owner record shows it gone; the
//    stale time, STALE_MS, is the fallback); its operation is finished or undone by whoever
//    comes next, and the race goes on with a replacement process.
// The children are test/hardening/fixtures/race-child.ts, bundled (plain node starts fast).
// The race itself is test/support/race-run.ts (test/etcd/race.test.ts runs it with the etcd lock).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleForNode } from '../support/bundle.js';
import { requireQemu } from '../support/qemu.js';
import { expectRace, race, shareLeaseRace } from '../support/race-run.js';
import { byTier } from '../support/tier.js';

requireQemu();

const SECONDS = Number(process.env.COWCHAIN_SOAK_SECONDS ?? byTier(2, 30));
/** Lock stale timeout for the race (short, so that killed holders are taken over quickly). */
const STALE_MS = 2_000;
/**
 * How long a dead holder may block the others. A broken takeover blocks them until their acquire
 * time-out (120 s) or for good; a working one takes well under STALE_MS on a quiet machine, and
 * a loaded one adds what it adds: the bound is far from both (the lock's timing is pinned in
 * test/volume/lock.test.ts).
 */
const TAKEOVER_LIMIT_MS = 30_000;

const SCRATCH = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'cowchain-race-'));
afterAll(() => fs.rmSync(SCRATCH, { recursive: true, force: true }));

let child = '';
beforeAll(async () => {
  child = await bundleForNode('test/hardening/fixtures/race-child.ts', SCRATCH, 'race-child');
});

describe('8 processes racing snapshot create / delete', () => {
  it(`on one volume for ${SECONDS} s, holders killed inside operations`, async () => {
    const r = await race({ name: 'one', nVols: 1, seconds: SECONDS, child, scratch: SCRATCH, lock: shareLeaseRace(STALE_MS) });
    expectRace(r);
    // On one volume seven others are always waiting: a dead holder's lock is taken over in time.
    expect(r.kills.length).toBeGreaterThan(0);
    for (const k of r.kills) {
      expect(k.blockedMs, `kill at ${k.step}`).not.toBeNull();
      expect(k.blockedMs!, `kill at ${k.step}`).toBeLessThanOrEqual(TAKEOVER_LIMIT_MS);
    }
  }, (SECONDS + 90) * 1000);

  it(`on 8 volumes for ${SECONDS} s, holders killed inside operations`, async () => {
    expectRace(await race({ name: 'eight', nVols: 8, seconds: SECONDS, child, scratch: SCRATCH, lock: shareLeaseRace(STALE_MS) }));
  }, (SECONDS + 90) * 1000);
});
