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
  /** Nova answers 2xx when it accepted the work; the outcome comes later, as a status report. */
  readonly reportsAcceptance = true;

  constructor(private readonly options: NovaHypervisorOptions) {}

  async createSnapshot(volumeId: string, snapshotId: string, createInfo: CreateInfo, call?: HypervisorCallOptions): Promise<void> {
    const { client, store } = this.options;
    store.set(snapshotId, 'creating');
    await client.createSnapshot(volumeId, createInfo);
    await call?.onAccepted?.();
    await waitForProgress(store, snapshotId, { phase: 'create', clock: this.options.clock, intervals: this.options.intervals, timeoutMs: this.options.createTimeoutMs, signal: call?.signal });
  }

  async deleteSnapshot(_volumeId: string, snapshotId: string, deleteInfo: DeleteInfo, call?: HypervisorCallOptions): Promise<void> {
    const { client, store } = this.options;
    store.set(snapshotId, 'deleting');
    await client.deleteSnapshot(snapshotId, deleteInfo);
    await call?.onAccepted?.();
    await waitForProgress(store, snapshotId, { phase: 'delete', clock: this.options.clock, intervals: this.options.intervals, timeoutMs: this.options.deleteTimeoutMs, signal: call?.signal });
  }
}
