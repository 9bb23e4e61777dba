/**
 * One volume's files in its directory, and the only way the driver opens them: every name (from
 * the info file or from a qcow2 header) is checked before anything is opened — one of THIS
 * volume's chain names, a regular file inside the directory after resolving symlinks — and
 * chains are bounded in depth and free of loops.
 */
import * as fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_MAX_CHAIN_DEPTH, openImage, type BackingFormatPolicy, type BackingResolver } from '../image/open-chain.js';
import { baseName, checkChainName, parseChainName, resolveInsideDirSync, snapshotFileName } from './names.js';
import { CowError, isCowError } from '../errors.js';
import { FileBackend } from '../engine/backend.js';
import { checkOpenImage } from '../image/check.js';
import { createQcow2On } from '../image/create.js';
import type { Image } from '../image/image.js';
import type { ImageFormat } from '../image/types.js';
import { readdirAsync, syncDir, unlinkAsync } from './atomic-file.js';
import { applyFileModes, resolveFileModes, type FileModes } from './file-modes.js';
import { formatRecordName, formatRecordTempPrefix } from './format-record.js';
import { infoTempPrefix, readInfo, writeInfo, type VolumeInfo } from './info-file.js';
import { isImageFormat } from '../image/format.js';
import { VolumeChain, type ChainLink } from './volume-chain.js';

export type { ChainLink };

/**
 * Most images in one volume's chain the driver opens; a deeper chain is ECOW_CHAIN_TOO_DEEP.
 * The engine's table caches share one budget (assembly/tablecache.ts), so depth costs each
 * layer only the tables a read touches: a 1000-deep chain whose layers all hold data was read
 * through within 64 MiB of engine memory (35 MiB of it table cache).
 */
export const MAX_CHAIN_DEPTH = DEFAULT_MAX_CHAIN_DEPTH;

/**
 * Deepest chain a snapshot create builds: one below MAX_CHAIN_DEPTH, leaving room for a
 * clone's temporary snapshot, so every chain the driver builds can still be cloned and deleted.
 */
export const MAX_SNAPSHOT_CHAIN_DEPTH = MAX_CHAIN_DEPTH - 1;

/**
 * Deepest chain a snapshot create builds while the volume is attached: libvirt refuses to start
 * a guest on a backing chain deeper than 200 images; one is kept for a clone's temporary snapshot.
 */
export const MAX_ATTACHED_CHAIN_DEPTH = 199;

/** What is known of the base image's format (format-record.ts), and whether guessing is allowed. */
export interface BaseFormat {
  /** Given by the caller or recorded at creation; undefined: neither. */
  known?: ImageFormat;
  /** Probe the base when nothing says its format (an explicit opt-in: see `warn`). */
  probe?: boolean;
  /** Told whenever the base's format is about to be guessed from its bytes. */
  warn?: (message: string) => void;
}

export class VolumeFiles {
  readonly dir: string;
  readonly volumeId: string;
  /** `volume-<vol>`, the base image's name. */
  readonly base: string;
  /** openImage's BackingResolver for this volume: the strict per-volume policy. */
  readonly resolver: BackingResolver;

  /**
   * Runs before every change made through this object (and right before the rename that
   * publishes a new info file or journal): the driver passes its lock's `assertHeld`, so a
   * holder whose lock was taken over stops before it touches anything.
   */
  readonly guard: () => void;

  readonly baseFormat: BaseFormat;
  /** openImage's BackingFormatPolicy for this volume (see formatOf). */
  readonly formatPolicy: BackingFormatPolicy;

  /**
   * Take qemu's reader lock on the images read (ECOW_IMAGE_LOCKED while another process writes
   * one). Set by operations on a detached volume, where nothing else should have its files open;
   * an attached volume's files are read with force-share, as Cinder does (its guest writes them).
   * Images opened for writing always take the writer's lock.
   */
  readLocks = false;
  /** The lock's fencing token (coordination.ts), recorded in the journal; none for the share lease. */
  fence: string | undefined;

  /** Modes of the files created (file-modes.ts); default: Cinder's `auto` for this directory. */
  readonly fileModes: () => Promise<FileModes>;

  /**
   * The volume's key secret (LUKS passphrase), the same for every image of its chain as Cinder
   * keys them; undefined: none was given. Private, so that no inspect or log of this object shows it.
   */
  #keySecret: Uint8Array | undefined;
  /** PBKDF2 time (ms) of the LUKS key slot of each encrypted image created (qemu's encrypt.iter-time). */
  encryptIterTimeMs: number | undefined;

  constructor(dir: string, volumeId: string, guard: () => void = () => {}, baseFormat: BaseFormat = {}, fileModes?: () => Promise<FileModes>) {
    let modes: Promise<FileModes> | undefined;
    this.fileModes = fileModes ?? (() => (modes ??= resolveFileModes(dir, 'auto')));
    this.dir = dir;
    this.volumeId = volumeId;
    this.base = baseName(volumeId); // validates the id
    this.resolver = (name) => this.resolve(name);
    this.guard = guard;
    this.baseFormat = baseFormat;
    this.formatPolicy = (name, recorded) => this.formatOf(name, recorded);
  }

  /**
   * The format `name` is opened with, never guessed from its bytes: an overlay
   * (`volume-<vol>.<snap>`) is qcow2, as every snapshot file Cinder makes; the base has the
   * format given or recorded for the volume, else the one a child's header records (`recorded`).
   * A header recording another format than these is ECOW_FORMAT_CONFLICT; a base nothing
   * speaks for is ECOW_FORMAT_UNKNOWN, unless probing was asked for (undefined: probe).
   */
  formatOf(name: string, recorded: ImageFormat | null = null): ImageFormat | undefined {
    const overlay = this.snapshotIdOf(name) !== null;
    const known = overlay ? 'qcow2' : this.baseFormat.known;
    if (known !== undefined && recorded !== null && recorded !== known) {
      throw new CowError('ECOW_FORMAT_CONFLICT', `volume ${this.volumeId}: ${name} is ${known}, but a header records it as ${recorded}`);
    }
    const format = known ?? recorded ?? undefined;
    if (format !== undefined) return format;
    if (!this.baseFormat.probe) {
      throw new CowError('ECOW_FORMAT_UNKNOWN', `volume ${this.volumeId}: the format of ${name} was neither given nor recorded at creation; give it (baseFormat / --base-format), or ask for probing (--probe-format)`);
    }
    this.baseFormat.warn?.(`the format of ${name} was not given and is probed; probing is dangerous for raw images (a guest can write a qcow2 header)`);
    return undefined;
  }

  /**
   * The backing-name and format policy as data, for an engine worker to rebuild `resolver` and
   * `formatPolicy` from (its warnings stay here: the host opened the chain first).
   */
  get policy(): { dir: string; volumeId: string; baseFormat?: ImageFormat; probeFormat?: boolean } {
    return { dir: this.dir, volumeId: this.volumeId, baseFormat: this.baseFormat.known, probeFormat: this.baseFormat.probe };
  }

  /** Give the volume's key secret: every image opened from now on is unlocked with it. */
  setKeySecret(secret: Uint8Array | undefined): void {
    this.#keySecret = secret;
  }

  /** The volume's key secret, for a job that opens the chain again (another thread's engine). */
  get keySecret(): Uint8Array | undefined {
    return this.#keySecret;
  }

  /**
   * ECOW_KEY_REQUIRED unless the key secret was given or no image of `links` is encrypted: the
   * check an operation that reads or writes data, or creates an image, makes before it changes
   * anything. (A wrong secret already failed to open them: ECOW_BAD_SECRET.)
   */
  needKey(links: readonly ChainLink[], what: string): void {
    if (this.#keySecret) return;
    const locked = links.find((l) => l.encrypted);
    if (locked) {
      throw new CowError('ECOW_KEY_REQUIRED', `${what}: ${locked.name} of volume ${this.volumeId} is encrypted (LUKS) and no key secret was given for the volume (encryption.keySecret; CLI: --object secret,id=ID,file=PATH --key-secret ID); nothing was changed`);
    }
  }

  /** `volume-<vol>.<snap>` */
  snapshotFile(snapshotId: string): string {
    return snapshotFileName(this.volumeId, snapshotId);
  }

  /** `dir/name` for a name this driver made itself (no validation, nothing followed). */
  path(name: string): string {
    return path.join(this.dir, name);
  }

  /** `volume-<vol>.journal`: the intent record of an operation in progress. */
  get journalName(): string {
    return `${this.base}.journal`;
  }

  /** Prefix of a new file being written before it gets its name (the base image, a fresh overlay). */
  get newFilePrefix(): string {
    return newFilePrefix(this.base);
  }

  /** Prefix of the journal's atomic-write temp files. */
  get journalTempPrefix(): string {
    return `.${this.journalName}.tmp-`;
  }

  /** `volume-<vol>.format`: the base's format, recorded at creation (format-record.ts). */
  get formatRecordName(): string {
    return formatRecordName(this.volumeId);
  }

  /** Prefixes of this driver's temporary files (leftovers of a crash are fsck's to remove). */
  get tempPrefixes(): string[] {
    return [infoTempPrefix(this.volumeId), this.newFilePrefix, this.journalTempPrefix, formatRecordTempPrefix(this.volumeId)];
  }

  /**
   * The real path of `name` if it is one of this volume's chain files: the name is checked
   * (ECOW_BACKING_REJECTED), then resolved inside the directory (ECOW_BACKING_REJECTED when a
   * symlink leads out, ECOW_BACKING_MISSING when it does not exist). Nothing is opened.
   */
  resolve(name: string): string {
    checkChainName(this.volumeId, name);
    return resolveInsideDirSync(this.dir, name);
  }

  /**
   * ECOW_ACCESS, naming the first one, unless this process may write the volume directory and
   * each of the files `names`. Checked before an operation writes its journal, so that one it
   * could never finish (a user who may not write the base file) leaves nothing behind to block
   * the commands after it. access(2): a read-only mount fails for everyone, permissions for all
   * but root.
   */
  checkWritable(names: string[], what: string): void {
    for (const [p, kind] of [[this.dir, 'the volume directory'] as const, ...names.map((n) => [this.resolve(n), n] as const)]) {
      try {
        fs.accessSync(p, fs.constants.W_OK);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'EACCES' && code !== 'EPERM' && code !== 'EROFS') throw new CowError('ECOW_IO', `cannot examine ${p}: ${code ?? String(e)}`, { cause: e });
        throw new CowError('ECOW_ACCESS', `${what} must write ${kind === 'the volume directory' ? `${kind} ${p}` : p}, which this user may not (${code}); nothing was changed`, { cause: e });
      }
    }
  }

  /** Whether a directory entry `name` exists (a dangling symlink counts; nothing is followed). */
  exists(name: string): boolean {
    try {
      fs.lstatSync(this.path(name));
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw new CowError('ECOW_IO', `cannot examine ${this.path(name)}: ${(e as Error).message}`, { cause: e });
    }
  }

  /** Open `name` and its backing chain under the policy (every backing name checked first). */
  open(name: string, options: { writable?: boolean; writableDepths?: number[]; writableBacking?: (name: string, child: string) => boolean; noBacking?: boolean; format?: ImageFormat } = {}): Image {
    if (options.writable || options.writableDepths?.length || options.writableBacking) this.guard();
    let file: string;
    try {
      file = this.resolve(name);
    } catch (e) {
      if (isCowError(e, 'ECOW_BACKING_MISSING')) {
        throw new CowError('ECOW_NOT_FOUND', `volume ${this.volumeId}: ${name} does not exist in ${this.dir}`, { cause: e });
      }
      throw e;
    }
    const format = options.format ?? this.formatOf(name);
    const secret = this.#keySecret;
    return openImage(file, {
      ...options,
      format,
      resolveBacking: this.resolver,
      formatOf: this.formatPolicy,
      maxDepth: MAX_CHAIN_DEPTH,
      readLocks: this.readLocks,
      guardIo: this.guard,
      keySecrets: secret && (() => secret),
    });
  }

  /**
   * The chain from `top` down to its bottom, open: names read from the headers, each validated
   * and opened under the policy (ECOW_BACKING_REJECTED / ECOW_CHAIN_LOOP / ECOW_CHAIN_TOO_DEEP /
   * ECOW_BACKING_MISSING). `commitInto`: the backing file of this file is opened for writing (the
   * base of a commit run on this chain), if this process may write it — if not, it is opened
   * read-only and the operation's own access check (checkWritable) says so in its words.
   */
  openChain(top: string, options: { commitInto?: string } = {}): VolumeChain {
    const { commitInto } = options;
    const above = commitInto === undefined ? undefined : this.resolve(commitInto);
    const img = this.open(top, { writableBacking: above === undefined ? undefined : (name, child) => child === above && this.mayWrite(name) });
    try {
      return new VolumeChain(top, img);
    } catch (e) {
      img.close();
      throw e;
    }
  }

  /** The chain from `top` down to its bottom, as openChain reads it (closed again). */
  chain(top: string): ChainLink[] {
    const chain = this.openChain(top);
    chain.close();
    return chain.links;
  }

  /** Whether this process may write the chain file `name` and the directory (access(2)). */
  private mayWrite(name: string): boolean {
    try {
      this.checkWritable([name], '');
      return true;
    } catch (e) {
      if (isCowError(e, 'ECOW_ACCESS')) return false;
      throw e;
    }
  }

  /**
   * One file's own header, without following its backing file (whose name is validated but not
   * resolved: it may legitimately be gone, e.g. during a repair). `format` skips probing.
   */
  header(name: string, format?: ImageFormat): ChainLink {
    const img = this.open(name, { noBacking: true, format });
    try {
      const h = img.headerInfo();
      const backing = h.backingFile ?? null;
      if (backing !== null) checkChainName(this.volumeId, backing);
      const bf = h.backingFormat ?? null;
      const backingFormat = isImageFormat(bf) ? bf : null;
      return { name, format: img.format, virtualSize: img.virtualSize, backing, backingFormat, ...(img.encrypted ? { encrypted: true as const } : {}) };
    } finally {
      img.close();
    }
  }

  /**
   * Create `name` (which must not exist: never clobbers) as an empty qcow2 overlay of `size`
   * bytes backed by the bare name `backing` — relative, so the chain survives a remount at
   * another path. Durable (file and directory entry) when this returns; the backing file is
   * neither opened nor followed here (the caller validated the chain it heads). `encrypted`: a
   * LUKS overlay keyed by the volume's secret, as Cinder makes over an encrypted backing file.
   */
  async createOverlay(name: string, options: { size: number; backing: string; backingFormat: ImageFormat; encrypted?: boolean }): Promise<void> {
    const modes = await this.fileModes();
    this.guard();
    const file = this.path(name);
    try {
      fs.closeSync(fs.openSync(file, 'wx', 0o644));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new CowError(code === 'EEXIST' ? 'ECOW_EXISTS' : 'ECOW_IO', `cannot create ${file}: ${code ?? String(e)}`, { cause: e });
    }
    // The hypervisor's user must be able to write it (the guest moves onto it): Cinder's modes,
    // and in secure mode the backing file's owner and group.
    applyFileModes(file, modes, this.path(options.backing));
    const backend = new FileBackend(file, true, true);
    backend.guard = this.guard; // every write of the new header, as every write of a job
    try {
      createQcow2On(backend, { format: 'qcow2', size: options.size, backingFile: options.backing, backingFormat: options.backingFormat, encrypt: options.encrypted ? this.encryptOptions(name) : undefined });
      backend.flush();
    } finally {
      backend.close();
    }
    await syncDir(this.dir);
  }

  /** CreateOptions.encrypt for a new image of this volume (ECOW_KEY_REQUIRED without the key secret). */
  encryptOptions(name: string): { format: 'luks'; keySecret: Uint8Array; iterTimeMs?: number } {
    const keySecret = this.#keySecret;
    if (!keySecret) throw new CowError('ECOW_KEY_REQUIRED', `${name} of volume ${this.volumeId} is to be encrypted (LUKS) and no key secret was given for the volume`);
    return { format: 'luks', keySecret, ...(this.encryptIterTimeMs === undefined ? {} : { iterTimeMs: this.encryptIterTimeMs }) };
  }

  /** Whether the image `name` itself allocates anything (data or zero clusters). */
  holdsData(name: string, format?: ImageFormat): boolean {
    const img = this.open(name, { noBacking: true, format });
    try {
      // `present`: allocated in this file (data or zero clusters). Not `zero`: opened without its
      // backing file, an unallocated range reads as zeros too.
      return img.map().some((e) => e.present);
    } finally {
      img.close();
    }
  }

  /**
   * Check `name` as `qemu-img check` does and, with `repair`, free the clusters that have a
   * refcount but no reference (what a crash in the middle of an allocation leaves: harmless, but
   * reported) as `-r leaks` does. Corruptions are never "repaired" here, only counted for the
   * caller to report. Raw images have nothing to check. Never on a file a guest is writing.
   */
  checkLeaks(name: string, repair: boolean): { leaks: number; leaksFixed: number; corruptions: number } {
    if (repair) this.guard();
    const img = this.open(name, { noBacking: true, writable: repair });
    try {
      if (img.format !== 'qcow2') return { leaks: 0, leaksFixed: 0, corruptions: 0 };
      const { result, error } = checkOpenImage(img, repair ? 'leaks' : undefined);
      if (!result) throw new CowError('ECOW_CORRUPT', `${name}: ${error ?? 'check failed'}`);
      return { leaks: result.leaks ?? 0, leaksFixed: result['leaks-fixed'] ?? 0, corruptions: result.corruptions ?? 0 };
    } finally {
      img.close();
    }
  }

  /**
   * The info file, or `{active: volume-<vol>}` when there is none (`exists` false). Every file
   * name in it must be one of this volume's chain names (ECOW_BACKING_REJECTED otherwise): it
   * is about to be opened, and Cinder fixed exactly this hole.
   */
  async readInfo(): Promise<{ info: VolumeInfo; exists: boolean }> {
    const info = await readInfo(this.dir, this.volumeId);
    if (info === null) return { info: { active: this.base }, exists: false };
    for (const name of Object.values(info)) checkChainName(this.volumeId, name);
    return { info, exists: true };
  }

  async writeInfo(info: VolumeInfo): Promise<void> {
    const { mode } = await this.fileModes();
    return writeInfo(this.dir, this.volumeId, info, this.guard, mode);
  }

  /**
   * Remove `name` (nothing followed: a symlink is removed, not its target) and make the removal
   * durable. A file already gone is fine (re-runs after a crash).
   */
  async unlink(name: string): Promise<boolean> {
    this.guard();
    try {
      await unlinkAsync(this.path(name));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw new CowError('ECOW_IO', `cannot remove ${this.path(name)}: ${(e as Error).message}`, { cause: e });
    }
    await syncDir(this.dir).catch((e) => {
      throw new CowError('ECOW_IO', `removed ${this.path(name)} but fsync of ${this.dir} failed: ${(e as Error).message}`, { cause: e });
    });
    return true;
  }

  /** Directory entries of this volume: chain files, and this driver's temp files. */
  async list(): Promise<{ chainFiles: string[]; tempFiles: string[] }> {
    let entries: string[];
    try {
      entries = await readdirAsync(this.dir);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new CowError(code === 'ENOENT' ? 'ECOW_NOT_FOUND' : 'ECOW_IO', `cannot list volume directory ${this.dir}: ${code ?? String(e)}`, { cause: e });
    }
    const prefixes = this.tempPrefixes;
    return {
      chainFiles: entries.filter((n) => parseChainName(n)?.volumeId === this.volumeId).sort(),
      tempFiles: entries.filter((n) => prefixes.some((p) => n.startsWith(p))).sort(),
    };
  }

  /** Snapshot id of an overlay name of this volume (`volume-<vol>.<snap>`), null for the base. */
  snapshotIdOf(name: string): string | null {
    return checkChainName(this.volumeId, name).snapshotId;
  }
}

/** Temp-name prefix for a file that will be linked to `name` once complete (createFileAtomic). */
export function newFilePrefix(name: string): string {
  return `.${name}.new-`;
}

/** Snapshot ids of `info` (every key but `active`) that map to `file`. */
export function snapshotsMapping(info: VolumeInfo, file: string): string[] {
  return Object.keys(info).filter((k) => k !== 'active' && info[k] === file);
}

/** `info` without snapshot `snapshotId` (a new object). */
export function withoutSnapshot(info: VolumeInfo, snapshotId: string): VolumeInfo {
  const out: VolumeInfo = { ...info };
  delete out[snapshotId];
  return out;
}
