/**
 * Per-volume lock that serialises every operation on one volume across threads, processes and
 * hosts sharing the volume directory over NFS/GlusterFS.
 *
 * Built on proper-lockfile: the lock is the directory `<dir>/volume-<vol>.lock`, taken with
 * mkdir (atomic on local file systems and on NFS, unlike O_EXCL on old NFS clients). The holder
 * refreshes the directory's mtime every `updateMs`; a lock whose mtime is older than `staleMs`
 * belongs to a dead holder (crash, SIGKILL, lost host) and is taken over. Across hosts this
 * relies on clocks agreeing to well within `staleMs`.
 *
 * Known limit (proper-lockfile's stale takeover): two waiters that find the same stale lock at
 * the same instant can both take it over. The loser's refresh then finds an mtime that is not
 * its own and reports the lock compromised; we turn that into ECOW_LOCK_LOST for its operation
 * (and abort its signal) instead of letting it commit results.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import lockfile from 'proper-lockfile';
import { baseName } from '../chain/names.js';
import { CowError } from '../errors.js';

export interface VolumeLockOptions {
  /** A lock not refreshed for this long is stale and may be taken over. Default 30 s (min 2 s). */
  staleMs?: number;
  /** Refresh interval of a held lock. Default staleMs / 2 (proper-lockfile clamps to 1 s..stale/2). */
  updateMs?: number;
  /** Give up waiting with ECOW_LOCKED after this long. Default 60 s. */
  acquireTimeoutMs?: number;
  /** First retry delay; grows ×2 up to maxRetryDelayMs, with jitter. Defaults 25 ms / 1 s. */
  minRetryDelayMs?: number;
  maxRetryDelayMs?: number;
  /** Abort waiting for the lock (ECOW_CANCELLED). Does not interrupt a running `fn`. */
  signal?: AbortSignal;
}

export const DEFAULT_VOLUME_LOCK_OPTIONS = {
  staleMs: 30_000,
  acquireTimeoutMs: 60_000,
  minRetryDelayMs: 25,
  maxRetryDelayMs: 1_000,
} as const;

export interface VolumeLockHandle {
  /** Aborted (reason: the ECOW_LOCK_LOST error) if the lock is lost while `fn` runs. */
  readonly signal: AbortSignal;
  /** Throw ECOW_LOCK_LOST if the lock was lost. Call before making results visible. */
  assertHeld(): void;
}

/** `<dir>/volume-<vol>.lock` (a directory while held). */
export function lockFilePath(dir: string, volumeId: string): string {
  return path.join(dir, `${baseName(volumeId)}.lock`);
}

const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });

/**
 * Run `fn` while holding volume `volumeId`'s lock in `dir`; release it afterwards whatever
 * happens. Different volumes never block each other. Throws ECOW_LOCKED when the lock cannot be
 * acquired within `acquireTimeoutMs`, ECOW_LOCK_LOST when it was lost while `fn` ran (even if
 * `fn` succeeded: its work may have overlapped another holder's).
 */
export async function withVolumeLock<T>(
  dir: string,
  volumeId: string,
  fn: (lock: VolumeLockHandle) => Promise<T> | T,
  options: VolumeLockOptions = {},
): Promise<T> {
  const base = baseName(volumeId); // validates the id (ECOW_BAD_ARGUMENT)
  const staleMs = options.staleMs ?? DEFAULT_VOLUME_LOCK_OPTIONS.staleMs;
  const acquireTimeoutMs = options.acquireTimeoutMs ?? DEFAULT_VOLUME_LOCK_OPTIONS.acquireTimeoutMs;
  const minDelay = options.minRetryDelayMs ?? DEFAULT_VOLUME_LOCK_OPTIONS.minRetryDelayMs;
  const maxDelay = options.maxRetryDelayMs ?? DEFAULT_VOLUME_LOCK_OPTIONS.maxRetryDelayMs;

  let realDir: string;
  try {
    // Canonical path: proper-lockfile keys its in-process lock table by path.
    realDir = await fs.realpath(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CowError(
      code === 'ENOENT' ? 'ECOW_NOT_FOUND' : 'ECOW_IO',
      `volume directory ${dir} for the lock of volume ${volumeId}: ${code ?? String(e)}`,
      { cause: e },
    );
  }
  // The "locked file" is the base image path, one per volume: proper-lockfile's in-process
  // table is keyed by it, so using the shared directory would make two volumes clobber each
  // other's entry. realpath:false because the base image need not exist (yet).
  const lockedPath = path.join(realDir, base);
  const lockPath = path.join(realDir, `${base}.lock`);

  const controller = new AbortController();
  let lost: CowError | undefined;
  const lockOptions: lockfile.LockOptions = {
    stale: staleMs,
    update: options.updateMs ?? staleMs / 2,
    realpath: false,
    lockfilePath: lockPath,
    retries: 0, // we retry ourselves: bounded by a deadline and cancellable
    // proper-lockfile's default throws from a timer, which would crash the process; instead fail
    // the operation that held the lock.
    onCompromised: (err) => {
      lost = new CowError(
        'ECOW_LOCK_LOST',
        `lock ${lockPath} of volume ${volumeId} was lost while held: ${err.message}`,
        { cause: err },
      );
      controller.abort(lost);
    },
  };

  const deadline = Date.now() + acquireTimeoutMs;
  let delay = minDelay;
  let release: () => Promise<void>;
  for (;;) {
    if (options.signal?.aborted) {
      throw new CowError('ECOW_CANCELLED', `waiting for the lock of volume ${volumeId} was cancelled`, {
        cause: options.signal.reason,
      });
    }
    try {
      release = await lockfile.lock(lockedPath, lockOptions);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ELOCKED') {
        throw new CowError('ECOW_IO', `cannot take lock ${lockPath} of volume ${volumeId}: ${(e as Error).message}`, {
          cause: e,
        });
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new CowError(
          'ECOW_LOCKED',
          `volume ${volumeId} is locked by another operation (${lockPath}); gave up after ${acquireTimeoutMs} ms`,
          { cause: e },
        );
      }
      // Jitter so that waiters on several hosts do not retry in lock-step.
      await sleep(Math.min(remaining, delay * (0.5 + Math.random() / 2)), options.signal);
      delay = Math.min(delay * 2, maxDelay);
    }
  }

  const handle: VolumeLockHandle = {
    signal: controller.signal,
    assertHeld() {
      if (lost) throw lost;
    },
  };
  let outcome: { ok: true; value: T } | { ok: false; error: unknown };
  try {
    outcome = { ok: true, value: await fn(handle) };
  } catch (error) {
    outcome = { ok: false, error };
  }
  // After a compromise the lock directory may be someone else's now: never remove it
  // (proper-lockfile's release refuses too, with ERELEASED).
  if (!lost) {
    try {
      await release();
    } catch (e) {
      // A lock left behind only delays the next operation until it is stale, but say so rather
      // than pretend; if fn failed, its error matters more.
      if (outcome.ok && !lost) {
        throw new CowError('ECOW_IO', `volume ${volumeId}: operation done but lock ${lockPath} not removed`, {
          cause: e,
        });
      }
    }
  }
  if (!outcome.ok) throw outcome.error;
  if (lost) throw lost;
  return outcome.value;
}
