/**
 * The messages between the host thread and an engine worker. Only names, options, progress
 * numbers and error codes cross; image data never does (the worker opens the files itself).
 *
 * Between two engine steps a job with a checkpoint (the volume lock's check) or a progress
 * callback stops and asks its host whether to go on: it posts `checkpoint` and blocks
 * (Atomics.wait) on its job's verdict word until the host stores a verdict there. The host runs
 * the checkpoint and its cancel check on its own thread meanwhile, after the progress posted
 * before, so a lost lock or a cancel stops the job at the same places as in-process, and the
 * worker never starts a step the host did not allow. A job with neither does not ask: the host
 * raises its cancel word (an abort) and the worker reads it before every step, so a step costs no
 * round trip between two threads that, on a busy machine, each wait to be scheduled.
 */
import { CowError, ERROR_CODES, type CowErrorCode } from '../errors.js';
import type { JobRequest, JobResult } from '../volume/job-request.js';

/** The job's control words (Int32Array over a SharedArrayBuffer): [verdict, cancel]. */
export const CONTROL = { verdict: 0, cancel: 1, words: 2 } as const;

/** Verdict-word values: what the host answers at a checkpoint (0: no answer yet). */
export const VERDICT = {
  pending: 0,
  /** Run the next step. */
  go: 1,
  /** Stop as a cancel does: keep and flush the work done (ECOW_CANCELLED). */
  cancel: 2,
  /** Stop writing at once: the images are abandoned, nothing more reaches the disk. */
  stop: 3,
} as const;

export type HostMessage =
  /** First message to a new worker: the compiled engine (or its bytes, where a Module cannot be posted). */
  | { t: 'init'; module: unknown }
  /**
   * `checkpoint`: the host has a checkpoint or a progress callback for this job (the worker then
   * asks before each step).
   * `guard`: the host has a per-write guard for this job (the worker then asks before its writes).
   */
  | { t: 'run'; id: number; job: JobRequest; stepBytes?: number; progress: boolean; checkpoint: boolean; guard: boolean; control: SharedArrayBuffer };

export type WorkerMessage =
  | { t: 'progress'; id: number; done: number; total: number }
  | { t: 'checkpoint'; id: number }
  /** Before a write (FileBackend.guard): the host runs the job's guardIo and answers as for a checkpoint. */
  | { t: 'guard'; id: number }
  | { t: 'done'; id: number; result: JobResult }
  /** `stopped`: the job stopped on the host's verdict; the host holds the reason. */
  | { t: 'failed'; id: number; error: SerializedError; stopped: boolean };

export interface SerializedError {
  code: CowErrorCode;
  /** The message without the `CODE: ` prefix CowError adds. */
  message: string;
}

export function serializeError(e: unknown): SerializedError {
  if (e instanceof CowError) {
    const prefix = `${e.code}: `;
    return { code: e.code, message: e.message.startsWith(prefix) ? e.message.slice(prefix.length) : e.message };
  }
  return { code: 'ECOW_INTERNAL', message: `engine worker: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}` };
}

/** The CowError again, its code intact (an unknown code — a newer worker? — is ECOW_INTERNAL). */
export function deserializeError(s: SerializedError): CowError {
  if (Object.hasOwn(ERROR_CODES, s.code)) return new CowError(s.code, s.message);
  return new CowError('ECOW_INTERNAL', `${s.code}: ${s.message}`);
}
