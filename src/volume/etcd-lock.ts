/**
 * Volume locks on etcd v3, for deployments with several control-plane hosts (Cinder's
 * active-active volume service takes its locks the same way, through tooz on etcd).
 *
 * A lock is the key `<prefix>/volumes/<volume>/lock`, created only if absent (a transaction on
 * its create revision) and attached to a lease the holder was granted with a TTL. etcd, not any
 * local clock, decides staleness: the key disappears when the lease is revoked or when etcd has
 * heard no keep-alive for the TTL. A waiter only ever asks etcd whether the key exists, so a host
 * whose clock runs ahead cannot take a live lock.
 *
 * Fencing: the key's create revision grows with every new holder; it is the handle's `fence`,
 * recorded in the journal (journal.ts refuses a journal written by a later holder). The holder
 * checks, synchronously, before every change and every write it issues (`assertHeld`, the
 * driver's per-write guard) that its lease is still alive: no loss reported, and less than the
 * TTL (minus a margin) elapsed on this process's monotonic clock since it *sent* the last
 * keep-alive etcd confirmed — etcd cannot have expired the lease before then. A holder stopped
 * past the TTL (SIGSTOP, a frozen VM) therefore stops at its next write, before it. The timer
 * also asks etcd every keep-alive period that the key still carries this holder's revision.
 * What it cannot fence: a write already handed to the kernel (at most one per holder), and a
 * share that is written by something that does not take this lock.
 */
import { CowError } from '../errors.js';
import type { AcquireOptions, VolumeCoordinator, VolumeLockHandle } from './coordination.js';
import { validateVolumeId } from './names.js';
import type { EtcdTarget } from './etcd-target.js';
import { NOTICE_AFTER_MS, NOTICE_INTERVAL_MS } from './lock.js';
import { sleep } from './sleep.js';

export interface EtcdLockOptions {
  /** Lease TTL in seconds (etcd's minimum applies). Default 15. */
  ttlSeconds?: number;
  /** Give up waiting with ECOW_LOCKED after this long. Default 60 s. */
  acquireTimeoutMs?: number;
  /** Give up reaching etcd with ECOW_COORDINATION_UNAVAILABLE after this long. Default 5 s. */
  connectTimeoutMs?: number;
  /** Longest retry delay while another holder has the lock. Default 500 ms. */
  maxRetryDelayMs?: number;
}

export const DEFAULT_ETCD_LOCK_OPTIONS = {
  ttlSeconds: 15,
  acquireTimeoutMs: 60_000,
  connectTimeoutMs: 5_000,
  maxRetryDelayMs: 500,
} as const;

/** What is taken off the lease's TTL before the holder stops trusting it (clock-rate slack). */
function safetyMarginMs(ttlMs: number): number {
  return Math.max(250, ttlMs / 10);
}

type Etcd3Module = typeof import('etcd3');
type Client = InstanceType<Etcd3Module['Etcd3']>;
type Lease = ReturnType<Client['lease']>;

/** Failures that a reachable cluster may cure by itself (no answer, a member or the leader gone): retried. */
const transient = new WeakSet<CowError>();

/** gRPC/etcd errors of a cluster in trouble, as opposed to a refusal (bad credentials, bad request). */
function isOutage(e: unknown): boolean {
  const name = (e as Error)?.constructor?.name ?? '';
  const message = String((e as Error)?.message ?? e);
  return /Unavailable|DeadlineExceeded|Aborted|Cancelled|Unknown|Internal|ResourceExhast|Generic|Protocol/.test(name) || /timed out|leader changed|no leader/i.test(message);
}

/**
 * `p`, or ECOW_COORDINATION_UNAVAILABLE: once `ms` have passed (the call itself is abandoned), or
 * when the call fails — an outage (then retried where etcd was reached before) or a refusal.
 */
async function within<T>(p: Promise<T>, ms: number, what: string, target: EtcdTarget): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(unavailable(target, `${what}: no answer within ${ms} ms`)), ms);
      }),
    ]);
  } catch (e) {
    if (e instanceof CowError) throw e;
    const why = `${what}: ${(e as Error)?.message ?? String(e)}`;
    if (isOutage(e)) throw unavailable(target, why, e);
    throw new CowError(
      'ECOW_COORDINATION_UNAVAILABLE',
      `etcd at ${target.hosts.join(',')} refused the request (${why}); if it needs a user, COWCHAIN_ETCD_USERNAME and COWCHAIN_ETCD_PASSWORD name it; nothing was changed`,
      { cause: e },
    );
  } finally {
    clearTimeout(timer);
  }
}

function unavailable(target: EtcdTarget, why: string, cause?: unknown): CowError {
  const e = new CowError('ECOW_COORDINATION_UNAVAILABLE', `etcd at ${target.hosts.join(',')} cannot be reached (${why}); nothing was changed`, { cause });
  transient.add(e);
  return e;
}

/** The lock key of a volume. Volume ids are unique across the deployment; the share plays no part. */
export function etcdLockKey(target: EtcdTarget, volumeId: string): string {
  return `${target.prefix}/volumes/${volumeId}/lock`;
}

/**
 * A coordinator on the etcd cluster `target` (hosts, key prefix, credentials). The client
 * connects lazily, at the first lock; `close()` ends its connections.
 */
export function etcdCoordinator(target: EtcdTarget, options: EtcdLockOptions = {}): VolumeCoordinator {
  const ttlSeconds = options.ttlSeconds ?? DEFAULT_ETCD_LOCK_OPTIONS.ttlSeconds;
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1) throw new CowError('ECOW_BAD_ARGUMENT', `etcd lease TTL ${ttlSeconds} is not a whole number of seconds ≥ 1`);
  const acquireTimeoutMs = options.acquireTimeoutMs ?? DEFAULT_ETCD_LOCK_OPTIONS.acquireTimeoutMs;
  const connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_ETCD_LOCK_OPTIONS.connectTimeoutMs;
  const maxDelay = options.maxRetryDelayMs ?? DEFAULT_ETCD_LOCK_OPTIONS.maxRetryDelayMs;
  let client: Promise<Client> | undefined;
  /** etcd answered this coordinator once: later failures are outages to wait out, not a wrong address. */
  let reached = false;

  const connect = (): Promise<Client> => {
    // Loaded on first use: gRPC costs every other command's start-up nothing.
    client ??= import('etcd3').then(
      ({ Etcd3 }) =>
        new Etcd3({
          hosts: target.hosts.map((h) => `http://${h}`),
          auth: target.auth,
          dialTimeout: connectTimeoutMs,
          // Unary calls never wait longer than the connect bound (streams: the keep-alive).
          defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + connectTimeoutMs }),
        }),
    );
    return client;
  };

  async function withLock<T>(_dir: string, volumeId: string, fn: (lock: VolumeLockHandle) => Promise<T> | T, acquire: AcquireOptions = {}): Promise<T> {
    validateVolumeId(volumeId);
    const key = etcdLockKey(target, volumeId);
    const etcd = await connect();
    const ttlMs = ttlSeconds * 1000;
    const margin = safetyMarginMs(ttlMs);

    let lost: CowError | undefined;
    const controller = new AbortController();
    const loseLock = (why: string, cause?: unknown): CowError => {
      if (!lost) {
        lost = new CowError('ECOW_LOCK_LOST', `etcd lock ${key} of volume ${volumeId} was lost while held: ${why}`, { cause });
        controller.abort(lost);
      }
      return lost;
    };
    // Keep-alives are confirmed in the order they were sent (one stream); each confirmation
    // extends the lease to TTL after the moment its request left this process, or later.
    let validUntil = 0;
    const sent: number[] = [];

    // The lease first: the key is only ever created attached to it. A cluster this coordinator
    // has never reached fails at once; one it reached before (a member down, an election) is
    // given until the acquire time-out.
    const waitStart = performance.now();
    let lease: Lease;
    let leaseId: string;
    for (;;) {
      const grantSentAt = performance.now();
      lease = etcd.lease(ttlSeconds);
      try {
        leaseId = await within(lease.grant(), connectTimeoutMs, 'lease grant', target);
        validUntil = grantSentAt + ttlMs - margin;
        reached = true;
        break;
      } catch (e) {
        lease.release();
        if (!reached || !(e instanceof CowError) || !transient.has(e) || performance.now() - waitStart >= acquireTimeoutMs) throw e;
      }
      await sleep(100 + Math.random() * 200, acquire.signal);
      if (acquire.signal?.aborted) throw new CowError('ECOW_CANCELLED', `waiting for the etcd lock of volume ${volumeId} was cancelled`, { cause: acquire.signal.reason });
    }
    lease.on('lost', (err) => loseLock(`etcd ended lease ${leaseId}: ${err?.message ?? String(err)}`, err));
    lease.on('keepaliveFired', () => sent.push(performance.now()));
    lease.on('keepaliveFailed', () => sent.splice(0));
    lease.on('keepaliveSucceeded', (res) => {
      const at = sent.shift();
      if (at !== undefined) validUntil = Math.max(validUntil, at + Number(res.TTL) * 1000 - margin);
    });

    let fence: string;
    try {
      fence = await acquireKey(etcd, key, leaseId, volumeId, () => performance.now() <= validUntil && !lost, acquire);
    } catch (e) {
      await within(lease.revoke(), connectTimeoutMs, 'lease revoke', target).catch(() => lease.release());
      throw e;
    }

    const assertHeld = (): void => {
      if (lost) throw lost;
      const now = performance.now();
      if (now > validUntil) {
        throw loseLock(`lease ${leaseId} not confirmed by etcd for ${Math.round(now - validUntil + ttlMs - margin)} ms (TTL ${ttlSeconds} s): it may have expired`);
      }
    };
    // Ask etcd, every keep-alive period, that the key is still this holder's (not deleted by hand).
    const verify = setInterval(() => {
      etcd
        .get(key)
        .exec()
        .then((res) => {
          const kv = res.kvs[0];
          if (!kv) loseLock('the lock key is gone');
          else if (String(kv.create_revision) !== fence) loseLock(`the lock key now belongs to revision ${String(kv.create_revision)}, not ${fence}`);
        })
        .catch(() => {}); // unreachable for a moment: the lease's own deadline decides
    }, ttlMs / 3);
    verify.unref?.();

    let outcome: { ok: true; value: T } | { ok: false; error: unknown };
    try {
      outcome = { ok: true, value: await fn({ signal: controller.signal, assertHeld, fence }) };
    } catch (error) {
      outcome = { ok: false, error };
    }
    clearInterval(verify);
    if (!lost) {
      try {
        assertHeld();
      } catch {
        // recorded in `lost`
      }
    }
    // Revoking the lease deletes the key; if etcd cannot be told, the key expires with the TTL.
    await within(lease.revoke(), connectTimeoutMs, 'lease revoke', target).catch(() => lease.release());
    if (!outcome.ok) throw outcome.error;
    if (lost) throw lost;
    return outcome.value;
  }

  /**
   * Create the key under the lease once nobody holds it; returns its create revision. An attempt
   * that fails once etcd was reached (a member down, a leader election) is retried while the
   * lease lives; one whose answer was lost may have created the key: a key under our own lease
   * is ours.
   */
  async function acquireKey(etcd: Client, key: string, leaseId: string, volumeId: string, leaseAlive: () => boolean, acquire: AcquireOptions): Promise<string> {
    const { signal, onNotice } = acquire;
    const holder = JSON.stringify({ host: (await import('node:os')).hostname(), pid: process.pid });
    const waitStart = performance.now();
    const deadline = waitStart + acquireTimeoutMs;
    let nextNotice = waitStart + NOTICE_AFTER_MS;
    let delay = 25;
    for (;;) {
      if (signal?.aborted) throw new CowError('ECOW_CANCELLED', `waiting for the etcd lock of volume ${volumeId} was cancelled`, { cause: signal.reason });
      let heldBy = 'unknown';
      try {
        const res = await within(
          etcd.if(key, 'Create', '==', 0).then(etcd.put(key).value(holder).lease(leaseId)).else(etcd.get(key)).commit(),
          connectTimeoutMs,
          `lock ${key}`,
          target,
        );
        if (res.succeeded) return String(res.header.revision);
        const kv = res.responses[0]?.response_range?.kvs?.[0];
        if (kv && String(kv.lease) === String(leaseId)) return String(kv.create_revision);
        heldBy = kv?.value?.toString() ?? 'unknown';
      } catch (e) {
        if (!leaseAlive() || !(e instanceof CowError) || !transient.has(e) || performance.now() >= deadline) throw e;
        heldBy = `unknown: etcd did not answer (${e.message})`;
      }
      const now = performance.now();
      if (onNotice && now >= nextNotice) {
        nextNotice = now + NOTICE_INTERVAL_MS;
        onNotice(`volume ${volumeId}: waiting for the etcd lock ${key}, held by ${heldBy} (${Math.round((now - waitStart) / 1000)} s)`);
      }
      const remaining = deadline - now;
      if (remaining <= 0) {
        throw new CowError('ECOW_LOCKED', `volume ${volumeId} is locked by another operation (etcd key ${key}, held by ${heldBy}); gave up after ${acquireTimeoutMs} ms`);
      }
      // Jitter so that waiters on several hosts do not retry in lock-step.
      await sleep(Math.min(remaining, delay * (0.5 + Math.random() / 2)), signal);
      delay = Math.min(delay * 2, maxDelay);
    }
  }

  return {
    description: `etcd (${target.hosts.join(',')})`,
    withLock,
    close: async () => {
      const c = client;
      client = undefined;
      if (c) (await c.catch(() => undefined))?.close();
    },
  };
}
