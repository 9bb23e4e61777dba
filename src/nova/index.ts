/** The Nova path for attached volumes: client, status tracking, waiting, callback endpoint. */
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
export { SnapshotStatusStore, type SnapshotStatusRecord, type StatusListener } from './status-store.js';
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
export { LoopbackNova, SimulatedGuest, type LoopbackNovaOptions, type LoopbackFaults, type GuestWrite } from './loopback.js';
