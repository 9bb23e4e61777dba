import type { Hypervisor, HypervisorCallOptions } from '../volume/hypervisor.js';
import type { CreateInfo, DeleteInfo } from './schemas.js';
import { requestUnanswered, type NovaClient } from './client.js';
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
  /** Nova answers 2xx when it accepted the work; the outcome comes later, as a status report. */
  readonly reportsAcceptance = true;

  constructor(private readonly options: NovaHypervisorOptions) {}

  async createSnapshot(volumeId: string, snapshotId: string, createInfo: CreateInfo, call?: HypervisorCallOptions): Promise<void> {
    const { client, store } = this.options;
    store.set(snapshotId, 'creating');
    await sent(() => client.createSnapshot(volumeId, createInfo));
    await call?.onAccepted?.();
    await waitForProgress(store, snapshotId, { phase: 'create', clock: this.options.clock, intervals: this.options.intervals, timeoutMs: this.options.createTimeoutMs, signal: call?.signal });
  }

  async deleteSnapshot(_volumeId: string, snapshotId: string, deleteInfo: DeleteInfo, call?: HypervisorCallOptions): Promise<void> {
    const { client, store } = this.options;
    store.set(snapshotId, 'deleting');
    await sent(() => client.deleteSnapshot(snapshotId, deleteInfo));
    await call?.onAccepted?.();
    await waitForProgress(store, snapshotId, { phase: 'delete', clock: this.options.clock, intervals: this.options.intervals, timeoutMs: this.options.deleteTimeoutMs, signal: call?.signal });
  }
}

/**
 * Send a request. One that went out and got no answer (a time-out, a reset) is taken as accepted:
 * Nova may be switching the guest or merging, so the driver must not undo anything, and Nova's
 * status report, which may still come, decides. Without one the wait times out and the driver
 * keeps every file for fsck. Only a request that never left (connection refused) or that Nova
 * answered with an error rejects here.
 */
async function sent(request: () => Promise<unknown>): Promise<void> {
  try {
    await request();
  } catch (e) {
    if (!requestUnanswered(e)) throw e;
  }
}
