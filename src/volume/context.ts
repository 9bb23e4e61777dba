/** What every driver operation runs with, once it holds the volume's lock. */
import { CowError } from '../errors.js';
import type { JobOptions, ProgressCallback } from '../image/job.js';
import type { JobRequest, JobResult } from './job-request.js';
import type { Hypervisor } from './hypervisor.js';
import type { VolumeLockHandle } from './coordination.js';
import type { VolumeFiles } from './volume-files.js';

/**
 * Named points of the create and delete sequences, reported through `onStep` right after each
 * has become durable (and `delete:commit-progress` after every step of a commit job). A test
 * hook: fault injection kills the process at one of them.
 */
export type DriverStep =
  | 'create:journal'
  | 'create:overlay'
  | 'create:accepted'
  | 'create:hypervisor'
  | 'create:info'
  | 'create:done'
  | 'delete:journal'
  | 'delete:commit-progress'
  | 'delete:commit'
  | 'delete:rebase'
  | 'delete:accepted'
  | 'delete:hypervisor'
  | 'delete:info'
  | 'delete:unlink'
  | 'delete:done';

export interface OperationContext {
  files: VolumeFiles;
  hypervisor?: Hypervisor;
  lock: VolumeLockHandle;
  /** Aborted when the caller cancels or the lock is lost. */
  signal: AbortSignal;
  /**
   * The one lock check of the operation: it runs before every change to the volume (VolumeFiles
   * runs it), before every step of an engine job (`job.checkpoint`) and before every write a job
   * issues (`job.guardIo`). Throws once the lock is lost or the driver interrupted.
   */
  guard: () => void;
  /** Options for engine jobs (commit, convert): progress, step size, the signal above, `guard`. */
  job: JobOptions;
  /**
   * Whether `runJob` runs jobs in this thread. Then an operation may run its job on the chain it
   * has open (VolumeChain) instead of letting the job open it again; a job in an engine worker
   * opens its files there, so the operation closes its own images first (qemu's image locks).
   */
  jobsInThread: boolean;
  /**
   * Run a synchronous engine job on images the operation has open (only when `jobsInThread`), as
   * the runner runs its jobs (JobRunner.here; without a runner, simply now).
   */
  runHere<T>(job: () => T): Promise<T>;
  /**
   * Run an engine job with `job`'s options (`onProgress` replaces the operation's own): in this
   * thread, or in an engine worker when the driver was given a `jobs` runner — then the host's
   * event loop, and with it the lock's renewal, runs on while the job copies.
   */
  runJob(request: JobRequest, options?: { onProgress?: ProgressCallback }): Promise<JobResult>;
  step(step: DriverStep): void;
}

/** The hypervisor, or ECOW_HYPERVISOR_UNAVAILABLE (checked before anything changes). */
export function needHypervisor(ctx: OperationContext, what: string): Hypervisor {
  if (!ctx.hypervisor) {
    throw new CowError('ECOW_HYPERVISOR_UNAVAILABLE', `${what} of attached volume ${ctx.files.volumeId} needs a hypervisor (Nova) client; none is configured (CLI: --nova-endpoint and --status-listen)`);
  }
  return ctx.hypervisor;
}
