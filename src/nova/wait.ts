/**
 * Waiting for Nova to finish an assisted snapshot, as Cinder's remotefs driver does
 * (`_create_snapshot_online` / `_nova_assisted_vol_snap_delete`): Nova reports through
 * `os-update_snapshot_status`, and progress `90%` with the phase's working status means done.
 */
import { setTimeout as sleepFor } from 'node:timers/promises';
import { CowError } from '../errors.js';
import type { SnapshotStatusRecord, SnapshotStatusStore, StatusRejection } from './status-store.js';

/** Time source of the waiter; tests inject one whose `sleep` only advances `now`. */
export interface Clock {
  /** Milliseconds on a monotonic scale. */
  now(): number;
  /** Resolve after `ms`, or earlier once `signal` aborts; never rejects. */
  sleep(ms: number, signal: AbortSignal): Promise<void>;
}

export const realClock: Clock = {
  now: () => performance.now(),
  sleep: (ms, signal) => sleepFor(ms, undefined, { signal }).catch(() => undefined),
};

/** Poll every `everyMs` once more than `afterMs` have elapsed. */
export interface BackoffStep {
  readonly afterMs: number;
  readonly everyMs: number;
}

/** Cinder's schedule: every 1 s, every 2 s after 10 s, 5 s after 20 s, 10 s after 60 s. */
export const CINDER_BACKOFF: readonly BackoffStep[] = [
  { afterMs: 0, everyMs: 1_000 },
  { afterMs: 10_000, everyMs: 2_000 },
  { afterMs: 20_000, everyMs: 5_000 },
  { afterMs: 60_000, everyMs: 10_000 },
];

/** Cinder's time-outs: 600 s for a create, 7200 s for a delete. */
export const DEFAULT_TIMEOUT_MS = { create: 600_000, delete: 7_200_000 } as const;

/** Options of `waitForProgress`. */
export interface WaitOptions {
  /** Which report ends the wait: a create's (`creating` at 90%) or a delete's (`deleting` at 90%). */
  phase: 'create' | 'delete';
  /** The time source (tests inject one); default `realClock`. */
  clock?: Clock;
  /** Ascending by `afterMs`; defaults to `CINDER_BACKOFF`. */
  intervals?: readonly BackoffStep[];
  /** Defaults to `DEFAULT_TIMEOUT_MS[phase]`. */
  timeoutMs?: number;
  /** Stops the wait (ECOW_CANCELLED): the caller's operation was cancelled or lost its lock. */
  signal?: AbortSignal;
}

/**
 * Wait until Nova reports the snapshot done: status `creating` (phase create) or `deleting`
 * (phase delete) with progress `90%`. Polls the store on Cinder's back-off schedule and also
 * wakes as soon as the store reports a change of this snapshot.
 *
 * As in Cinder, `available` is not success for a create: Nova reports `creating` + `90%` and
 * the caller finishes the snapshot. A create sees other statuses than the ones below (e.g.
 * `available` set by someone else) as "not yet" and keeps waiting until the time-out; Cinder
 * spins on them without counting time, which never times out.
 *
 * @returns the record that signalled success.
 * @throws CowError ECOW_NOVA_STATUS on `error` (create) or any status but `deleting` (delete);
 *   ECOW_CONCURRENT_REQUEST when a create finds the snapshot `deleting`/`error_deleting`;
 *   ECOW_NOT_FOUND when the snapshot is not (or no longer) tracked; ECOW_STATUS_REJECTED when
 *   the endpoint refused a report for this snapshot (or one naming none): Nova then believes it
 *   reported, and waiting on would only end in the time-out; ECOW_NOVA_TIMEOUT once
 *   more than `timeoutMs` elapsed; ECOW_BAD_ARGUMENT for an invalid schedule or time-out.
 */
export async function waitForProgress(
  store: SnapshotStatusStore,
  snapshotId: string,
  options: WaitOptions,
): Promise<SnapshotStatusRecord> {
  const { phase, clock = realClock, intervals = CINDER_BACKOFF } = options;
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS[phase];
  validateSchedule(intervals, timeoutMs);

  let wake = new AbortController();
  let rejected: StatusRejection | undefined = store.rejectionFor(snapshotId);
  const unsubscribe = store.subscribe(snapshotId, () => wake.abort());
  const unsubscribeRejections = store.subscribeRejections((r) => {
    if (r.snapshotId !== null && r.snapshotId !== snapshotId) return;
    rejected ??= r;
    wake.abort();
  });
  try {
    const start = clock.now();
    for (;;) {
      // A fresh controller before the check, so an update arriving after it cuts the sleep short.
      wake = new AbortController();
      if (options.signal?.aborted) {
        throw new CowError('ECOW_CANCELLED', `stopped waiting for Nova to ${phase} snapshot ${snapshotId}`, { cause: options.signal.reason });
      }
      const record = store.get(snapshotId);
      if (record === undefined) {
        throw new CowError('ECOW_NOT_FOUND', `snapshot ${snapshotId} is not tracked while waiting for Nova to ${phase} it`);
      }
      if (isDone(snapshotId, record, phase)) return record;
      if (rejected) {
        throw new CowError(
          'ECOW_STATUS_REJECTED',
          `the status endpoint refused a progress report while waiting for Nova to ${phase} snapshot ${snapshotId}: HTTP ${rejected.httpStatus} ${rejected.message} (check Nova's token and its Cinder endpoint URL)`,
        );
      }

      const elapsed = clock.now() - start;
      if (elapsed > timeoutMs) {
        throw new CowError(
          'ECOW_NOVA_TIMEOUT',
          `timed out after ${elapsed} ms waiting for Nova to ${phase} snapshot ${snapshotId} (status ${record.status}, progress ${record.progress})`,
        );
      }
      await clock.sleep(intervalAt(intervals, elapsed), options.signal ? AbortSignal.any([wake.signal, options.signal]) : wake.signal);
    }
  } finally {
    unsubscribe();
    unsubscribeRejections();
  }
}

/** Cinder's per-phase verdict on one status record: true when done, throws on failure. */
function isDone(snapshotId: string, record: SnapshotStatusRecord, phase: 'create' | 'delete'): boolean {
  const working = phase === 'create' ? 'creating' : 'deleting';
  if (record.status === working) return record.progress === '90%';
  if (phase === 'delete') {
    throw new CowError('ECOW_NOVA_STATUS', `unable to delete snapshot ${snapshotId}: status ${record.status}`);
  }
  if (record.status === 'error') {
    throw new CowError('ECOW_NOVA_STATUS', `Nova reported status error while creating snapshot ${snapshotId}`);
  }
  if (record.status === 'deleting' || record.status === 'error_deleting') {
    throw new CowError(
      'ECOW_CONCURRENT_REQUEST',
      `snapshot ${snapshotId} was asked to be deleted (status ${record.status}) while waiting for its creation`,
    );
  }
  return false;
}

/** The interval of the last step whose `afterMs` lies below `elapsed` (Cinder's `10 < elapsed`). */
function intervalAt(intervals: readonly BackoffStep[], elapsed: number): number {
  let every = intervals[0].everyMs;
  for (const step of intervals) {
    if (step.afterMs < elapsed) every = step.everyMs;
  }
  return every;
}

function validateSchedule(intervals: readonly BackoffStep[], timeoutMs: number): void {
  const ascending = intervals.every((s, i) => i === 0 || s.afterMs >= intervals[i - 1].afterMs);
  const positive = intervals.every((s) => Number.isFinite(s.everyMs) && s.everyMs > 0 && s.afterMs >= 0);
  if (intervals.length === 0 || !ascending || !positive) {
    throw new CowError('ECOW_BAD_ARGUMENT', `invalid back-off schedule ${JSON.stringify(intervals)}`);
  }
  if (!(timeoutMs >= 0)) {
    throw new CowError('ECOW_BAD_ARGUMENT', `invalid time-out ${timeoutMs} ms`);
  }
}
