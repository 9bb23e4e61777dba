// The etcd coordinator (src/volume/etcd-lock.ts) on the live 3-member cluster (setup.sh):
// mutual exclusion and a fence that grows with every holder; a holder SIGKILLed is followed by
// the next one once etcd expires its lease; a holder SIGSTOPped past the TTL and resumed writes
// nothing over the next holder's work; a waiter whose clock runs 40 s ahead cannot take a live
// lock; an address where nothing listens fails fast with ECOW_COORDINATION_UNAVAILABLE; a wait is
// announced (onNotice), as the share lease announces its waits.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { etcdCoordinator } from '../../src/volume/etcd-lock.js';
import { parseEtcdUrl } from '../../src/volume/etcd-target.js';
import { bundleForNode } from '../support/bundle.js';
import { rejection } from '../support/errors.js';
import { VOL } from '../support/volume.js';
import { etcdUrl, testCoordinator } from './support.js';

const TTL_S = 2;
const SCRATCH = fs.mkdtempSync(path.join(os.tmpdir(), 'cowchain-etcd-lock-'));
let fixture = '';
const children: ChildProcess[] = [];
beforeAll(async () => {
  fixture = await bundleForNode('test/etcd/fixtures/lock-child.ts', SCRATCH, 'etcd-lock-child');
});
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});
afterAll(() => fs.rmSync(SCRATCH, { recursive: true, force: true }));

/** A lock child (fixtures/lock-child.ts) and its stdout, line by line (2 min per line at most). */
function startChild(env: Record<string, string>): { child: ChildProcess; next: () => Promise<string | undefined> } {
  const child = spawn(process.execPath, [fixture], { env: { ...process.env, TTL_S: String(TTL_S), LOCK_VOL: VOL, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  const lines = readline.createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const next = async () => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('no line from the lock child in 120 s')), 120_000);
    });
    try {
      return (await Promise.race([lines.next(), timeout])).value as string | undefined;
    } finally {
      clearTimeout(timer);
    }
  };
  return { child, next };
}

const exited = (child: ChildProcess) =>
  new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve({ code: child.exitCode, signal: child.signalCode });
    else child.once('exit', (code, signal) => resolve({ code, signal }));
  });

describe('etcd volume lock', () => {
  it('excludes a second holder (ECOW_LOCKED naming the holder); every new holder gets a larger fence', async () => {
    const url = etcdUrl();
    const a = testCoordinator(url);
    const b = testCoordinator(url, { acquireTimeoutMs: 1_000 });
    try {
      const first = await a.withLock('/', VOL, async (lock) => {
        const busy = await rejection(b.withLock('/', VOL, () => 'taken'));
        expect(busy.code).toBe('ECOW_LOCKED');
        expect(busy.message).toContain(`"pid":${process.pid}`);
        return BigInt(lock.fence!);
      });
      const second = await b.withLock('/', VOL, (lock) => BigInt(lock.fence!));
      expect(second).toBeGreaterThan(first);
      // Other volumes never wait for each other.
      await a.withLock('/', VOL, () => b.withLock('/', '99999999-9999-4999-8999-999999999999', () => 'both'));
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('the next holder continues once etcd expires the lease of a SIGKILLed holder', async () => {
    const url = etcdUrl();
    const { child, next } = startChild({ MODE: 'hold', ETCD_URL: url });
    const held = await next();
    expect(held).toMatch(/^locked \d+$/);
    const c = testCoordinator(url);
    try {
      // Alive: not taken in 2 TTLs.
      expect((await rejection(testCoordinator(url, { acquireTimeoutMs: 2 * TTL_S * 1000 }).withLock('/', VOL, () => 'taken'))).code).toBe('ECOW_LOCKED');
      child.kill('SIGKILL');
      await exited(child);
      const fence = await c.withLock('/', VOL, (lock) => BigInt(lock.fence!));
      expect(fence).toBeGreaterThan(BigInt(held!.split(' ')[1]));
    } finally {
      await c.close();
    }
  });

  it("a holder SIGSTOPped past the TTL and resumed writes nothing over the next holder's work", async () => {
    const url = etcdUrl();
    const image = path.join(SCRATCH, 'fenced.raw');
    fs.writeFileSync(image, Buffer.alloc(1 << 20));
    const { child, next } = startChild({ MODE: 'write', ETCD_URL: url, IMAGE: image });
    expect(await next()).toMatch(/^locked \d+$/);
    expect(await next()).toBe('wrote 0');
    child.kill('SIGSTOP');
    const c = testCoordinator(url);
    try {
      await c.withLock('/', VOL, async () => {
        fs.writeFileSync(image, Buffer.alloc(1 << 20, 0xbb));
        child.kill('SIGCONT');
        let line: string | undefined;
        do line = await next();
        while (line !== undefined && line.startsWith('wrote '));
        expect(line).toBe('result ECOW_LOCK_LOST');
        expect(await exited(child)).toEqual({ code: 0, signal: null });
        expect(fs.readFileSync(image).every((b) => b === 0xbb), "a byte of the next holder's work was overwritten").toBe(true);
      });
    } finally {
      await c.close();
    }
  });

  it('a waiter whose clock runs 40 s ahead cannot take a live lock (etcd decides expiry, not the clock)', async () => {
    const url = etcdUrl();
    const { child, next } = startChild({ MODE: 'hold', ETCD_URL: url });
    expect(await next()).toMatch(/^locked \d+$/);
    const realNow = Date.now.bind(Date);
    const skew = vi.spyOn(Date, 'now').mockImplementation(() => realNow() + 40_000);
    const c = testCoordinator(url, { acquireTimeoutMs: 3 * TTL_S * 1000 });
    try {
      expect((await rejection(c.withLock('/', VOL, () => 'taken'))).code).toBe('ECOW_LOCKED');
    } finally {
      skew.mockRestore();
      await c.close();
    }
    expect(child.exitCode).toBeNull();
  });

  it('nothing listening: ECOW_COORDINATION_UNAVAILABLE within the connect bound, fn never runs', async () => {
    const c = etcdCoordinator(parseEtcdUrl('etcd://127.0.0.1:9', 'test'), { connectTimeoutMs: 2_000 });
    let ran = false;
    try {
      const t0 = performance.now();
      const err = await rejection(c.withLock('/', VOL, () => (ran = true)));
      expect(err.code).toBe('ECOW_COORDINATION_UNAVAILABLE');
      expect(err.message).toContain('127.0.0.1:9');
      expect(performance.now() - t0).toBeLessThan(10_000); // the acceptance bound, far above 2 s
    } finally {
      await c.close();
    }
    expect(ran).toBe(false);
  });
});

describe('etcd volume lock notices', () => {
  it('a wait is never silent: a notice after 1 s naming the holder', async () => {
    const url = etcdUrl();
    const a = testCoordinator(url);
    const b = testCoordinator(url, { acquireTimeoutMs: 1_800 });
    const notices: string[] = [];
    try {
      await a.withLock('/', VOL, async () => {
        expect((await rejection(b.withLock('/', VOL, () => 'taken', { onNotice: (m) => notices.push(m) }))).code).toBe('ECOW_LOCKED');
      });
    } finally {
      await a.close();
      await b.close();
    }
    expect(notices).toHaveLength(1);
    expect(notices[0]).toMatch(new RegExp(`^volume ${VOL}: waiting for the etcd lock .*, held by .*"pid":${process.pid}.* \\(1 s\\)$`));
  });
});
