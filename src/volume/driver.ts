/**
 * The volume driver: Cinder's remotefs snapshot semantics (docs/volume-semantics.md) on one
 * volume directory, with qcow2 work done in-process by the engine. Every operation holds the
 * volume's lock (lock.ts) and first finishes or undoes whatever a crash interrupted (recover.ts).
 */
import { nodeCrypto } from '../load-on-use.js';
import * as fsSync from 'node:fs';
import path from 'node:path';
import * as z from 'zod';
import { lazy } from '../lazy.js';
import { baseName, validateSnapshotId, validateVolumeId } from './names.js';
import { CowError, isCowError } from '../errors.js';
import type { ProgressCallback } from '../image/job.js';
import type { ImageFormat } from '../image/types.js';
import { createFileAtomic, syncDir } from './atomic-file.js';
import type { DriverStep, OperationContext } from './context.js';
import { createSnapshot, type CreateSnapshotOptions, type CreateSnapshotResult } from './create-snapshot.js';
import { deleteSnapshot, type DeleteSnapshotOptions, type DeleteSnapshotResult } from './delete-snapshot.js';
import { flattenSnapshot, type FlattenOptions, type FlattenResult } from './flatten.js';
import { resolveFileModes, type FileModes, type SecureFilePermissions } from './file-modes.js';
import { formatRecordName, pinBaseFormat, readFormatRecord, writeFormatRecord } from './format-record.js';
import { fsck, type FsckOptions, type FsckReport } from './fsck.js';
import type { Hypervisor } from './hypervisor.js';
import { readJournal, type Journal } from './journal.js';
import type { VolumeCoordinator, VolumeLockHandle } from './coordination.js';
import { isLockAccess, shareLease, type VolumeLockOptions } from './lock.js';
import { recover } from './recover.js';
import { runJobRequest, type JobRunner } from './job-request.js';
import { checkSize } from './size.js';
import { checkStatus, isAttached, type VolumeStatus } from './status.js';
import { VolumeFiles, type ChainLink } from './volume-files.js';

/** How a `VolumeDriver` works on its share. Only `dir` is required. */
export interface VolumeDriverOptions {
  /** The volume directory (one share). */
  dir: string;
  /** Nova's assisted snapshots, for `in-use` volumes; without it they fail with ECOW_HYPERVISOR_UNAVAILABLE. */
  hypervisor?: Hypervisor;
  /** The share lease's options (when `coordination` is not given). */
  lock?: VolumeLockOptions;
  /**
   * What keeps operations on one volume apart (coordination.ts): the share lease (default,
   * `shareLease(lock)`) or etcd (`etcdCoordinator()`, for several hosts). The caller closes it.
   */
  coordination?: VolumeCoordinator;
  /** Guest bytes per engine step of long jobs (commit, convert). */
  stepBytes?: number;
  /**
   * The base image's format (`volume-<vol>`), as Cinder passes the format it stored. Optional
   * when the volume was created by this driver (which records it); must agree with the record
   * (ECOW_FORMAT_CONFLICT). Never guessed: a base nothing speaks for is ECOW_FORMAT_UNKNOWN.
   */
  baseFormat?: ImageFormat;
  /** Guess the base's format from its bytes when nothing says it (dangerous for raw; opt-in). */
  probeFormat?: boolean;
  /**
   * Cinder's `nas_secure_file_permissions`: new files get mode 660 (and a new overlay its backing
   * file's owner and group) when true, 666 when false; `auto` (default) decides per share as
   * Cinder does (file-modes.ts).
   */
  secureFilePermissions?: SecureFilePermissions;
  /** Warnings (e.g. a format about to be probed); default: none printed. */
  onWarning?: (message: string) => void;
  /**
   * What an operation is doing that its caller would otherwise wait through in silence: waiting
   * for the lock (`waiting for a stale lock (N s)`), taking over a lock whose holder is gone,
   * finishing an interrupted operation first. Default: none printed (the CLI prints them).
   */
  onNotice?: (message: string) => void;
  /**
   * Interrupts every operation of this driver (the CLI aborts it on SIGINT/SIGTERM): one waiting
   * for the lock stops waiting; a running one stops before its next change with ECOW_CANCELLED
   * and releases the lock. A snapshot create or delete that had journaled is finished (or undone)
   * by the next operation or fsck, as after a crash.
   */
  signal?: AbortSignal;
  /**
   * Where engine jobs (commit, convert, image creation) run. Default: in this thread,
   * synchronously (scripts, the CLI: no thread to start). A service passes an engine pool
   * (`defaultEnginePool()` or its own EnginePool): its jobs then run in worker threads, the
   * host's event loop stays free, and the lock is renewed while a job copies.
   */
  jobs?: JobRunner;
  /**
   * Encrypted volumes (Cinder's encrypted volume types: every image of the chain a LUKS qcow2,
   * all opened by the volume's one secret). Without it, an operation that reads, writes or
   * creates images of an encrypted volume fails with ECOW_KEY_REQUIRED before changing anything.
   */
  encryption?: VolumeEncryption;
  /** Test hook: called at each named point of create/delete, once that point is durable. */
  onStep?: (step: DriverStep) => void;
}

/** Where the driver gets volumes' key secrets, and how it keys the images it creates. */
export interface VolumeEncryption {
  /**
   * The key secret (the LUKS passphrase, as bytes) of volume `volumeId`, as Cinder gets it from
   * its key manager (Barbican) by the volume's encryption key id; undefined when the volume has
   * none. Asked once at the start of every operation on the volume (and, for a clone, for the
   * new volume). The bytes are never written to any file, message or log; a secret that opens
   * no key slot of an image is ECOW_BAD_SECRET.
   */
  keySecret: (volumeId: string) => Uint8Array | undefined | Promise<Uint8Array | undefined>;
  /**
   * How long PBKDF2 takes to open the key slot of each image the driver encrypts, in ms (qemu's
   * encrypt.iter-time; default 2000, as qemu and Cinder). Every open of such an image by anyone
   * else (qemu, the guest) pays it once.
   */
  iterTimeMs?: number;
}

const VolumeEncryptionSchema = lazy(() =>
  z
    .object({
      keySecret: z.custom<VolumeEncryption['keySecret']>((v) => typeof v === 'function', 'keySecret must be a function (volumeId) => Uint8Array | undefined'),
      iterTimeMs: z.number().int().positive().max(600_000).optional(),
    })
    .strict(),
);

/** What `keySecret(volumeId)` returned, checked: bytes, or undefined for none. Never echoed. */
const KeySecretResultSchema = lazy(() =>
  z
    .custom<Uint8Array>((v) => v instanceof Uint8Array, 'not bytes (a Uint8Array) or undefined')
    .refine((v) => v.length > 0, 'empty')
    .optional(),
);

/** Options every long operation takes. */
export interface OperationOptions {
  /** Cancels this operation (between engine steps; ECOW_CANCELLED), as the driver's own `signal` does for all. */
  signal?: AbortSignal;
  /** Progress of the operation's engine job (a commit, a copy): guest bytes done of the total. */
  onProgress?: ProgressCallback;
}

/** Options of `createVolume`. */
export interface CreateVolumeOptions {
  /** The base image's format (default raw; qcow2 when encrypted), recorded in `volume-<vol>.format`. */
  format?: ImageFormat;
  /**
   * A LUKS-encrypted volume (qcow2 with encrypt.format=luks, as Cinder creates for an encrypted
   * volume type), keyed by `encryption.keySecret(volumeId)` (ECOW_KEY_REQUIRED without one).
   */
  encrypted?: boolean;
}

/** Options of `cloneVolume`: the new volume's format and size, and the source's status. */
export interface CloneVolumeOptions extends FlattenOptions, OperationOptions {
  /**
   * The source volume's status (the temporary snapshot goes through the hypervisor when `in-use`).
   * The clone of an encrypted volume is encrypted too (qcow2, the default format then), keyed by
   * `encryption.keySecret(newVolumeId)`.
   */
  status: VolumeStatus;
  /** Directory of the new volume (default: the source's). */
  targetDir?: string;
}

/** What `volumeInfo` reports: the files, the snapshots, and any unfinished operation. */
export interface VolumeDescription {
  /** The volume's id (a uuid). */
  volumeId: string;
  /** The active file (bare name). */
  active: string;
  /** Snapshot id → file. */
  snapshots: Record<string, string>;
  /** The active chain, top first: names and formats as the headers record them. */
  chain: ChainLink[];
  /** Whether an info file exists (none: no snapshot was ever taken). */
  infoFile: boolean;
  /** An interrupted operation that the next operation (or fsck) will finish or undo. */
  pending: Journal | null;
}

/** What a hypervisor needs to attach the volume (Cinder's connection info for remote-fs). */
export interface AttachInfo {
  /** The volume's id (a uuid). */
  volumeId: string;
  /** The file the guest opens (bare name in the volume directory) and its format. */
  activeFile: string;
  format: ImageFormat;
}

/**
 * Cinder's remote-filesystem volume driver on one share: volumes as `volume-<uuid>` files,
 * snapshots as qcow2 overlays, `volume-<uuid>.info` kept in step. Detached volumes (`available`,
 * …) are worked on with this package's engine; attached ones (`in-use`) through the
 * `hypervisor` (Nova's assisted snapshots). Every operation holds the volume's lock and journals
 * what it changes, so an interrupted one is finished or undone by the next operation or `fsck`.
 * One driver serves any number of volumes and concurrent calls.
 */
export class VolumeDriver {
  /** The share's directory, as given. */
  readonly dir: string;
  private readonly options: VolumeDriverOptions;
  private readonly coordination: VolumeCoordinator;
  /** Decided once per driver, at first use (Cinder decides at start-up). */
  private modes: Promise<FileModes> | undefined;

  constructor(options: VolumeDriverOptions) {
    if (options.encryption !== undefined) {
      const r = VolumeEncryptionSchema().safeParse(options.encryption);
      if (!r.success) throw new CowError('ECOW_BAD_ARGUMENT', `invalid encryption option: ${r.error.issues.map((i) => `${i.path.join('.') || 'encryption'}: ${i.message}`).join('; ')}`);
    }
    this.options = options;
    this.dir = options.dir;
    this.coordination = options.coordination ?? shareLease(options.lock);
  }

  private fileModes(): Promise<FileModes> {
    this.modes ??= resolveFileModes(this.dir, this.options.secureFilePermissions ?? 'auto');
    return this.modes;
  }

  /** Run `fn` holding `volumeId`'s lock, with an operation context. */
  private run<T>(volumeId: string, op: OperationOptions, fn: (ctx: OperationContext) => Promise<T>): Promise<T> {
    const interrupt = this.options.signal;
    const waitSignal = op.signal && interrupt ? AbortSignal.any([op.signal, interrupt]) : (op.signal ?? interrupt);
    return this.coordination.withLock(
      this.dir,
      volumeId,
      (lock) => {
        // The one check: every change verifies (and renews) the lock first, and stops once the
        // driver is interrupted; so does every step of an engine job, and every write it issues.
        const guard = (): void => {
          lock.assertHeld();
          if (interrupt?.aborted) throw interrupted(volumeId, interrupt.reason);
        };
        return this.withContext(volumeId, op, lock, waitSignal, guard, fn);
      },
      { signal: waitSignal, onNotice: this.options.onNotice },
    );
  }

  /**
   * Run a read-only `fn` (it changes nothing in the volume directory) under the lock, or without
   * it when the lock cannot be taken because the directory is not writable for us (a read-only
   * mount or directory): nothing of ours can change the volume then, and an operation of
   * someone who may write there can only be seen half-done as a crash would leave it (the
   * journal says so). Any change attempted without the lock fails with ECOW_ACCESS.
   */
  private async inspect<T>(volumeId: string, op: OperationOptions, fn: (ctx: OperationContext) => Promise<T>): Promise<T> {
    try {
      return await this.run(volumeId, op, fn);
    } catch (e) {
      if (!isCowError(e, 'ECOW_ACCESS') || !isLockAccess(e)) throw e;
    }
    const interrupt = this.options.signal;
    const signal = op.signal && interrupt ? AbortSignal.any([op.signal, interrupt]) : (op.signal ?? interrupt ?? new AbortController().signal);
    const lock = {
      signal,
      assertHeld: () => {
        throw new CowError('ECOW_ACCESS', `volume ${volumeId}: ${this.dir} is not writable, so it was read without the lock; nothing in it may change`);
      },
    };
    // No lock to check: a job (a copy out of the volume) stops only when interrupted, and the
    // volume's files refuse every change (the lock handle's assertHeld).
    const guard = (): void => {
      if (interrupt?.aborted) throw interrupted(volumeId, interrupt.reason);
    };
    return this.withContext(volumeId, op, lock, signal, guard, fn, { readOnly: true });
  }

  /**
   * An operation context for `fn`, whose `guard` runs before every change to the volume and every
   * step and write of an engine job. `readOnly`: read without the lock; the volume's files refuse
   * every change (ECOW_ACCESS, from the lock handle).
   */
  private async withContext<T>(
    volumeId: string,
    op: OperationOptions,
    lock: VolumeLockHandle,
    waitSignal: AbortSignal | undefined,
    guard: () => void,
    fn: (ctx: OperationContext) => Promise<T>,
    { readOnly = false } = {},
  ): Promise<T> {
    const signal = AbortSignal.any([lock.signal, ...(waitSignal ? [waitSignal] : [])]);
    const onStep = this.options.onStep;
    const known = pinBaseFormat(volumeId, this.options.baseFormat, await readFormatRecord(this.dir, volumeId));
    const filesGuard = readOnly ? lock.assertHeld : guard;
    const files = new VolumeFiles(this.dir, volumeId, filesGuard, { known, probe: this.options.probeFormat, warn: this.options.onWarning }, () => this.fileModes());
    files.fence = lock.fence;
    const job = { signal, onProgress: op.onProgress, stepBytes: this.options.stepBytes, checkpoint: guard, guardIo: guard };
    files.setKeySecret(await this.keySecret(volumeId));
    files.encryptIterTimeMs = this.options.encryption?.iterTimeMs;
    const jobs = this.options.jobs;
    return fn({
      files,
      hypervisor: this.options.hypervisor,
      lock,
      signal,
      guard,
      job,
      jobsInThread: jobs === undefined || jobs.here !== undefined,
      runHere: async (fn) => (jobs?.here ? jobs.here(fn) : fn()),
      runJob: async (request, options = {}) => {
        const hooks = { ...job, ...options };
        return jobs ? jobs.run(request, hooks) : runJobRequest(request, hooks);
      },
      step: onStep ? (s) => onStep(s) : () => {},
    });
  }

  /** Volume `volumeId`'s key secret from `encryption.keySecret` (undefined: none), checked. */
  private async keySecret(volumeId: string): Promise<Uint8Array | undefined> {
    const provider = this.options.encryption?.keySecret;
    if (!provider) return undefined;
    const r = KeySecretResultSchema().safeParse(await provider(volumeId));
    if (!r.success) throw new CowError('ECOW_BAD_ARGUMENT', `encryption.keySecret(${volumeId}) returned a value that is ${r.error.issues.map((i) => i.message).join('; ')}`);
    return r.data;
  }

  /**
   * Finish or undo what a crash, a kill or a full disk interrupted (recover.ts) before `what`,
   * saying so: the caller asked for something else and would otherwise wonder at the wait.
   */
  private async recoverFirst(ctx: OperationContext, status: VolumeStatus, what: string) {
    const pending = await readJournal(ctx.files);
    if (pending) {
      this.options.onNotice?.(
        `volume ${ctx.files.volumeId}: finishing the pending ${pending.op === 'delete-snapshot' ? 'delete' : 'create'} of snapshot ${pending.snapshot} (interrupted earlier: ${ctx.files.journalName}) before ${what}`,
      );
    }
    return recover(ctx, status);
  }

  /**
   * A new volume: `volume-<vol>`, raw (default) or qcow2, `size` bytes, reading as zeros; its
   * format is recorded (`volume-<vol>.format`) so that it is never guessed later.
   */
  async createVolume(volumeId: string, size: number, options: CreateVolumeOptions = {}): Promise<{ file: string; format: ImageFormat; size: number }> {
    checkSize(size, 'volume size');
    const format = options.format ?? this.options.baseFormat ?? (options.encrypted ? 'qcow2' : 'raw');
    if (format !== 'raw' && format !== 'qcow2') throw new CowError('ECOW_UNKNOWN_FORMAT', `format "${String(format)}" is not raw or qcow2`);
    if (options.encrypted && format !== 'qcow2') throw new CowError('ECOW_BAD_ARGUMENT', `volume ${volumeId}: an encrypted volume is qcow2 (LUKS inside qcow2), not ${format}`);
    if (this.options.baseFormat !== undefined && this.options.baseFormat !== format) {
      throw new CowError('ECOW_FORMAT_CONFLICT', `volume ${volumeId}: creating it ${format}, but the driver's base format is ${this.options.baseFormat}`);
    }
    return this.run(volumeId, {}, async ({ files, runJob }) => {
      const encrypt = options.encrypted ? files.encryptOptions(files.base) : undefined; // ECOW_KEY_REQUIRED before any file
      if ((await files.readInfo()).exists) throw new CowError('ECOW_EXISTS', `volume ${volumeId} already has an info file in ${this.dir}`);
      if (files.exists(files.base)) throw new CowError('ECOW_EXISTS', `cannot create ${files.path(files.base)}: EEXIST`);
      // The record first: a crash before the image leaves a record that the next create replaces.
      const { mode } = await files.fileModes();
      await writeFormatRecord(this.dir, volumeId, format, files.guard, mode);
      await createFileAtomic(
        this.dir,
        files.base,
        files.newFilePrefix,
        async (temp) => {
          await runJob({ op: 'create', file: temp, options: { format, size, ...(encrypt ? { encrypt } : {}) } });
        },
        mode,
      );
      return { file: files.base, format, size };
    });
  }

  /** Take snapshot `snapshotId` (through the hypervisor when `in-use`). */
  async createSnapshot(volumeId: string, snapshotId: string, options: CreateSnapshotOptions): Promise<CreateSnapshotResult> {
    return this.run(volumeId, {}, async (ctx) => {
      const status = checkStatus('createSnapshot', options.status, volumeId);
      ctx.files.readLocks = !isAttached(status);
      await this.recoverFirst(ctx, status, `creating snapshot ${snapshotId}`);
      return createSnapshot(ctx, snapshotId, { ...options, status });
    });
  }

  /**
   * Delete snapshot `snapshotId`: commit down (detached) or through the hypervisor (`in-use`).
   * Unknown id: success (`not-found`). Re-running a delete that a crash interrupted finishes it.
   */
  async deleteSnapshot(volumeId: string, snapshotId: string, options: DeleteSnapshotOptions & OperationOptions): Promise<DeleteSnapshotResult> {
    return this.run(volumeId, options, async (ctx) => {
      const status = checkStatus('deleteSnapshot', options.status, volumeId);
      ctx.files.readLocks = !isAttached(status);
      const recovered = await this.recoverFirst(ctx, status, `deleting snapshot ${snapshotId}`);
      const result = await deleteSnapshot(ctx, snapshotId, { status });
      const finishedNow = recovered?.journal.op === 'delete-snapshot' && recovered.journal.snapshot === snapshotId;
      return finishedNow && result.outcome === 'not-found' ? { ...result, outcome: 'deleted' } : result;
    });
  }

  /** A new image `outFile` (must not exist) holding snapshot `snapshotId`'s content. */
  async createVolumeFromSnapshot(volumeId: string, snapshotId: string, outFile: string, options: FlattenOptions & OperationOptions = {}): Promise<FlattenResult> {
    validateSnapshotId(snapshotId);
    return this.inspect(volumeId, options, (ctx) => flattenSnapshot(ctx, snapshotId, outFile, options));
  }

  /**
   * Clone into new volume `newVolumeId` (`volume-<new>` in `targetDir`): take a temporary
   * snapshot `tmp-snap-<uuid>`, flatten its content, delete it (also when the flatten fails).
   */
  async cloneVolume(volumeId: string, newVolumeId: string, options: CloneVolumeOptions): Promise<FlattenResult & { volumeId: string }> {
    validateVolumeId(newVolumeId);
    if (newVolumeId === volumeId) throw new CowError('ECOW_BAD_ARGUMENT', `a volume cannot be cloned onto itself (${volumeId})`);
    return this.run(volumeId, options, async (ctx) => {
      const status = checkStatus('cloneVolume', options.status, volumeId);
      ctx.files.readLocks = !isAttached(status);
      await this.recoverFirst(ctx, status, `cloning into ${newVolumeId}`);
      // The temporary snapshot: through the hypervisor when attached, else as a detached volume's.
      const tmpStatus = isAttached(status) ? 'in-use' : 'available';
      const targetDir = options.targetDir ?? this.dir;
      const outFile = path.join(targetDir, baseName(newVolumeId));
      // What can be checked before the temporary snapshot exists is checked first.
      const { info } = await ctx.files.readInfo();
      const chain = ctx.files.chain(info.active);
      const [top] = chain;
      const encrypted = chain.some((l) => l.encrypted);
      const format = options.format ?? (encrypted ? 'qcow2' : 'raw');
      if (format !== 'raw' && format !== 'qcow2') throw new CowError('ECOW_UNKNOWN_FORMAT', `format "${String(format)}" is not raw or qcow2`);
      let newKey: Uint8Array | undefined;
      if (encrypted) {
        ctx.files.needKey(chain, `clone of volume ${volumeId}`);
        if (format !== 'qcow2') throw new CowError('ECOW_BAD_ARGUMENT', `volume ${volumeId} is encrypted: its clone is encrypted qcow2, not ${format}`);
        newKey = await this.keySecret(newVolumeId);
        if (!newKey) throw new CowError('ECOW_KEY_REQUIRED', `clone of encrypted volume ${volumeId}: no key secret was given for the new volume ${newVolumeId} (encryption.keySecret); nothing was changed`);
      }
      if (fsSync.existsSync(outFile)) throw new CowError('ECOW_EXISTS', `volume ${newVolumeId} already exists (${outFile})`);
      if (options.size !== undefined && checkSize(options.size, 'new volume size') < top.virtualSize) {
        throw new CowError('ECOW_BAD_ARGUMENT', `size ${options.size} is smaller than volume ${volumeId} (${top.virtualSize} bytes)`);
      }
      // The new volume's format record first, as createVolume does; removed again on failure.
      await writeFormatRecord(targetDir, newVolumeId, format, undefined, (await ctx.files.fileModes()).mode);
      const tmp = `tmp-snap-${nodeCrypto().randomUUID()}`;
      let result: FlattenResult;
      try {
        await createSnapshot(ctx, tmp, { status: tmpStatus });
        try {
          result = await flattenSnapshot(ctx, tmp, outFile, { format, size: options.size }, newKey);
        } catch (e) {
          await deleteSnapshot(ctx, tmp, { status: tmpStatus }).catch(() => {}); // fsck deletes a leftover tmp-snap
          throw e;
        }
      } catch (e) {
        if (!fsSync.existsSync(outFile)) await fsSync.promises.unlink(path.join(targetDir, formatRecordName(newVolumeId))).catch(() => {});
        throw e;
      }
      await deleteSnapshot(ctx, tmp, { status: tmpStatus });
      return { ...result, volumeId: newVolumeId };
    });
  }

  /**
   * Grow the active image to `size` bytes (with snapshots, the active overlay: its backing files
   * read as zeros past their end). Refused while attached, as Cinder does; the new size is read
   * back and verified.
   */
  async extendVolume(volumeId: string, size: number, options: { status: VolumeStatus }): Promise<{ file: string; size: number }> {
    checkSize(size, 'new size');
    return this.run(volumeId, {}, async (ctx) => {
      const status = checkStatus('extendVolume', options.status, volumeId);
      ctx.files.readLocks = !isAttached(status);
      await this.recoverFirst(ctx, status, 'extending the volume');
      const { files } = ctx;
      const { info } = await files.readInfo();
      const img = files.open(info.active, { writable: true });
      try {
        if (size < img.virtualSize) throw new CowError('ECOW_BAD_ARGUMENT', `volume ${volumeId} is ${img.virtualSize} bytes; shrinking to ${size} is not supported`);
        img.grow(size);
      } finally {
        img.close();
      }
      const [after] = files.chain(info.active);
      if (after.virtualSize !== size) {
        throw new CowError('ECOW_IO', `extend of volume ${volumeId}: ${info.active} reads back as ${after.virtualSize} bytes, not ${size}`);
      }
      return { file: info.active, size };
    });
  }

  /**
   * Revert to snapshot `snapshotId`, which must be the latest (its file is the active one):
   * its file is replaced, atomically, by a fresh empty overlay on the same backing file.
   */
  async revertToSnapshot(volumeId: string, snapshotId: string, options: { status: VolumeStatus }): Promise<{ file: string }> {
    validateSnapshotId(snapshotId);
    return this.run(volumeId, {}, async (ctx) => {
      const status = checkStatus('revertToSnapshot', options.status, volumeId);
      ctx.files.readLocks = !isAttached(status);
      await this.recoverFirst(ctx, status, `reverting to snapshot ${snapshotId}`);
      const { files } = ctx;
      const { info } = await files.readInfo();
      if (!Object.hasOwn(info, snapshotId)) throw new CowError('ECOW_NOT_FOUND', `volume ${volumeId} has no snapshot ${snapshotId}`);
      const file = info[snapshotId];
      if (file !== info.active) {
        throw new CowError('ECOW_INVALID_STATE', `snapshot ${snapshotId} is not the latest snapshot of volume ${volumeId} (only the latest can be reverted to)`);
      }
      const chain = files.chain(file);
      if (chain.length < 2) throw new CowError('ECOW_INVALID_STATE', `snapshot ${snapshotId}: ${file} has no backing file to revert to`);
      const [top, below] = chain;
      files.needKey(chain, `revert to snapshot ${snapshotId}`);
      const temp = `${files.newFilePrefix}${nodeCrypto().randomUUID()}`;
      try {
        await files.createOverlay(temp, { size: top.virtualSize, backing: below.name, backingFormat: below.format, encrypted: below.encrypted === true });
        ctx.lock.assertHeld();
        await fsSync.promises.rename(files.path(temp), files.path(file)); // atomic: the old overlay or the new one
        await syncDir(this.dir);
      } finally {
        await fsSync.promises.unlink(files.path(temp)).catch(() => {});
      }
      return { file };
    });
  }

  /** Remove every file of the volume: chain files, info file, journal, temp files. Idempotent. */
  async deleteVolume(volumeId: string): Promise<{ removed: string[] }> {
    return this.run(volumeId, {}, async ({ files }) => {
      const { chainFiles, tempFiles } = await files.list();
      const removed: string[] = [];
      // The info file goes last: until then a crash leaves a volume fsck can still describe.
      for (const n of [...chainFiles, ...tempFiles, files.journalName, files.formatRecordName, `${files.base}.info`]) {
        if (await files.unlink(n)) removed.push(n);
      }
      return { removed };
    });
  }

  /** What a guest opens (initialize_connection): the active file and its format. */
  async attachInfo(volumeId: string): Promise<AttachInfo> {
    return this.run(volumeId, {}, async ({ files }) => {
      const { info } = await files.readInfo();
      const [top] = files.chain(info.active); // the whole chain must pass the policy
      return { volumeId, activeFile: info.active, format: top.format };
    });
  }

  /** The info file and the active chain as the headers describe it. */
  async volumeInfo(volumeId: string): Promise<VolumeDescription> {
    return this.inspect(volumeId, {}, async ({ files }) => {
      const { info, exists } = await files.readInfo();
      const snapshots: Record<string, string> = {};
      for (const k of Object.keys(info).sort()) if (k !== 'active') snapshots[k] = info[k];
      return { volumeId, active: info.active, snapshots, chain: files.chain(info.active), infoFile: exists, pending: await readJournal(files) };
    });
  }

  /** Reconcile the info file with the chain on disk after a crash (fsck.ts). */
  async fsck(volumeId: string, options: FsckOptions & Pick<OperationOptions, 'onProgress'> = {}): Promise<FsckReport> {
    const status = checkStatus('fsck', options.status ?? 'available', volumeId);
    return this.run(volumeId, { onProgress: options.onProgress }, (ctx) => {
      ctx.files.readLocks = !isAttached(status);
      return fsck(ctx, { ...options, status });
    });
  }
}

/** The error an interrupted operation stops with (the reason the caller aborted with, if a CowError). */
function interrupted(volumeId: string, reason: unknown): CowError {
  const why = reason instanceof CowError ? reason.message.replace(/^ECOW_CANCELLED: /, '') : 'interrupted';
  return new CowError(
    'ECOW_CANCELLED',
    `volume ${volumeId}: ${why}; stopped before its next change and released the lock (an interrupted snapshot create or delete is finished by the next command or fsck)`,
    { cause: reason },
  );
}
