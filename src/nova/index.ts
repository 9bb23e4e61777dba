/**
 * `cowchain/nova`: the Nova path for attached volumes — `NovaHypervisor` (give it to a
 * `VolumeDriver`), the client, the status endpoint Nova reports progress to, and the wait.
 * Test doubles (a loopback Nova, a simulated guest) are in `cowchain/testing`.
 * @module cowchain/nova
 */
export {
  createInfoSchema,
  createSnapshotResponseSchema,
  deleteInfoSchema,
  deleteSnapshotResponseSchema,
  novaErrorSchema,
  progressSchema,
  SNAPSHOT_STATUSES,
  snapshotStatusSchema,
  updateSnapshotStatusSchema,
  type CreateInfo,
  type CreateSnapshotResponse,
  type DeleteInfo,
  type NovaError,
  type SnapshotStatus,
  type UpdateSnapshotStatus,
} from './schemas.js';
export { NovaClient, type NovaClientOptions, type TokenProvider } from './client.js';
export { SnapshotStatusStore, type SnapshotStatusRecord, type StatusListener, type StatusRejection } from './status-store.js';
export {
  CINDER_BACKOFF,
  DEFAULT_TIMEOUT_MS,
  realClock,
  waitForProgress,
  type BackoffStep,
  type Clock,
  type WaitOptions,
} from './wait.js';
export {
  createStatusHandler,
  startStatusServer,
  type StatusHandlerOptions,
  type StatusServer,
  type StatusServerOptions,
} from './status-endpoint.js';
export { NovaHypervisor, type NovaHypervisorOptions } from './hypervisor.js';
