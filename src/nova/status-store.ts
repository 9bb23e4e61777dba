/**
 * Snapshot status records as Cinder keeps them in its database, in memory: the driver sets a
 * snapshot's status before asking Nova to act, Nova reports back through the status endpoint,
 * and the waiter watches for the result.
 */
import { CowError } from '../errors.js';
import { progressSchema, snapshotStatusSchema, type SnapshotStatus } from './schemas.js';

export interface SnapshotStatusRecord {
  readonly status: SnapshotStatus;
  /** Cinder's progress string (`"90%"`), or null while nobody reported any. */
  readonly progress: string | null;
}

/**
 * A status report the endpoint refused (wrong token, unknown URL or snapshot, bad body): Nova
 * believes it reported, so whoever waits for that report must hear of it instead of timing out.
 */
export interface StatusRejection {
  /** The HTTP status answered (401, 404, 400, ...). */
  readonly httpStatus: number;
  readonly message: string;
  /** The snapshot named in the URL, when one could be read from it. */
  readonly snapshotId: string | null;
}

/** Called after every change of one snapshot's record; `undefined` once it was removed. */
export type StatusListener = (record: SnapshotStatusRecord | undefined) => void;

/** Cinder's `os-update_snapshot_status` rules: current status → statuses it may report. */
const ALLOWED_UPDATES: ReadonlyMap<SnapshotStatus, readonly SnapshotStatus[]> = new Map([
  ['creating', ['creating', 'available', 'error']],
  ['deleting', ['deleting', 'error_deleting']],
]);

export class SnapshotStatusStore {
  private readonly records = new Map<string, SnapshotStatusRecord>();
  private readonly listeners = new Map<string, Set<StatusListener>>();
  private readonly rejectionListeners = new Set<(r: StatusRejection) => void>();
  /** The last refused report per snapshot ('' : naming none), until the driver's next `set`. */
  private readonly rejections = new Map<string, StatusRejection>();

  /**
   * Tell the waiters that a report was refused (see StatusRejection). It is kept too: a report
   * can arrive before its waiter starts (Nova may report before its API call has returned).
   */
  rejected(rejection: StatusRejection): void {
    this.rejections.set(rejection.snapshotId ?? '', rejection);
    for (const listener of [...this.rejectionListeners]) listener(rejection);
  }

  /** A refused report naming `snapshotId`, or naming no snapshot, since the last `set`. */
  rejectionFor(snapshotId: string): StatusRejection | undefined {
    return this.rejections.get(snapshotId) ?? this.rejections.get('');
  }

  /** Listen to refused reports; returns the function that stops listening. */
  subscribeRejections(listener: (r: StatusRejection) => void): () => void {
    this.rejectionListeners.add(listener);
    return () => {
      this.rejectionListeners.delete(listener);
    };
  }

  get(snapshotId: string): SnapshotStatusRecord | undefined {
    return this.records.get(snapshotId);
  }

  /**
   * The driver's own status change (e.g. `creating` before asking Nova to create), not
   * subject to the update rules. Progress is reset, so a `90%` left by an earlier attempt
   * cannot pass for the new one's success.
   */
  set(snapshotId: string, status: SnapshotStatus, progress: string | null = null): SnapshotStatusRecord {
    const record = { status, progress };
    this.records.set(snapshotId, record);
    // A new request: what was refused before concerns an earlier one.
    this.rejections.delete(snapshotId);
    this.rejections.delete('');
    this.notify(snapshotId, record);
    return record;
  }

  /**
   * Apply a reported update the way Cinder's `os-update_snapshot_status` action does: only
   * from `creating` or `deleting`, only to the statuses listed for them; a non-empty progress
   * replaces the stored one, an absent or empty one keeps it.
   * @throws CowError ECOW_NOT_FOUND for an unknown snapshot, ECOW_BAD_STATUS_UPDATE for a
   *   transition Cinder refuses or a malformed progress.
   */
  update(snapshotId: string, update: { status: string; progress?: string }): SnapshotStatusRecord {
    const current = this.records.get(snapshotId);
    if (current === undefined) {
      throw new CowError('ECOW_NOT_FOUND', `snapshot ${JSON.stringify(snapshotId)} is not tracked`);
    }
    const allowed = ALLOWED_UPDATES.get(current.status);
    if (allowed === undefined) {
      throw new CowError(
        'ECOW_BAD_STATUS_UPDATE',
        `snapshot ${snapshotId} has status ${JSON.stringify(current.status)}, which does not accept status updates`,
      );
    }
    const parsed = snapshotStatusSchema.safeParse(update.status);
    if (!parsed.success || !allowed.includes(parsed.data)) {
      throw new CowError(
        'ECOW_BAD_STATUS_UPDATE',
        `status ${JSON.stringify(update.status)} is not allowed for snapshot ${snapshotId} with status ${JSON.stringify(current.status)}`,
      );
    }
    if (update.progress !== undefined && !progressSchema.safeParse(update.progress).success) {
      throw new CowError(
        'ECOW_BAD_STATUS_UPDATE',
        `progress ${JSON.stringify(update.progress)} for snapshot ${snapshotId} is not an integer percentage`,
      );
    }
    const record = { status: parsed.data, progress: update.progress || current.progress };
    this.records.set(snapshotId, record);
    this.notify(snapshotId, record);
    return record;
  }

  /** Stop tracking a snapshot; returns whether it was tracked. */
  delete(snapshotId: string): boolean {
    const existed = this.records.delete(snapshotId);
    if (existed) this.notify(snapshotId, undefined);
    return existed;
  }

  /** Listen to changes of one snapshot's record; returns the function that stops listening. */
  subscribe(snapshotId: string, listener: StatusListener): () => void {
    let set = this.listeners.get(snapshotId);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(snapshotId, set);
    }
    set.add(listener);
    return () => {
      const current = this.listeners.get(snapshotId);
      if (current === undefined) return;
      current.delete(listener);
      if (current.size === 0) this.listeners.delete(snapshotId);
    };
  }

  private notify(snapshotId: string, record: SnapshotStatusRecord | undefined): void {
    // Copy: a listener may unsubscribe itself while being called.
    for (const listener of [...(this.listeners.get(snapshotId) ?? [])]) listener(record);
  }
}
