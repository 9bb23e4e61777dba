import { CowError } from '../errors.js';
import type { Hypervisor, HypervisorCallOptions } from '../volume/hypervisor.js';
import type { CreateInfo, DeleteInfo } from './schemas.js';
import type { NovaClient } from './client.js';
import type { SnapshotStatusStore } from './status-store.js';
import { waitForProgress, type Clock, type BackoffStep } from './wait.js';

export interface NovaHypervisorOptions {
  client: NovaClient;
  /** Where Nova's `os-update_snapshot_status` reports land (fed by the status endpoint). */
  store: SnapshotStatusStore;
  /** Injectable for tests: the clock, the back-off schedule and the time-outs of the waits. */
  clock?: Clock;
  intervals?: readonly BackoffStep[];
  createTimeoutMs?: number;
  deleteTimeoutMs?: number;
}

/**
 * The driver's hypervisor for attached volumes, through Nova's assisted snapshots: send the
 * request, then wait (Cinder's back-off) until Nova reports progress 90% for the snapshot.
 */
export class NovaHypervisor implements Hypervisor {
  constructor(private readonly options: NovaHypervisorOptions) {}

  async createSnapshot(volumeId: string, snapshotId: string, createInfo: CreateInfo, call?: HypervisorCallOptions): Promise<void> {
    const { client, store } = this.options;
    store.set(snapshotId, 'creating');
    await client.createSnapshot(volumeId, createInfo);
    await abortable(waitForProgress(store, snapshotId, { phase: 'create', clock: this.options.clock, intervals: this.options.intervals, timeoutMs: this.options.createTimeoutMs }), call?.signal, snapshotId);
  }

  async deleteSnapshot(_volumeId: string, snapshotId: string, deleteInfo: DeleteInfo, call?: HypervisorCallOptions): Promise<void> {
    const { client, store } = this.options;
    store.set(snapshotId, 'deleting');
    await client.deleteSnapshot(snapshotId, deleteInfo);
    await abortable(waitForProgress(store, snapshotId, { phase: 'delete', clock: this.options.clock, intervals: this.options.intervals, timeoutMs: this.options.deleteTimeoutMs }), call?.signal, snapshotId);
  }
}

/**
 * Stop waiting when the driver's operation is cancelled (or its volume lock was lost). Nova may
 * still finish the job; the driver's journal tells recovery what to look for.
 */
function abortable<T>(wait: Promise<T>, signal: AbortSignal | undefined, snapshotId: string): Promise<T> {
  if (!signal) return wait;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new CowError('ECOW_CANCELLED', `stopped waiting for Nova on snapshot ${snapshotId}`, { cause: signal.reason }));
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    wait.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
