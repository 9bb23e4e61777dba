// FileBackend's background write-backs: past 128 MiB written it opens a second descriptor of the
// same file and starts fdatasyncs there without waiting. Data, flush and close must be exactly as
// without them, no descriptor may outlive the backend once the event loop has run, and a job that
// never yields to the event loop still sees its write-backs end and starts the next ones (the CLI
// puts its first three on libuv's pool and starts the thread only after). A flush
// with nothing written or truncated since the last one that succeeded makes no fdatasync.
import * as fs from 'node:fs';
import nodeFs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FileBackend } from '../../src/engine/backend.js';
import { poolThenThreadSyncer, threadSyncer, writeBacks } from '../../src/engine/write-back.js';

const dir = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'cowchain-fb-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const MiB = 1 << 20;
/** The descriptor count comes from /proc/self/fd: these cases are Linux's. */
const LINUX = process.platform === 'linux';
/** This process's descriptors open on `file` (others in the process come and go: not counted). */
const descriptorsOf = (file: string) =>
  fs.readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`) === file;
    } catch {
      return false;
    }
  }).length;
/**
 * The descriptors of `file` once the event loop has let pending write-backs end: polled, so a
 * loaded machine only takes longer (a descriptor that stays open still fails, after a minute).
 */
async function descriptorsAfterClose(file: string): Promise<number> {
  const until = Date.now() + 60_000;
  for (;;) {
    await new Promise((r) => setTimeout(r, 50));
    const n = descriptorsOf(file);
    if (n === 0 || Date.now() > until) return n;
  }
}

describe('FileBackend write-backs', () => {
  if (LINUX) it('300 MiB written in 1 MiB pieces read back exactly; after close no descriptor of the file is left', async () => {
    const file = path.join(dir, 'big');
    const b = new FileBackend(file, true, true);
    const chunk = new Uint8Array(MiB);
    for (let i = 0; i < 300; i++) {
      chunk.fill(i & 0xff);
      b.write(chunk, i * MiB);
    }
    // A write-back holds a second descriptor of the file while it runs.
    expect(descriptorsOf(file)).toBe(2);
    b.flush();
    b.close();
    expect(await descriptorsAfterClose(file)).toBe(0);
    const got = fs.readFileSync(file);
    expect(got.length).toBe(300 * MiB);
    for (let i = 0; i < 300; i++) expect(got[i * MiB] === (i & 0xff) && got[i * MiB + MiB - 1] === (i & 0xff), `MiB ${i}`).toBe(true);
  });

  if (LINUX) it('a file renamed away before the first write-back gets none (only the final flush), and still reads back', async () => {
    const file = path.join(dir, 'moved');
    const b = new FileBackend(file, true, true);
    fs.renameSync(file, `${file}.2`);
    fs.writeFileSync(file, 'someone else'); // the path now names another file: never synced for us
    const chunk = new Uint8Array(MiB).fill(7);
    for (let i = 0; i < 200; i++) b.write(chunk, i * MiB);
    // Only the backend's own descriptor (now on the renamed file); no write-back opened one.
    expect(descriptorsOf(`${file}.2`)).toBe(1);
    expect(descriptorsOf(file)).toBe(0);
    b.flush();
    b.close();
    expect(await descriptorsAfterClose(`${file}.2`)).toBe(0);
    expect(fs.statSync(`${file}.2`).size).toBe(200 * MiB);
    expect(fs.readFileSync(file, 'utf8')).toBe('someone else');
  });

  if (LINUX) it('a synchronous job sees each write-back end without the event loop, and goes on starting them', () => {
    const file = path.join(dir, 'sync-job');
    const b = new FileBackend(file, true, true);
    const chunk = new Uint8Array(MiB).fill(3);
    const nap = new Int32Array(new SharedArrayBuffer(4));
    const ended: boolean[] = [];
    // Five rounds of 128 MiB (the same range: bytes written count, not new ones), each followed by
    // a wait that never lets the event loop run, as an engine job's copy does not. On libuv's pool a
    // completion would only be seen by the loop: the in-flight count would never fall.
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 128; i++) b.write(chunk, i * MiB);
      const until = Date.now() + 30_000;
      while (writeBacks().inFlight() > 0 && Date.now() < until) Atomics.wait(nap, 0, 0, 5);
      ended.push(writeBacks().inFlight() === 0);
      if (!ended.at(-1)) break;
    }
    expect(ended).toEqual([true, true, true, true, true]);
    b.flush();
    b.close();
    expect(fs.statSync(file).size).toBe(128 * MiB);
  });
});

describe('write-backs on the pool first (the CLI: preferPoolWriteBacks)', () => {
  if (LINUX) it("three go to libuv's pool before a thread starts; the thread's are seen ending without the event loop; the descriptor is closed after all", async () => {
    let started = 0;
    const s = poolThenThreadSyncer(() => (started++, threadSyncer()));
    const file = path.join(dir, 'pool-first');
    fs.writeFileSync(file, new Uint8Array(4 * MiB).fill(9));
    const fd = fs.openSync(file, 'r');
    for (let i = 0; i < 3; i++) expect(s.sync(fd)).toBe(true);
    expect(started).toBe(0);
    // the pool's: their ends are seen by the event loop only, which this synchronous stretch never runs
    expect(s.inFlight()).toBe(3);
    expect(s.sync(fd)).toBe(true);
    expect(started).toBe(1);
    const nap = new Int32Array(new SharedArrayBuffer(4));
    const until = Date.now() + 30_000;
    while (s.inFlight() > 3 && Date.now() < until) Atomics.wait(nap, 0, 0, 5);
    expect(s.inFlight()).toBe(3);
    s.close(fd);
    expect(await descriptorsAfterClose(file)).toBe(0);
    expect(s.inFlight()).toBe(0);
  });
});

describe('FileBackend flush', () => {
  /** The fdatasyncs `fn` makes (node:fs patched and re-exported to the ESM bindings, as test/support/fs-faults.ts does). */
  function fdatasyncs(fn: () => void): number {
    const real = nodeFs.fdatasyncSync;
    let n = 0;
    nodeFs.fdatasyncSync = (fd: number) => {
      n++;
      real(fd);
    };
    syncBuiltinESMExports();
    try {
      fn();
    } finally {
      nodeFs.fdatasyncSync = real;
      syncBuiltinESMExports();
    }
    return n;
  }

  it('syncs what was written or truncated since the last flush, and nothing when nothing was', () => {
    const file = path.join(dir, 'flushes');
    const b = new FileBackend(file, true, true);
    try {
      // a new file's first flush syncs (its truncation), a second one with nothing between does not
      expect(fdatasyncs(() => (b.flush(), b.flush()))).toBe(1);
      expect(fdatasyncs(() => (b.write(new Uint8Array(512).fill(1), 0), b.flush(), b.flush()))).toBe(1);
      expect(fdatasyncs(() => (b.truncate(4096), b.flush(), b.flush()))).toBe(1);
    } finally {
      b.close();
    }
    // a file opened again: its first flush syncs
    const again = new FileBackend(file, true);
    try {
      expect(fdatasyncs(() => (again.flush(), again.flush()))).toBe(1);
    } finally {
      again.close();
    }
  });

  it('a flush that failed is made again by the next one', () => {
    const file = path.join(dir, 'flush-fails');
    const b = new FileBackend(file, true, true);
    const real = nodeFs.fdatasyncSync;
    try {
      b.write(new Uint8Array(512).fill(2), 0);
      nodeFs.fdatasyncSync = () => {
        throw Object.assign(new Error('injected'), { code: 'EIO' });
      };
      syncBuiltinESMExports();
      expect(() => b.flush()).toThrow('injected');
      nodeFs.fdatasyncSync = real;
      syncBuiltinESMExports();
      expect(fdatasyncs(() => b.flush())).toBe(1);
    } finally {
      nodeFs.fdatasyncSync = real;
      syncBuiltinESMExports();
      b.close();
    }
  });
});
