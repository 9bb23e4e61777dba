// Modules that only some operations need, loaded by the first one that does: node:crypto (LUKS,
// clone and revert names), node:os (the lock owner's host name where /proc has none), node:zlib
// and pako (compressed clusters), node:worker_threads (the write-back thread of a job past
// 128 MiB). Loading them at start-up
// costs a short CLI command (`img info`, `volume info`) more than its own work. Also what a
// short command needs without loading a module for it: random bytes and a monotonic clock.
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import { lazy } from './lazy.js';

const requireOnUse = createRequire(import.meta.url);

export const nodeCrypto = lazy(() => requireOnUse('node:crypto') as typeof import('node:crypto'));
export const nodeZlib = lazy(() => requireOnUse('node:zlib') as typeof import('node:zlib'));
export const pako = lazy(() => requireOnUse('pako') as typeof import('pako'));
export const nodeOs = lazy(() => requireOnUse('node:os') as typeof import('node:os'));
export const nodeWorkerThreads = lazy(() => requireOnUse('node:worker_threads') as typeof import('node:worker_threads'));

/**
 * `n` random bytes as hex, from the kernel's generator (/dev/urandom, as node:crypto's
 * randomBytes reads it through OpenSSL): loading node:crypto (with the stream modules it pulls in)
 * costs a snapshot create some 2 ms, for the 8 bytes of a temporary file's name. Where
 * /dev/urandom cannot be read, node:crypto gives them.
 */
export function randomHex(n: number): string {
  const bytes = Buffer.alloc(n);
  let fd: number | undefined;
  try {
    fd = fs.openSync('/dev/urandom', 'r');
    if (fs.readSync(fd, bytes, 0, n, null) === n) return bytes.toString('hex');
  } catch {
    // not Linux, or no /dev in a sandbox
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
  return nodeCrypto().randomBytes(n).toString('hex');
}

/**
 * Milliseconds on a monotonic clock (a time stop or step does not move it), as
 * `performance.now()` is, without the global `performance`, which loads node:perf_hooks (some
 * ten modules) on first use.
 */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}
