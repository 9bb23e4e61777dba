import { CowError } from '../errors.js';
import type { Engine } from '../engine/engine.js';
import { abandonWrites, type Image } from './image.js';

/** Progress of a long operation: guest bytes covered so far of the total. */
export type ProgressCallback = (done: number, total: number) => void;

export interface JobOptions {
  onProgress?: ProgressCallback;
  /** Cancels between steps; whatever was written stays consistent (a re-run finishes it). */
  signal?: AbortSignal;
  /** Guest bytes per engine step (default 64 MiB): smaller steps report progress more often. */
  stepBytes?: number;
  /**
   * Called before every step. Throwing stops the job there *without writing anything more*: the
   * images the job writes are abandoned (see abandonWrites in image.ts), unlike a cancel, which keeps
   * and flushes the work done. The volume driver verifies and renews its lock here, so a job
   * never writes on after its lock was taken over.
   */
  checkpoint?: () => void;
  /** Run before every write the job issues (see FileBackend.guard); the driver's lock check. */
  guardIo?: () => void;
}

const DEFAULT_STEP = 64 << 20;

/**
 * Drive an engine job to completion in steps, synchronously. Between steps it reports progress,
 * honours cancellation and runs the checkpoint. `writes`: the images the job writes (abandoned
 * when the checkpoint throws). The job is disposed in every case.
 */
export function runJob(engine: Engine, start: () => number, options: JobOptions = {}, writes: readonly Image[] = []): void {
  const id = engine.call(() => start());
  try {
    const total = engine.call((e) => e.jobTotal(id));
    for (;;) {
      // The checkpoint first: a lost lock wins over a cancel (nothing more is written then, not
      // even the flush a cancel does), and a checkpoint may itself cancel (the engine worker asks
      // its host there whether to go on).
      try {
        options.checkpoint?.();
      } catch (e) {
        for (const img of writes) abandonWrites(img, e as Error);
        throw e;
      }
      if (options.signal?.aborted) throw new CowError('ECOW_CANCELLED', `operation cancelled at ${engine.call((e) => e.jobCursor(id))} of ${total} bytes`, { cause: options.signal.reason });
      const finished = engine.call((e) => e.jobStep(id, options.stepBytes ?? DEFAULT_STEP)) === 1;
      options.onProgress?.(engine.call((e) => e.jobCursor(id)), total);
      if (finished) return;
    }
  } finally {
    engine.call((e) => e.jobDispose(id));
    engine.collect();
  }
}
