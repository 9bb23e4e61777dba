/**
 * An engine job as plain data: what a worker thread needs to run it on its own. Only file names
 * and options travel between threads; the worker opens the files itself, so no image data ever
 * crosses. The same request runs in-process (runJobRequest) or in an engine worker (a JobRunner:
 * src/worker's EnginePool). It lives here, below the workers, because the volume driver's jobs
 * carry its backing-name and format policy, which the worker rebuilds from VolumeFiles.
 */
import * as z from 'zod';
import { openImage, type BackingFormatPolicy, type BackingResolver, type KeySecrets } from '../image/open-chain.js';
import { CowError } from '../errors.js';
import { checkImage, type CheckOutcome } from '../image/check.js';
import { commitImage } from '../image/commit.js';
import { convertImage } from '../image/convert.js';
import { createImage, type CreateOptions } from '../image/create.js';
import type { JobOptions } from '../image/job.js';
import { imageFormatSchema } from '../image/format-schema.js';
import { lazy } from '../lazy.js';
import { rebaseImage, streamImage } from '../image/rebase.js';
import { MAX_CHAIN_DEPTH, VolumeFiles } from './volume-files.js';

/** The schemas of a job request, built at first use (lazy.ts): a command that runs no job never builds them. */
const schemas = lazy(() => {
  const Format = imageFormatSchema();
  const Path = z.string().min(1).max(4096);

  /**
   * The volume driver's strict backing-name policy (VolumeFiles.resolver), named by what it is built
   * from: a resolver function cannot cross threads, its inputs can.
   */
  const PolicySchema = z
    .object({ dir: Path, volumeId: z.string().min(1).max(255), baseFormat: Format.optional(), probeFormat: z.boolean().optional() })
    .strict();

  /**
   * The key secret of the chain's encrypted images (one for all, as a volume's): bytes, which
   * cross to a worker thread by structured clone and are never printed (no message repeats them).
   */
  const KeySecret = z
    .custom<Uint8Array>((v) => v instanceof Uint8Array, 'the key secret must be bytes (a Uint8Array)')
    .refine((s) => s.length > 0, 'the key secret must not be empty')
    .optional();

  const request = z.discriminatedUnion('op', [
    z
      .object({
        op: z.literal('commit'),
        top: Path,
        format: Format.optional(),
        base: Path.optional(),
        keepTop: z.boolean().optional(),
        policy: PolicySchema.optional(),
        keySecret: KeySecret,
      })
      .strict(),
    z
      .object({
        op: z.literal('rebase'),
        file: Path,
        newBacking: z.string().max(1023),
        unsafe: z.boolean().optional(),
        backingFormat: Format.optional(),
        policy: PolicySchema.optional(),
        keySecret: KeySecret,
      })
      .strict(),
    z.object({ op: z.literal('stream'), file: Path, base: Path.nullable().optional(), policy: PolicySchema.optional(), keySecret: KeySecret }).strict(),
    z
      .object({
        op: z.literal('convert'),
        src: Path,
        dst: Path,
        srcFormat: Format.optional(),
        format: Format.optional(),
        size: z.number().int().nonnegative().max(2 ** 53).optional(),
        // Validated where they are used (createImage's schema), in the thread that runs the job.
        create: z.record(z.string(), z.unknown()).optional(),
        compressed: z.boolean().optional(),
        policy: PolicySchema.optional(),
        /** Of the source chain (the output's, if encrypted, is in `create.encrypt`). */
        keySecret: KeySecret,
      })
      .strict(),
    z.object({ op: z.literal('check'), file: Path, repair: z.enum(['leaks', 'all']).optional(), format: Format.optional() }).strict(),
    z.object({ op: z.literal('create'), file: Path, options: z.record(z.string(), z.unknown()) }).strict(),
  ]);
  return { policy: PolicySchema, request };
});
export type BackingPolicy = z.infer<ReturnType<typeof schemas>['policy']>;

export type JobRequest = z.infer<ReturnType<typeof schemas>['request']>;

type ConvertCreate = Omit<CreateOptions, 'format' | 'size' | 'backingFile' | 'backingFormat'>;

/** What a job returns: the check's outcome, nothing for the others. */
export type JobResult = CheckOutcome | null;

/** Hooks of a job; they run on the caller's thread wherever the job itself runs. */
export interface JobHooks extends Pick<JobOptions, 'signal' | 'onProgress' | 'stepBytes'> {
  /**
   * Called before every step, as JobOptions.checkpoint (throwing stops the job without writing
   * anything more). A runner in another thread may let it return a promise and wait for it.
   */
  checkpoint?: () => void | Promise<void>;
  /**
   * Called before every write the job issues (at most once per 10 ms: FileBackend.guard), as
   * JobOptions.guardIo. A runner in another thread asks its host, which runs it there.
   */
  guardIo?: () => void | Promise<void>;
}

/** Runs jobs somewhere else than the caller's thread (an EnginePool), or around them in it (the CLI). */
export interface JobRunner {
  run(request: JobRequest, hooks?: JobHooks): Promise<JobResult>;
  /**
   * Present when this runner runs its jobs in the caller's thread: run the synchronous engine job
   * `job` there as run() would run one (the CLI restores the signals' default action around it).
   * An operation then runs its job on the images it already has open (VolumeChain) instead of
   * sending a request that opens them again.
   */
  here?<T>(job: () => T): Promise<T>;
}

/** The request, validated (ECOW_BAD_ARGUMENT naming the offending field). */
export function parseJobRequest(request: unknown): JobRequest {
  const r = schemas().request.safeParse(request);
  if (!r.success) throw new CowError('ECOW_BAD_ARGUMENT', `invalid job: ${r.error.issues.map((i) => `${i.path.join('.') || '(job)'}: ${i.message}`).join('; ')}`);
  return r.data;
}

/** The volume's resolver and format policy, rebuilt from their inputs (none: the defaults). */
function keySecretsOf(secret: Uint8Array | undefined): KeySecrets | undefined {
  return secret && (() => secret);
}

function volumePolicy(policy: BackingPolicy | undefined): { resolveBacking?: BackingResolver; formatOf?: BackingFormatPolicy } {
  if (!policy) return {};
  const files = new VolumeFiles(policy.dir, policy.volumeId, undefined, { known: policy.baseFormat, probe: policy.probeFormat });
  return { resolveBacking: files.resolver, formatOf: files.formatPolicy };
}

/**
 * What runs before a job opens anything for writing: the checkpoint, then the cancel (a job run
 * on images the caller already has open starts with this too, as runJobRequest does).
 */
export function beforeJob(op: JobRequest['op'], hooks: JobOptions): void {
  hooks.checkpoint?.();
  if (hooks.signal?.aborted) throw new CowError('ECOW_CANCELLED', `${op} cancelled before it started`, { cause: hooks.signal.reason });
}

/**
 * Run `request` here, synchronously, with the job hooks (progress, cancel, checkpoint). The
 * checkpoint runs once before anything is opened for writing, and then before every engine step.
 */
export function runJobRequest(request: JobRequest, hooks: JobOptions = {}): JobResult {
  beforeJob(request.op, hooks);
  switch (request.op) {
    case 'commit':
      commitImage(request.top, { ...hooks, base: request.base, keepTop: request.keepTop, format: request.format, ...volumePolicy(request.policy), keySecrets: keySecretsOf(request.keySecret) });
      return null;
    case 'rebase':
      rebaseImage(request.file, request.newBacking, {
        ...hooks,
        unsafe: request.unsafe,
        backingFormat: request.backingFormat,
        resolveBacking: volumePolicy(request.policy).resolveBacking,
        keySecrets: keySecretsOf(request.keySecret),
      });
      return null;
    case 'stream':
      streamImage(request.file, { ...hooks, base: request.base, resolveBacking: volumePolicy(request.policy).resolveBacking, keySecrets: keySecretsOf(request.keySecret) });
      return null;
    case 'convert': {
      const src = openImage(request.src, { format: request.srcFormat, ...volumePolicy(request.policy), maxDepth: request.policy ? MAX_CHAIN_DEPTH : undefined, keySecrets: keySecretsOf(request.keySecret) });
      try {
        convertImage(src, request.dst, { ...hooks, format: request.format, size: request.size, create: request.create as ConvertCreate, compressed: request.compressed });
      } finally {
        src.close();
      }
      return null;
    }
    case 'check':
      return checkImage(request.file, { repair: request.repair, format: request.format });
    case 'create':
      createImage(request.file, request.options as CreateOptions, hooks);
      return null;
  }
}
