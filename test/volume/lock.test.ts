import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { lockFilePath, withVolumeLock, type VolumeLockHandle } from '../../src/volume/lock.js';
import { bundleForNode } from '../support/bundle.js';
import { rejection } from '../support/errors.js';
import { byTier } from '../support/tier.js';

const VOL = '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d';
const VOL2 = 'ffffffff-1111-4222-8333-444444444444';
// A short stale time; the holder renews every 500 ms.
const SHORT = { staleMs: 2_000 };

/** A preload that runs a child's wall clock 40 s ahead (monotonic time untouched). */
const CLOCK_AHEAD = ['--import', fileURLToPath(new URL('../support/clock-ahead.mjs', import.meta.url))] as const;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function deferred<T = void>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, sleep(ms).then(() => Promise.reject(new Error(`timed out: ${what}`)))]);
}

const exists = (p: string) =>
  fs.stat(p).then(
    () => true,
    () => false,
  );

/**
 * Each test has its own directory and its own child processes (killed after it), so the tests
 * run concurrently: most of their time is spent waiting for a lease to go stale.
 */
interface LockTest {
  tmp: string;
  children: ChildProcess[];
}
const it = test.extend<LockTest>({
  // eslint-disable-next-line no-empty-pattern
  tmp: async ({}, use) => {
    const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'cowchain-lock-'));
    await use(tmp);
    await fs.rm(tmp, { recursive: true, force: true });
  },
  // Set up after tmp, so torn down before it.
  children: async ({ tmp }, use) => {
    const children: ChildProcess[] = [];
    await use(children);
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    void tmp;
  },
});

describe.concurrent('withVolumeLock in one process', () => {
  it('returns fn’s value, passes fn’s error through, and never leaves the lock directory behind', async ({ tmp }) => {
    const lockDir = lockFilePath(tmp, VOL);
    expect(lockDir).toBe(path.join(tmp, `volume-${VOL}.lock`));
    const seen = await withVolumeLock(tmp, VOL, async () => {
      expect((await fs.stat(lockDir)).isDirectory()).toBe(true);
      return 42;
    });
    expect(seen).toBe(42);
    expect(await exists(lockDir)).toBe(false);

    const boom = new Error('boom');
    await expect(withVolumeLock(tmp, VOL, () => Promise.reject(boom))).rejects.toBe(boom);
    expect(await exists(lockDir)).toBe(false);
    await expect(
      withVolumeLock(tmp, VOL, () => {
        throw boom;
      }),
    ).rejects.toBe(boom);
    expect(await fs.readdir(tmp)).toEqual([]);
  });

  it('serialises concurrent operations on one volume', async ({ tmp }) => {
    let active = 0;
    let maxActive = 0;
    const order: number[] = [];
    await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        withVolumeLock(tmp, VOL, async () => {
          active++;
          maxActive = Math.max(maxActive, active);
          await sleep(30);
          order.push(i);
          active--;
        }),
      ),
    );
    expect(maxActive).toBe(1);
    expect(order.sort()).toEqual([0, 1, 2, 3, 4, 5]);
    expect(await fs.readdir(tmp)).toEqual([]);
  });

  it('lets different volumes run at the same time', async ({ tmp }) => {
    const inA = deferred();
    const inB = deferred();
    // Each holds its lock until the other is inside its own: only possible if they overlap.
    await withTimeout(
      Promise.all([
        withVolumeLock(tmp, VOL, async () => {
          inA.resolve();
          await inB.promise;
        }),
        withVolumeLock(tmp, VOL2, async () => {
          inB.resolve();
          await inA.promise;
        }),
      ]),
      5_000,
      'two volumes overlapping',
    );
  });

  it('keeps two volumes of one directory held over several refreshes without compromising either', async ({ tmp }) => {
    // Each lock renews its own directory; neither renewal may mistake the other's for a takeover.
    const [a, b] = await Promise.all([
      withVolumeLock(tmp, VOL, async (l) => (await sleep(2_500), l.signal.aborted), SHORT),
      withVolumeLock(tmp, VOL2, async (l) => (await sleep(2_500), l.signal.aborted), SHORT),
    ]);
    expect([a, b]).toEqual([false, false]);
    expect(await fs.readdir(tmp)).toEqual([]);
  });

  it('gives up with ECOW_LOCKED naming the volume after acquireTimeoutMs', async ({ tmp }) => {
    const release = deferred();
    const entered = deferred();
    const holder = withVolumeLock(tmp, VOL, async () => {
      entered.resolve();
      await release.promise;
    });
    await entered.promise;
    const t0 = Date.now();
    const err = await rejection(withVolumeLock(tmp, VOL, () => 'never', { acquireTimeoutMs: 300 }));
    const waited = Date.now() - t0;
    expect(err.code).toBe('ECOW_LOCKED');
    expect(err.message).toContain(VOL);
    expect(waited).toBeGreaterThanOrEqual(290);
    // The option was used: the default (60 s) is far off, whatever a loaded machine adds.
    expect(waited).toBeLessThan(30_000);
    release.resolve();
    await holder;
    // Once released it is free again at once.
    expect(await withVolumeLock(tmp, VOL, () => 'ok', { acquireTimeoutMs: 0 })).toBe('ok');
  });

  it('stops waiting with ECOW_CANCELLED when the signal aborts', async ({ tmp }) => {
    const release = deferred();
    const entered = deferred();
    const holder = withVolumeLock(tmp, VOL, async () => {
      entered.resolve();
      await release.promise;
    });
    await entered.promise;
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    const t0 = Date.now();
    const err = await rejection(withVolumeLock(tmp, VOL, () => 'never', { signal: ac.signal }));
    expect(err.code).toBe('ECOW_CANCELLED');
    // Not the acquire time-out (60 s by default): the abort ended the wait.
    expect(Date.now() - t0).toBeLessThan(30_000);
    release.resolve();
    await holder;
  });

  it('assertHeld fails at once, synchronously, when the lock directory is no longer the one it renewed', async ({ tmp }) => {
    const lockDir = lockFilePath(tmp, VOL);
    let thrown: unknown;
    const err = await rejection(
      withVolumeLock(tmp, VOL, async (lock) => {
        lock.assertHeld(); // ours: renews, no throw
        // Another holder took it over: a new directory with its own mtime.
        await fs.rm(lockDir, { recursive: true });
        await fs.mkdir(lockDir);
        const theirs = new Date(Date.now() + 5_000);
        await fs.utimes(lockDir, theirs, theirs);
        try {
          lock.assertHeld();
        } catch (e) {
          thrown = e;
        }
        expect(lock.signal.aborted).toBe(true);
      }),
    );
    expect(err.code).toBe('ECOW_LOCK_LOST');
    expect(thrown).toBe(err);
    // The other holder's lock stays.
    expect(await exists(lockDir)).toBe(true);
  });

  it('assertHeld renews the lease: the lock directory mtime moves forward', async ({ tmp }) => {
    const lockDir = lockFilePath(tmp, VOL);
    await withVolumeLock(tmp, VOL, async (lock) => {
      const before = (await fs.stat(lockDir)).mtimeMs;
      await sleep(20);
      lock.assertHeld();
      expect((await fs.stat(lockDir)).mtimeMs).toBeGreaterThan(before);
      lock.assertHeld(); // its own renewal is still recognised as its own
    });
  });

  it('rejects a stale time under 1 s with ECOW_BAD_ARGUMENT', async ({ tmp }) => {
    const err = await rejection(withVolumeLock(tmp, VOL, () => 1, { staleMs: 500 }));
    expect(err.code).toBe('ECOW_BAD_ARGUMENT');
    expect(err.message).toContain('500');
    expect(await fs.readdir(tmp)).toEqual([]);
  });

  it('rejects a bad volume id and a missing directory', async ({ tmp }) => {
    expect((await rejection(withVolumeLock(tmp, '../x', () => 1))).code).toBe('ECOW_BAD_ARGUMENT');
    expect((await rejection(withVolumeLock(path.join(tmp, 'nope'), VOL, () => 1))).code).toBe('ECOW_NOT_FOUND');
  });
});

describe.concurrent('a lock lost while held', () => {
  async function waitForLoss(lock: VolumeLockHandle): Promise<unknown> {
    await withTimeout(
      new Promise<void>((r) => lock.signal.addEventListener('abort', () => r(), { once: true })),
      6_000,
      'compromise detection',
    );
    return lock.signal.reason;
  }

  it('fails the operation with ECOW_LOCK_LOST (not a crash) when the lock directory disappears', async ({ tmp }) => {
    let reason: unknown;
    let assertHeldError: unknown;
    const err = await rejection(
      withVolumeLock(
        tmp,
        VOL,
        async (lock) => {
          lock.assertHeld(); // held: no throw
          await fs.rm(lockFilePath(tmp, VOL), { recursive: true });
          reason = await waitForLoss(lock);
          try {
            lock.assertHeld();
          } catch (e) {
            assertHeldError = e;
          }
          return 'finished anyway';
        },
        SHORT,
      ),
    );
    expect(err.code).toBe('ECOW_LOCK_LOST');
    expect(err.message).toContain(VOL);
    expect(reason).toBe(err);
    expect(assertHeldError).toBe(err);
  });

  it('does not remove a lock directory that someone else has taken over', async ({ tmp }) => {
    const lockDir = lockFilePath(tmp, VOL);
    const err = await rejection(
      withVolumeLock(
        tmp,
        VOL,
        async (lock) => {
          // Another host decided we were stale and re-created the lock: the mtime is not ours.
          const past = new Date(Date.now() - 60_000);
          await fs.utimes(lockDir, past, past);
          await waitForLoss(lock);
        },
        SHORT,
      ),
    );
    expect(err.code).toBe('ECOW_LOCK_LOST');
    expect(await exists(lockDir)).toBe(true);
  });
});

describe('withVolumeLock across processes', () => {
  // The children run the real src/volume/lock.ts (fixtures/lock-child.ts, bundled once for plain
  // node), so both sides use the same code and options; no copy of the lock protocol.
  let fixture = '';
  let scratch = '';
  beforeAll(async () => {
    scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'cowchain-lock-child-'));
    fixture = await bundleForNode('test/volume/fixtures/lock-child.ts', scratch, 'lock-child');
  });
  afterAll(() => fs.rm(scratch, { recursive: true, force: true }));

  /** The lock child (fixtures/lock-child.ts) in `tmp`, with `env`; `nodeArgs` go to node before it. */
  function startChild({ tmp, children }: LockTest, env: Record<string, string>, nodeArgs: string[] = []): { child: ChildProcess; lines: AsyncIterator<string> } {
    const child = spawn(process.execPath, [...nodeArgs, fixture], {
      env: { ...process.env, LOCK_DIR: tmp, LOCK_VOL: VOL, LOCK_STALE_MS: '2000', ...env },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    children.push(child);
    let buffer = '';
    const queue: string[] = [];
    let waiter: ((v: IteratorResult<string>) => void) | undefined;
    let ended = false;
    const flush = () => {
      if (waiter && (queue.length || ended)) {
        const w = waiter;
        waiter = undefined;
        w(queue.length ? { value: queue.shift()!, done: false } : { value: undefined, done: true });
      }
    };
    child.stdout!.on('data', (d: Buffer) => {
      buffer += d.toString();
      let nl;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        queue.push(buffer.slice(0, nl));
        buffer = buffer.slice(nl + 1);
      }
      flush();
    });
    child.stdout!.on('end', () => {
      ended = true;
      flush();
    });
    const lines: AsyncIterator<string> = {
      next: () =>
        withTimeout(
          new Promise<IteratorResult<string>>((r) => {
            waiter = r;
            flush();
          }),
          120_000,
          'child output',
        ),
    };
    return { child, lines };
  }

  const exited = (child: ChildProcess) =>
    new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve({ code: child.exitCode, signal: child.signalCode });
      else child.once('exit', (code, signal) => resolve({ code, signal }));
    });

  it.concurrent('serialises operations of several real processes (and this one) on one volume', async ({ tmp, children }) => {
    const log = path.join(tmp, 'log');
    const started = ['c1', 'c2', 'c3'].map((id) =>
      startChild({ tmp, children }, { MODE: 'loop', CHILD_ID: id, LOG: log, ITERATIONS: '4', HOLD_MS: '25' }),
    );
    for (const { lines } of started) expect((await lines.next()).value).toMatch(/^ready \d+$/);
    // Start everyone at once so they really contend.
    for (const { child } of started) child.stdin!.write('go\n');
    for (let i = 0; i < 4; i++) {
      await withVolumeLock(tmp, VOL, async () => {
        await fs.appendFile(log, 'enter parent\n');
        await sleep(25);
        await fs.appendFile(log, 'exit parent\n');
      }, SHORT);
    }
    for (const { child, lines } of started) {
      expect((await lines.next()).value).toBe('done');
      expect(await exited(child)).toEqual({ code: 0, signal: null });
    }
    const entries = (await fs.readFile(log, 'utf8')).trimEnd().split('\n');
    expect(entries).toHaveLength(2 * 4 * 4);
    // Strict alternation enter X / exit X: no two holders ever overlapped.
    for (let i = 0; i < entries.length; i += 2) {
      const who = entries[i].replace(/^enter /, '');
      expect(entries[i], `entry ${i}`).toBe(`enter ${who}`);
      expect(entries[i + 1], `entry ${i + 1}`).toBe(`exit ${who}`);
    }
    expect(new Set(entries.map((e) => e.split(' ')[1]))).toEqual(new Set(['c1', 'c2', 'c3', 'parent']));
    expect(await fs.readdir(tmp)).toEqual(['log']);
  });

  async function checkAlternation(log: string, who: string[], rounds: number) {
    const entries = (await fs.readFile(log, 'utf8')).trimEnd().split('\n');
    expect(entries).toHaveLength(2 * rounds * who.length);
    for (let i = 0; i < entries.length; i += 2) {
      const w = entries[i].replace(/^enter /, '');
      expect(entries[i], `entry ${i}`).toBe(`enter ${w}`);
      expect(entries[i + 1], `entry ${i + 1}`).toBe(`exit ${w}`);
    }
  }

  it.concurrent('a stale lock found by several waiters at once goes to one of them only', async ({ tmp, children }) => {
    // With "stale → rmdir → mkdir", the second waiter removes the first one's fresh lock and
    // both hold it; the takeover by rename-and-verify lets exactly one through.
    for (let round = 0; round < byTier(1, 3); round++) {
      const log = path.join(tmp, `log-${round}`);
      const holder = startChild({ tmp, children }, { MODE: 'hold', CHILD_ID: 'holder' });
      expect((await holder.lines.next()).value).toBe(`locked ${holder.child.pid}`);
      const ids = ['a', 'b', 'c', 'd', 'e'];
      // Waiters that look every few milliseconds: all of them see the lock turn stale together.
      const started = ids.map((id) => startChild({ tmp, children }, { MODE: 'loop', CHILD_ID: id, LOG: log, ITERATIONS: '2', HOLD_MS: '100', MAX_DELAY_MS: '3' }));
      for (const { lines } of started) expect((await lines.next()).value).toMatch(/^ready \d+$/);
      for (const { child } of started) child.stdin!.write('go\n');
      holder.child.kill('SIGKILL');
      for (const { child, lines } of started) {
        expect((await lines.next()).value).toBe('done');
        expect(await exited(child)).toEqual({ code: 0, signal: null });
      }
      await checkAlternation(log, ids, 2);
      expect((await fs.readdir(tmp)).filter((n) => !n.startsWith('log-'))).toEqual([]);
    }
  });

  it.concurrent('a holder stalled past the stale time is taken over, learns it at assertHeld, and leaves the new lock alone', async ({ tmp, children }) => {
    const lockDir = lockFilePath(tmp, VOL);
    // Frozen until told (no timer runs, no renewal), however long a loaded machine takes to see it stale.
    const { child, lines } = startChild({ tmp, children }, { MODE: 'stall', CHILD_ID: 'staller', STALL_MS: 'stdin' });
    expect((await lines.next()).value).toBe(`locked ${child.pid}`);
    await withVolumeLock(
      tmp,
      VOL,
      async (lock) => {
        // Taken over while the holder is frozen; it then wakes, checks before changing anything, and stops.
        child.stdin!.write('wake\n');
        expect((await lines.next()).value).toBe('lost ECOW_LOCK_LOST');
        expect((await lines.next()).value).toBe('result ECOW_LOCK_LOST');
        expect(await exited(child)).toEqual({ code: 0, signal: null });
        expect(await exists(lockDir)).toBe(true);
        lock.assertHeld(); // still ours
      },
      { ...SHORT, acquireTimeoutMs: 10_000, maxRetryDelayMs: 200 },
    );
    expect(await exists(lockDir)).toBe(false);
  });

  it.concurrent('a stalled holder that nobody contends keeps its lock', async ({ tmp, children }) => {
    const { child, lines } = startChild({ tmp, children }, { MODE: 'stall', CHILD_ID: 'staller', STALL_MS: '3000' });
    expect((await lines.next()).value).toBe(`locked ${child.pid}`);
    expect((await lines.next()).value).toBe('held');
    expect((await lines.next()).value).toBe('result ok');
    expect(await exited(child)).toEqual({ code: 0, signal: null });
    expect(await fs.readdir(tmp)).toEqual([]);
  });

  it.concurrent('takes over at once a lock whose holder on this host was SIGKILLed (its owner record proves it gone), saying so', async ({ tmp, children }) => {
    const lockDir = lockFilePath(tmp, VOL);
    const { child, lines } = startChild({ tmp, children }, { MODE: 'hold', CHILD_ID: 'holder' });
    expect((await lines.next()).value).toBe(`locked ${child.pid}`);
    // While the holder lives, the lock is not available, whatever its record says.
    const busy = await rejection(withVolumeLock(tmp, VOL, () => 'no', { ...SHORT, acquireTimeoutMs: 300 }));
    expect(busy.code).toBe('ECOW_LOCKED');

    child.kill('SIGKILL');
    expect(await exited(child)).toEqual({ code: null, signal: 'SIGKILL' });
    // A SIGKILLed process cleans nothing up: the lock directory is still there.
    expect(await exists(lockDir)).toBe(true);
    const notices: string[] = [];
    // A 60 s lease: only the owner record can explain a takeover within the acquire time-out.
    const got = await withVolumeLock(tmp, VOL, () => 'mine', { staleMs: 60_000, acquireTimeoutMs: 10_000, onNotice: (m) => notices.push(m) });
    expect(got).toBe('mine');
    expect(notices).toEqual([`volume ${VOL}: took over the lock left by process ${child.pid} of this host, which is gone (killed or crashed)`]);
    expect(await exists(lockDir)).toBe(false);
  });

  it.concurrent('recovers a lock whose holder was SIGKILLed without an owner record this host can judge, only once it is stale', async ({ tmp, children }) => {
    const lockDir = lockFilePath(tmp, VOL);
    const { child, lines } = startChild({ tmp, children }, { MODE: 'hold', CHILD_ID: 'holder' });
    expect((await lines.next()).value).toBe(`locked ${child.pid}`);
    child.kill('SIGKILL');
    expect(await exited(child)).toEqual({ code: null, signal: 'SIGKILL' });
    // As a holder on another host leaves it: its record names a host that is not this one.
    const ownerFile = path.join(lockDir, 'owner');
    const owner = JSON.parse(await fs.readFile(ownerFile, 'utf8')) as Record<string, unknown>;
    await fs.writeFile(ownerFile, JSON.stringify({ ...owner, host: `not-${owner.host as string}` }));
    const { mtimeMs } = await fs.stat(lockDir);
    const killedAt = Date.now();

    // A waiter that never judged it stale would end in ECOW_LOCKED.
    const acquiredAt = await withVolumeLock(tmp, VOL, () => Date.now(), { ...SHORT, acquireTimeoutMs: 30_000 });
    // Taken over only after its last refresh became older than the stale time.
    expect(acquiredAt).toBeGreaterThanOrEqual(mtimeMs + SHORT.staleMs);
    expect(await exists(lockDir)).toBe(false);
  });

  it.concurrent('a holder stopped with SIGSTOP past the stale time is taken over; resumed, it learns it at its next check', async ({ tmp, children }) => {
    const lockDir = lockFilePath(tmp, VOL);
    const { child, lines } = startChild({ tmp, children }, { MODE: 'stall', CHILD_ID: 'staller', STALL_MS: '1000' });
    expect((await lines.next()).value).toBe(`locked ${child.pid}`);
    child.kill('SIGSTOP');
    await withVolumeLock(
      tmp,
      VOL,
      async (lock) => {
        child.kill('SIGCONT');
        expect((await lines.next()).value).toBe('lost ECOW_LOCK_LOST');
        expect((await lines.next()).value).toBe('result ECOW_LOCK_LOST');
        expect(await exited(child)).toEqual({ code: 0, signal: null });
        expect(await exists(lockDir)).toBe(true);
        lock.assertHeld(); // still ours
      },
      { ...SHORT, acquireTimeoutMs: 20_000, maxRetryDelayMs: 200 },
    );
  });

  it.concurrent('fence: a writer SIGSTOPped past the stale time and resumed writes nothing over the next holder\'s work', async ({ tmp, children }) => {
    const image = path.join(tmp, 'fenced.raw');
    await fs.writeFile(image, Buffer.alloc(1 << 20));
    const { child, lines } = startChild({ tmp, children }, { MODE: 'write', CHILD_ID: 'writer', IMAGE: image });
    expect((await lines.next()).value).toBe(`locked ${child.pid}`);
    expect((await lines.next()).value).toBe('wrote 0');
    child.kill('SIGSTOP');
    await withVolumeLock(
      tmp,
      VOL,
      async () => {
        // The next holder's work: the whole image, 0xbb.
        await fs.writeFile(image, Buffer.alloc(1 << 20, 0xbb));
        child.kill('SIGCONT');
        let line: string | undefined;
        do line = (await lines.next()).value as string | undefined;
        while (line !== undefined && line.startsWith('wrote '));
        expect(line).toBe('result ECOW_LOCK_LOST');
        expect(await exited(child)).toEqual({ code: 0, signal: null });
        const after = await fs.readFile(image);
        expect(after.every((b) => b === 0xbb), 'a byte of the next holder\'s work was overwritten').toBe(true);
      },
      { ...SHORT, acquireTimeoutMs: 20_000, maxRetryDelayMs: 200 },
    );
  });

  it.concurrent('a waiter whose clock runs 40 s ahead does not take a live lease (staleness is its own monotonic observation)', async ({ tmp, children }) => {
    // A 10 s lease, renewed every 2.5 s: a loaded machine does not stall the holder that long,
    // and a waiter that judged by its wall clock would see the lock 40 s old, stale at once.
    const { child, lines } = startChild({ tmp, children }, { MODE: 'hold', CHILD_ID: 'holder', LOCK_STALE_MS: '10000' });
    expect((await lines.next()).value).toBe(`locked ${child.pid}`);
    // 3 s of trying: the holder is never stale.
    const waiter = startChild({ tmp, children }, { MODE: 'try', CHILD_ID: 'ahead', ACQUIRE_MS: '3000', LOCK_STALE_MS: '10000' }, [...CLOCK_AHEAD]);
    expect((await waiter.lines.next()).value).toBe('result ECOW_LOCKED');
    expect(await exited(waiter.child)).toEqual({ code: 0, signal: null });
    expect(child.exitCode).toBeNull();
  });
});
