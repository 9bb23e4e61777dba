/**
 * How the driver keeps operations on one volume apart: a `VolumeCoordinator` hands out
 * per-volume locks. Two implementations:
 *  - the share lease (lock.ts, `shareLease()`, the default): a directory on the volume share,
 *    renewed by its holder; nothing to run besides the share;
 *  - etcd v3 (etcd-lock.ts, `etcdCoordinator()`): a key under a server-side TTL lease, for
 *    several control-plane hosts (what Cinder's active-active volume service does through tooz).
 * The driver only sees this interface: it runs each operation inside `withLock`, checks the
 * handle before every change and every write (`assertHeld`, the per-write guard), and records
 * the handle's fencing token in the journal.
 */

export interface VolumeLockHandle {
  /** Aborted (reason: the ECOW_LOCK_LOST error) once the lock is known to be lost. */
  readonly signal: AbortSignal;
  /**
   * Check, synchronously, that this holder still holds the lock (renewing it where the lock
   * works that way). Throws ECOW_LOCK_LOST otherwise. Called before every change and every write.
   */
  assertHeld(): void;
  /**
   * A token that grows with every new holder of the volume's lock (etcd: the lock key's create
   * revision), recorded in the journal; absent for locks that have none (the share lease).
   */
  readonly fence?: string;
}

export interface AcquireOptions {
  /** Abort waiting for the lock (ECOW_CANCELLED). Does not interrupt a running `fn`. */
  signal?: AbortSignal;
  /** Told what a wait is about and when a dead holder's lock is taken over (the share lease: lock.ts). */
  onNotice?: (message: string) => void;
}

export interface VolumeCoordinator {
  /** What coordinates, for messages and logs: `share lease`, `etcd (127.0.0.1:2379,…)`. */
  readonly description: string;
  /**
   * Run `fn` holding volume `volumeId`'s lock (`dir`: the volume directory); release it
   * afterwards whatever happens. Throws ECOW_LOCKED when it cannot be had in time, ECOW_LOCK_LOST
   * when it was lost while `fn` ran (even if `fn` succeeded).
   */
  withLock<T>(dir: string, volumeId: string, fn: (lock: VolumeLockHandle) => Promise<T> | T, options?: AcquireOptions): Promise<T>;
  /** Release what the coordinator holds open (connections); the share lease holds nothing. */
  close(): Promise<void>;
}
