/**
 * A small pool of engine worker threads: jobs of different volumes run in parallel, off the
 * host's thread, so an embedding service keeps answering while a commit copies gigabytes.
 */
import * as os from 'node:os';
import { compileEngine, engineModule, type EngineSource } from '../engine/engine.js';
import { CowError } from '../errors.js';
import { parseJobRequest, type JobHooks, type JobRequest, type JobResult, type JobRunner } from '../volume/job-request.js';
import { CONTROL, VERDICT, deserializeError, type WorkerMessage } from './protocol.js';
import { startThread, type EngineThread } from './thread.js';
import { engineWorkerScript } from './worker-script.js';

export interface EnginePoolOptions {
  /** Most worker threads (default: the number of cores). Each runs one job at a time. */
  size?: number;
  /** The engine (wasm bytes or a compiled WebAssembly.Module); default: the one setEngineSource set, else the package's. */
  wasm?: EngineSource;
  /**
   * Stop a worker that has been idle this long (ms). Default: never under Node, where an idle
   * worker does not keep the process alive; 1000 under Deno, whose Web Workers do — a script
   * then exits a second after its last job.
   */
  idleMs?: number;
}

/**
 * Hooks of a job run in a worker; they run on the host's thread. The checkpoint may return a
 * promise: the worker waits, writing nothing, until it settles.
 */
export type PoolJobOptions = JobHooks;

interface Job {
  id: number;
  request: JobRequest;
  options: PoolJobOptions;
  resolve(result: JobResult): void;
  reject(error: unknown): void;
  control?: Int32Array;
  /** Why the host stopped or cancelled the job (its checkpoint or progress callback threw). */
  hostError?: unknown;
  /** Set when a progress callback threw: the next checkpoint cancels. */
  cancelAtNext?: boolean;
  onAbort?: () => void;
}

interface Slot {
  thread: EngineThread;
  job: Job | null;
  idleTimer?: ReturnType<typeof setTimeout>;
}

const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== 'undefined';

function defaultSize(): number {
  const n = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  return Math.max(1, n || 1);
}

export class EnginePool implements JobRunner {
  readonly size: number;
  private readonly source: EngineSource | undefined;
  private readonly idleMs: number;
  /** The engine compiled from `source` (undefined: the process-wide engineModule()). */
  private module: unknown;
  private readonly slots: Slot[] = [];
  private readonly queue: Job[] = [];
  private nextId = 1;
  private closed = false;

  constructor(options: EnginePoolOptions = {}) {
    const size = options.size ?? defaultSize();
    if (!Number.isInteger(size) || size < 1 || size > 256) throw new CowError('ECOW_BAD_ARGUMENT', `engine pool size ${size} is not an integer from 1 to 256`);
    this.size = size;
    this.source = options.wasm;
    this.idleMs = options.idleMs ?? (isDeno ? 1000 : Infinity);
    if (!(this.idleMs >= 0)) throw new CowError('ECOW_BAD_ARGUMENT', `engine pool idleMs ${options.idleMs} is not a non-negative number`);
  }

  /** Jobs running in a worker now. */
  get running(): number {
    return this.slots.filter((s) => s.job).length;
  }

  /** Jobs waiting for a free worker. */
  get queued(): number {
    return this.queue.length;
  }

  /**
   * Run `request` in a worker. Progress, the checkpoint and cancellation (between steps) work as
   * for the in-process job; the error a job ends with is a CowError with its code. A worker that
   * dies meanwhile fails the job with ECOW_WORKER_DIED.
   */
  run(request: JobRequest, options: PoolJobOptions = {}): Promise<JobResult> {
    return new Promise<JobResult>((resolve, reject) => {
      if (this.closed) throw new CowError('ECOW_INVALID_STATE', 'the engine pool was closed');
      const parsed = parseJobRequest(request);
      if (options.signal?.aborted) throw new CowError('ECOW_CANCELLED', `${parsed.op} cancelled before it started`, { cause: options.signal.reason });
      if (this.source !== undefined) this.module ??= compileEngine(this.source);
      else engineModule(); // ECOW_ENGINE_LOAD here, not in a worker
      const job: Job = { id: this.nextId++, request: parsed, options, resolve, reject };
      if (options.signal) {
        // A queued job is dropped at once; a running one stops at its next checkpoint.
        const signal = options.signal;
        job.onAbort = () => {
          const at = this.queue.indexOf(job);
          if (at < 0) return this.raiseCancel(job);
          this.queue.splice(at, 1);
          this.settle(job, () => reject(new CowError('ECOW_CANCELLED', `${parsed.op} cancelled while waiting for an engine worker`, { cause: signal.reason })));
        };
        signal.addEventListener('abort', job.onAbort, { once: true });
      }
      this.queue.push(job);
      this.dispatch();
    });
  }

  /** Let running jobs finish, then stop the workers; queued jobs fail with ECOW_CANCELLED. */
  async close(): Promise<void> {
    this.closed = true;
    for (const job of this.queue.splice(0)) this.settle(job, () => job.reject(new CowError('ECOW_CANCELLED', `${job.request.op}: the engine pool was closed`)));
    while (this.slots.some((s) => s.job)) await new Promise((r) => setTimeout(r, 10));
    for (const s of this.slots.splice(0)) {
      clearTimeout(s.idleTimer);
      s.thread.terminate();
    }
  }

  /**
   * Stop every worker now, mid-job if need be: running jobs fail with ECOW_WORKER_DIED, and what
   * they wrote is what a crash at that instant leaves (consistent, by the engine's write order).
   * The pool stays usable; new workers start for the next jobs.
   */
  terminate(): void {
    for (const s of [...this.slots]) s.thread.terminate();
  }

  private dispatch(): void {
    while (this.queue.length) {
      let slot = this.slots.find((s) => s.job === null);
      if (!slot) {
        if (this.slots.length >= this.size) return;
        try {
          slot = this.spawn();
        } catch (e) {
          const job = this.queue.shift()!;
          this.settle(job, () => job.reject(e));
          continue;
        }
      }
      this.start(slot, this.queue.shift()!);
    }
  }

  private spawn(): Slot {
    const slot: Slot = { thread: null as unknown as EngineThread, job: null };
    slot.thread = startThread(engineWorkerScript(), {
      message: (m) => this.onMessage(slot, m),
      exit: (why) => this.onExit(slot, why),
    });
    slot.thread.post({ t: 'init', module: this.module ?? engineModule() });
    slot.thread.keepAlive(false);
    this.slots.push(slot);
    return slot;
  }

  private start(slot: Slot, job: Job): void {
    clearTimeout(slot.idleTimer);
    slot.job = job;
    job.control = new Int32Array(new SharedArrayBuffer(4 * CONTROL.words));
    if (job.options.signal?.aborted) this.raiseCancel(job);
    slot.thread.keepAlive(true);
    slot.thread.post({
      t: 'run',
      id: job.id,
      job: job.request,
      stepBytes: job.options.stepBytes,
      progress: job.options.onProgress !== undefined,
      // A progress callback may cancel or throw on what it saw: the worker then waits for it too.
      checkpoint: job.options.checkpoint !== undefined || job.options.onProgress !== undefined,
      guard: job.options.guardIo !== undefined,
      control: job.control.buffer as SharedArrayBuffer,
    });
  }

  private onMessage(slot: Slot, m: WorkerMessage): void {
    const job = slot.job;
    if (!job || job.id !== m.id) return;
    switch (m.t) {
      case 'progress':
        try {
          job.options.onProgress?.(m.done, m.total);
        } catch (e) {
          // As in-process: a throwing progress callback ends the job, keeping the work done.
          job.hostError ??= e;
          job.cancelAtNext = true;
          this.raiseCancel(job);
        }
        return;
      case 'checkpoint':
      case 'guard': {
        const answer = (verdict: number) => {
          Atomics.store(job.control!, CONTROL.verdict, verdict);
          Atomics.notify(job.control!, CONTROL.verdict);
        };
        const stop = (e: unknown) => {
          job.hostError ??= e;
          answer(VERDICT.stop);
        };
        const goOn = () => answer(job.cancelAtNext || job.options.signal?.aborted ? VERDICT.cancel : VERDICT.go);
        let pending: void | Promise<void>;
        try {
          pending = m.t === 'guard' ? job.options.guardIo?.() : job.options.checkpoint?.();
        } catch (e) {
          stop(e);
          return;
        }
        if (pending) pending.then(goOn, stop);
        else goOn();
        return;
      }
      case 'done':
        this.finish(slot, job, () => job.resolve(m.result));
        return;
      case 'failed': {
        // The host's own reason first (its checkpoint or progress callback threw); a cancel
        // carries the signal's reason as its cause, as in-process.
        const error = deserializeError(m.error);
        const reason = job.hostError ?? (error.code === 'ECOW_CANCELLED' ? cancelled(job, error) : error);
        this.finish(slot, job, () => job.reject(reason));
        return;
      }
    }
  }

  /** Ask a running job without a checkpoint to cancel before its next step (protocol.ts). */
  private raiseCancel(job: Job): void {
    if (job.control) Atomics.store(job.control, CONTROL.cancel, 1);
  }

  private onExit(slot: Slot, why: string): void {
    clearTimeout(slot.idleTimer);
    const at = this.slots.indexOf(slot);
    if (at >= 0) this.slots.splice(at, 1);
    const job = slot.job;
    slot.job = null;
    if (job) {
      const what = 'top' in job.request ? job.request.top : 'file' in job.request ? job.request.file : job.request.dst;
      this.settle(job, () => job.reject(new CowError('ECOW_WORKER_DIED', `the engine worker running ${job.request.op} of ${what} ${why}; the files are as a crash at that instant leaves them`)));
    }
    this.dispatch();
  }

  private finish(slot: Slot, job: Job, settle: () => void): void {
    slot.job = null;
    slot.thread.keepAlive(false);
    this.settle(job, settle);
    this.dispatch();
    if (slot.job === null && Number.isFinite(this.idleMs)) {
      // The thread's exit (onExit) takes it out of the pool.
      slot.idleTimer = setTimeout(() => {
        if (slot.job === null) slot.thread.terminate();
      }, this.idleMs);
      if (!isDeno) (slot.idleTimer as { unref?: () => void }).unref?.();
    }
  }

  private settle(job: Job, settle: () => void): void {
    if (job.onAbort) job.options.signal?.removeEventListener('abort', job.onAbort);
    settle();
  }
}

/** The worker's ECOW_CANCELLED, with the signal's reason as its cause (as the in-process job has). */
function cancelled(job: Job, error: CowError): CowError {
  return new CowError('ECOW_CANCELLED', error.message.replace(/^ECOW_CANCELLED: /, ''), { cause: job.options.signal?.reason });
}

let shared: EnginePool | undefined;

/** The pool the async API and the volume driver use unless given another (created on first use). */
export function defaultEnginePool(): EnginePool {
  shared ??= new EnginePool();
  return shared;
}
