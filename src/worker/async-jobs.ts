/**
 * The async API: engine jobs run in worker threads (EnginePool), so the caller's event loop stays
 * free. Same semantics as the synchronous functions of the same job (commitImage, rebaseImage,
 * …): same files written in the same order, same error codes; progress, checkpoint and
 * cancellation (an AbortSignal, honoured between engine steps) as JobOptions describes.
 */
import type { CheckOutcome, RepairMode } from '../image/check.js';
import type { CreateOptions } from '../image/create.js';
import type { ImageFormat } from '../image/types.js';
import type { JobRequest } from '../volume/job-request.js';
import { defaultEnginePool, type EnginePool, type PoolJobOptions } from './pool.js';

export interface AsyncJobOptions extends PoolJobOptions {
  /** The pool to run in (default: one shared pool, sized to the cores). */
  pool?: EnginePool;
}

export interface AsyncCommitOptions extends AsyncJobOptions {
  /** Commit down to this image of the chain (path); default: the top's backing file. Implies `keepTop`. */
  base?: string;
  /**
   * Leave the top image as it is after the commit, as `qemu-img commit -d` does (for a top that is
   * about to be deleted). Otherwise the top is emptied once the base is durable.
   */
  keepTop?: boolean;
}

export interface AsyncRebaseOptions extends AsyncJobOptions {
  /** Header only (qemu-img rebase -u). */
  unsafe?: boolean;
  backingFormat?: ImageFormat;
}

export interface AsyncStreamOptions extends AsyncJobOptions {
  /** Keep this image of the chain (path) as the new backing file; default: pull everything. */
  base?: string | null;
}

export interface AsyncConvertOptions extends AsyncJobOptions {
  /** Format of the source (probed when absent). */
  srcFormat?: ImageFormat;
  /** Output format (default raw). */
  format?: ImageFormat;
  size?: number;
  create?: Omit<CreateOptions, 'format' | 'size' | 'backingFile' | 'backingFormat'>;
  /** Store every cluster holding data compressed, as `qemu-img convert -c` (qcow2 output only). */
  compressed?: boolean;
}

export interface AsyncCheckOptions extends AsyncJobOptions {
  repair?: RepairMode;
  format?: ImageFormat;
}

async function run(request: JobRequest, options: AsyncJobOptions): Promise<unknown> {
  const { pool, ...hooks } = options;
  return (pool ?? defaultEnginePool()).run(request, hooks);
}

/** `qemu-img commit` in a worker (commitImage). */
export async function commit(top: string, options: AsyncCommitOptions = {}): Promise<void> {
  await run({ op: 'commit', top, base: options.base, keepTop: options.keepTop }, options);
}

/** `qemu-img rebase` in a worker (rebaseImage); `newBacking` '' removes the backing file. */
export async function rebase(file: string, newBacking: string, options: AsyncRebaseOptions = {}): Promise<void> {
  await run({ op: 'rebase', file, newBacking, unsafe: options.unsafe, backingFormat: options.backingFormat }, options);
}

/** Stream (blockRebase) in a worker (streamImage). */
export async function stream(file: string, options: AsyncStreamOptions = {}): Promise<void> {
  await run({ op: 'stream', file, base: options.base }, options);
}

/** `qemu-img convert` of the chain of `src` into a new image `dst`, in a worker (convertImage). */
export async function convert(src: string, dst: string, options: AsyncConvertOptions = {}): Promise<void> {
  const { srcFormat, format, size, create, compressed } = options;
  await run({ op: 'convert', src, dst, srcFormat, format, size, create, compressed }, options);
}

/** `qemu-img check [-r leaks|all]` in a worker (checkImage). */
export async function check(file: string, options: AsyncCheckOptions = {}): Promise<CheckOutcome> {
  return (await run({ op: 'check', file, repair: options.repair, format: options.format }, options)) as CheckOutcome;
}

/** `qemu-img create` in a worker (createImage). */
export async function create(file: string, options: CreateOptions & { pool?: EnginePool; signal?: AbortSignal }): Promise<void> {
  const { pool, signal, ...createOptions } = options;
  await run({ op: 'create', file, options: createOptions }, { pool, signal });
}
