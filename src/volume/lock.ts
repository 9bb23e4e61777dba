/**
 * Per-volume lock that serialises every operation on one volume across threads, processes and
 * hosts sharing the volume directory over NFS/GlusterFS: the share lease, the driver's default
 * coordinator (`shareLease()`, coordination.ts).
 *
 * The lock is the directory `<dir>/volume-<vol>.lock`, taken with mkdir (atomic on local file
 * systems and on NFS, unlike O_EXCL on old NFS clients). It is a lease: the holder moves the
 * directory's mtime forward at least every `updateMs`, and a lock whose mtime a waiter has seen
 * standing still for `staleMs` (by the waiter's own monotonic clock) belongs to a dead or frozen
 * holder (crash, SIGKILL, lost host, SIGSTOP) and may be taken over. No two clocks are ever
 * compared, so a host whose clock runs ahead cannot take a live lease; the price is that a lock
 * left by a crash is taken over `staleMs` after a waiter first sees it, however old it is.
 *
 * Two races a plain "stale → rmdir → mkdir" takeover loses, and how this one avoids them:
 *  - Two waiters find the same stale lock. The second one's rmdir would remove the first one's
 *    fresh lock, and both would hold it. Here removing a stale lock takes a second, short-lived
 *    mkdir lock (`volume-<vol>.lock.takeover`), under which staleness is checked again: one
 *    waiter at a time, and never a fresh lock.
 *  - A holder stalls (a long synchronous step, a paused VM) past `staleMs` and is taken over,
 *    then wakes and carries on. Here the holder knows its lock by inode and by the exact mtime it
 *    last set. `assertHeld()` — called before every change an operation makes, and between the
 *    steps of a long engine job — checks both synchronously and renews the lease; anything else
 *    means the lock was taken over, and the operation stops with ECOW_LOCK_LOST before it
 *    changes anything more.
 * A waiter that dies inside the takeover (microseconds) leaves `.takeover` behind; it is
 * removed once stale, like the lock itself.
 * The holder records itself in the lock directory (lock-owner.ts): a lock whose holder on this
 * host is certainly gone (killed, crashed, interrupted mid-job) is taken over at once, not after
 * `staleMs`. Waiting is never silent: `onNotice` hears about it.
 * The lease is renewed by a timer on the holder's thread. A volume driver given an engine pool
 * (`jobs`) runs its engine jobs in worker threads, so that thread stays free and the lease stays
 * fresh however long one engine step takes; the worker asks this thread (assertHeld) before every
 * write (at most once per 10 ms) and every
 * step. What no lease can prevent: a holder whose own thread is stalled longer than `staleMs` — a
 * synchronous step on this thread (a driver without `jobs`, one fsync, a host's own blocking
 * work) or a frozen process or VM — can be taken over, and then overlap the next holder until
 * its next `assertHeld()`, which runs before every write: by at most the writes in flight and
 * 10 ms of writes after the last check. Keep `staleMs` (default 30 s) well above such stalls.
 */
import fs from 'node:fs';
import path from 'node:path';
import { baseName } from './names.js';
import { CowError } from '../errors.js';
import type { VolumeCoordinator, VolumeLockHandle } from './coordination.js';

export type { VolumeLockHandle } from './coordination.js';
import { currentOwner, goneOwner, removeOwner, writeOwner, type LockOwner } from './lock-owner.js';
import { sleep } from './sleep.js';
import { monotonicMs } from '../load-on-use.js';

export interface VolumeLockOptions {
  /** A lock not renewed for this long is stale and may be taken over. Default 30 s (min 1 s). */
  staleMs?: number;
  /** Renewal interval of a held lock. Default staleMs / 4 (at most staleMs / 2). */
  updateMs?: number;
  /** Give up waiting with ECOW_LOCKED after this long. Default 60 s. */
  acquireTimeoutMs?: number;
  /** First retry delay; grows ×2 up to maxRetryDelayMs, with jitter. Defaults 25 ms / 1 s. */
  minRetryDelayMs?: number;
  maxRetryDelayMs?: number;
  /** Abort waiting for the lock (ECOW_CANCELLED). Does not interrupt a running `fn`. */
  signal?: AbortSignal;
  /**
   * Told what a wait is about, so that nobody waits in silence: every NOTICE_INTERVAL_MS while
   * the lock is held by someone else ("waiting for a stale lock (N s)" once it has not been
   * renewed for half of `staleMs`), and when a lock left by a process that is gone is taken over.
   */
  onNotice?: (message: string) => void;
}

export const DEFAULT_VOLUME_LOCK_OPTIONS = {
  staleMs: 30_000,
  acquireTimeoutMs: 60_000,
  minRetryDelayMs: 25,
  maxRetryDelayMs: 1_000,
} as const;

const MIN_STALE_MS = 1_000;

/** First notice after this long waiting, then one per interval (the etcd lock's waits too). */
export const NOTICE_AFTER_MS = 1_000;
export const NOTICE_INTERVAL_MS = 5_000;

/** Why a lock could not be made: the directory is not writable for us (see isLockAccess). */
class LockAccessError extends Error {}

/** Whether `e` is the share lease's ECOW_ACCESS: its directory is not writable (read-only inspection may go on without it). */
export function isLockAccess(e: CowError): boolean {
  return e.cause instanceof LockAccessError;
}

/** `<dir>/volume-<vol>.lock` (a directory while held). */
export function lockFilePath(dir: string, volumeId: string): string {
  return path.join(dir, `${baseName(volumeId)}.lock`);
}

const errno = (e: unknown): string | undefined => (e as NodeJS.ErrnoException).code;

/** A lock directory as its holder knows it: which directory, and the mtime it last set. */
interface Identity {
  ino: number;
  dev: number;
  mtimeMs: number;
}

function statOrNull(p: string): fs.Stats | null {
  try {
    return fs.statSync(p);
  } catch (e) {
    if (errno(e) === 'ENOENT') return null;
    throw e;
  }
}

/**
 * Staleness as this waiter itself saw it: a directory is stale once its identity and mtime have
 * not changed for `staleMs` of this process's monotonic clock. The mtime is compared only with
 * itself, never with our wall clock, so a host whose clock runs ahead (or behind) neither takes a
 * live lease early nor waits forever; a lock left by a crash is taken over `staleMs` after the
 * waiter first saw it.
 */
class StalenessObserver {
  private readonly seen = new Map<string, { ino: number; dev: number; mtimeMs: number; since: number }>();
  /** This process as a lock owner (lock-owner.ts); null: cannot be identified. */
  readonly me: LockOwner | null = currentOwner();
  /** The owner of the last lock taken over because it was gone (for the notice). */
  tookOverFrom: LockOwner | null = null;
  constructor(readonly staleMs: number) {}

  isStale(p: string, st: fs.Stats): boolean {
    const now = monotonicMs();
    const s = this.seen.get(p);
    if (!s || s.ino !== st.ino || s.dev !== st.dev || s.mtimeMs !== st.mtimeMs) {
      this.seen.set(p, { ino: st.ino, dev: st.dev, mtimeMs: st.mtimeMs, since: now });
      return false;
    }
    return now - s.since > this.staleMs;
  }

  /** Stale by the lease, or left by a process of this host that is certainly gone. */
  isFree(p: string, st: fs.Stats): boolean {
    if (this.isStale(p, st)) return true;
    const gone = goneOwner(p, this.me);
    if (gone) this.tookOverFrom = gone;
    return gone !== null;
  }

  /** Milliseconds `p` has looked unchanged (0 when not seen yet). */
  unchangedFor(p: string): number {
    const s = this.seen.get(p);
    return s ? monotonicMs() - s.since : 0;
  }
}

/** One attempt: the lock, or null when someone else holds it. Takes a stale lock over safely. */
function tryAcquire(lockPath: string, observer: StalenessObserver): Identity | null {
  observer.tookOverFrom = null;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      fs.mkdirSync(lockPath);
    } catch (e) {
      if (errno(e) !== 'EEXIST') throw e;
      if (!removeIfStale(lockPath, observer)) return null;
      continue; // gone: compete for it
    }
    // Before the first stat: the identity this holder renews includes the directory's mtime.
    writeOwner(lockPath, observer.me);
    const st = statOrNull(lockPath);
    if (st) return { ino: st.ino, dev: st.dev, mtimeMs: st.mtimeMs };
  }
  return null;
}

/**
 * Remove the lock at `lockPath` if it is stale. Only one waiter at a time may do so: it holds
 * `<lock>.takeover` (itself a mkdir lock, held for microseconds) and checks staleness again
 * under it, so it never removes the fresh lock that the waiter before it has just made.
 * Returns whether the lock is gone (the caller then competes for it with mkdir).
 */
function removeIfStale(lockPath: string, observer: StalenessObserver): boolean {
  const seen = statOrNull(lockPath);
  if (seen === null) return true;
  if (!observer.isFree(lockPath, seen)) return false;
  const takeover = `${lockPath}.takeover`;
  try {
    fs.mkdirSync(takeover);
  } catch (e) {
    if (errno(e) !== 'EEXIST') throw e;
    // Another waiter is taking it over right now, or died doing so long ago.
    const t = statOrNull(takeover);
    if (t && observer.isStale(takeover, t)) fs.rmSync(takeover, { recursive: true, force: true });
    return false;
  }
  try {
    const now = statOrNull(lockPath);
    if (now === null) return true;
    if (now.ino !== seen.ino || now.dev !== seen.dev || now.mtimeMs !== seen.mtimeMs) return false;
    fs.rmSync(lockPath, { recursive: true, force: true });
    return true;
  } finally {
    fs.rmSync(takeover, { recursive: true, force: true });
  }
}

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
  if (!Number.isFinite(staleMs) || staleMs < MIN_STALE_MS) {
    throw new CowError('ECOW_BAD_ARGUMENT', `lock staleMs ${staleMs} is below the minimum of ${MIN_STALE_MS} ms`);
  }
  const updateMs = Math.min(options.updateMs ?? staleMs / 4, staleMs / 2);
  const acquireTimeoutMs = options.acquireTimeoutMs ?? DEFAULT_VOLUME_LOCK_OPTIONS.acquireTimeoutMs;
  const minDelay = options.minRetryDelayMs ?? DEFAULT_VOLUME_LOCK_OPTIONS.minRetryDelayMs;
  const maxDelay = options.maxRetryDelayMs ?? DEFAULT_VOLUME_LOCK_OPTIONS.maxRetryDelayMs;

  let realDir: string;
  try {
    realDir = fs.realpathSync.native(dir); // realpath(3), as fs/promises' realpath, without a thread-pool round trip
  } catch (e) {
    const code = errno(e);
    throw new CowError(
      code === 'ENOENT' ? 'ECOW_NOT_FOUND' : 'ECOW_IO',
      `volume directory ${dir} for the lock of volume ${volumeId}: ${code ?? String(e)}`,
      { cause: e },
    );
  }
  const lockPath = path.join(realDir, `${base}.lock`);
  // A lock is never made in a directory this process may not write (a read-only mount, or
  // permissions): say so now rather than after waiting out someone's leftover lock.
  try {
    fs.accessSync(realDir, fs.constants.W_OK);
  } catch (e) {
    const code = errno(e);
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
      throw new CowError('ECOW_ACCESS', `cannot take lock ${lockPath} of volume ${volumeId}: ${code} (the volume directory is not writable for this user)`, { cause: new LockAccessError(code) });
    }
  }

  const observer = new StalenessObserver(staleMs);
  const deadline = Date.now() + acquireTimeoutMs;
  const waitStart = monotonicMs();
  let nextNotice = waitStart + NOTICE_AFTER_MS;
  let delay = minDelay;
  let mine: Identity;
  for (;;) {
    if (options.signal?.aborted) {
      throw new CowError('ECOW_CANCELLED', `waiting for the lock of volume ${volumeId} was cancelled`, {
        cause: options.signal.reason,
      });
    }
    let got: Identity | null;
    try {
      got = tryAcquire(lockPath, observer);
    } catch (e) {
      const code = errno(e);
      if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
        throw new CowError('ECOW_ACCESS', `cannot take lock ${lockPath} of volume ${volumeId}: ${code} (the volume directory is not writable for this user)`, { cause: new LockAccessError(code) });
      }
      throw new CowError('ECOW_IO', `cannot take lock ${lockPath} of volume ${volumeId}: ${code ?? String(e)}`, { cause: e });
    }
    if (got) {
      mine = got;
      const gone = observer.tookOverFrom;
      if (gone) options.onNotice?.(`volume ${volumeId}: took over the lock left by process ${gone.pid} of this host, which is gone (killed or crashed)`);
      break;
    }
    const now = monotonicMs();
    if (options.onNotice && now >= nextNotice) {
      nextNotice = now + NOTICE_INTERVAL_MS;
      const waited = Math.round((now - waitStart) / 1000);
      const unchanged = observer.unchangedFor(lockPath);
      options.onNotice(
        unchanged >= staleMs / 2
          ? `volume ${volumeId}: waiting for a stale lock (${waited} s): ${lockPath} has not been renewed for ${Math.round(unchanged / 1000)} s; it is taken over once unchanged for ${Math.round(staleMs / 1000)} s`
          : `volume ${volumeId}: waiting for the lock, held by another operation (${waited} s)`,
      );
    }
    const remaining = deadline - Date.now();
    if (remaining <= 0) {
      throw new CowError(
        'ECOW_LOCKED',
        `volume ${volumeId} is locked by another operation (${lockPath}); gave up after ${acquireTimeoutMs} ms`,
      );
    }
    // Jitter so that waiters on several hosts do not retry in lock-step.
    await sleep(Math.min(remaining, delay * (0.5 + Math.random() / 2)), options.signal);
    delay = Math.min(delay * 2, maxDelay);
  }

  const controller = new AbortController();
  let lost: CowError | undefined;
  let renewedAt = monotonicMs();
  const loseLock = (why: string, cause?: unknown): CowError => {
    if (!lost) {
      lost = new CowError('ECOW_LOCK_LOST', `lock ${lockPath} of volume ${volumeId} was lost while held: ${why}`, { cause });
      controller.abort(lost);
    }
    return lost;
  };
  /** Verify the lock is ours and renew it; throws (and records) the loss otherwise. */
  const renew = (): void => {
    if (lost) throw lost;
    let st: fs.Stats | null;
    try {
      st = statOrNull(lockPath);
      if (st && st.ino === mine.ino && st.dev === mine.dev && st.mtimeMs === mine.mtimeMs) {
        // Always forward, even when our clock stepped back: a waiter judges the lease by whether
        // the mtime moves at all.
        const now = new Date(Math.max(Date.now(), mine.mtimeMs + 1));
        fs.utimesSync(lockPath, now, now);
        st = fs.statSync(lockPath); // what the file system kept (its mtime precision)
        mine = { ino: st.ino, dev: st.dev, mtimeMs: st.mtimeMs };
        renewedAt = monotonicMs();
        return;
      }
    } catch (e) {
      // A transient error (ESTALE, EIO on a network mount): the lease holds until it is stale.
      if (monotonicMs() - renewedAt <= staleMs) return;
      throw loseLock(`not renewed for ${Math.round(monotonicMs() - renewedAt)} ms (${errno(e) ?? String(e)})`, e);
    }
    throw loseLock(st === null ? 'the lock directory was removed' : 'another holder took it over (the lock directory is not the one this holder renewed)');
  };
  const timer = setInterval(() => {
    try {
      renew();
    } catch {
      // recorded in `lost`; the operation sees it at its next assertHeld()
    }
  }, updateMs);
  timer.unref?.(); // the lock never keeps a process alive on its own

  const handle: VolumeLockHandle = { signal: controller.signal, assertHeld: renew };
  let outcome: { ok: true; value: T } | { ok: false; error: unknown };
  try {
    outcome = { ok: true, value: await fn(handle) };
  } catch (error) {
    outcome = { ok: false, error };
  }
  clearInterval(timer);
  if (!lost) {
    // Remove the lock only if it is still ours: after a takeover it belongs to someone else.
    try {
      const st = statOrNull(lockPath);
      if (st && st.ino === mine.ino && st.dev === mine.dev && st.mtimeMs === mine.mtimeMs) {
        removeOwner(lockPath);
        fs.rmdirSync(lockPath);
      }
      else loseLock(st === null ? 'the lock directory was removed' : 'another holder took it over');
    } catch (e) {
      // A lock left behind only delays the next operation until it is stale, but say so rather
      // than pretend; if fn failed, its error matters more.
      if (outcome.ok) {
        throw new CowError('ECOW_IO', `volume ${volumeId}: operation done but lock ${lockPath} not removed: ${errno(e) ?? String(e)}`, {
          cause: e,
        });
      }
    }
  }
  if (!outcome.ok) throw outcome.error;
  if (lost) throw lost;
  return outcome.value;
}

/** The share lease as a coordinator: `withVolumeLock` with these options (the driver's default). */
export function shareLease(options: Omit<VolumeLockOptions, 'signal'> = {}): VolumeCoordinator {
  return {
    description: 'share lease',
    withLock: (dir, volumeId, fn, acquire = {}) => withVolumeLock(dir, volumeId, fn, { ...options, signal: acquire.signal, onNotice: acquire.onNotice ?? options.onNotice }),
    close: async () => {},
  };
}
