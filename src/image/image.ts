import { Engine } from '../engine/engine.js';
import type { Backend } from '../engine/backend.js';
import { BLOCK_STATUS } from '../engine/block-status.js';
import { CowError } from '../errors.js';
import { parseLuksHeader, unlockLuks } from '../engine/luks.js';
import type { HeaderInfo, ImageFormat, MapEntry } from './types.js';

const { DATA: ST_DATA, ZERO: ST_ZERO, OFFSET_VALID: ST_OFFSET_VALID, ALLOCATED: ST_ALLOCATED } = BLOCK_STATUS;

// Engine open flags (assembly/index.ts openQcow2).
export const OPEN_WRITABLE = 1;
export const OPEN_FOR_CHECK = 2;

/** Largest single transfer through wasm memory for `read`. */
const READ_CHUNK = 4 << 20;

// Package-internal access to an Image (assigned in its static block; not exported by the package).
type ImageArgs = [engine: Engine, backend: Backend, filename: string, format: ImageFormat, writable: boolean, backing: Image | null, forCheck?: boolean, keySecret?: Uint8Array];
/** Open `backend` in the engine as an image above `backing` (openImage / openImageOn do this). */
export let newImage: (...args: ImageArgs) => Image;
/** The engine an image lives in. */
export let imageEngine: (img: Image) => Engine;
/** The engine's id of an image. */
export let imageId: (img: Image) => number;
/** Close this image only; the chain below stays open (it is still used, or was unlinked). */
export let closeLayer: (img: Image) => void;
/**
 * Write nothing more: from now on the image refuses writes and close() drops its caches instead
 * of flushing them. What is on disk stays as a crash at this instant would leave it (consistent:
 * metadata only reaches the disk in crash-safe order). For a job whose volume lock was lost.
 */
export let abandonWrites: (img: Image, reason: Error) => void;
/** Link an image opened without its backing file to `backing` (openImage links bottom-up after opening top-down). */
export let linkBacking: (img: Image, backing: Image) => void;
/** Unlock an encrypted image with its key secret (a LUKS passphrase); nothing for an unencrypted one. */
export let unlockImage: (img: Image, secret: Uint8Array) => void;
/** ECOW_BAD_ARGUMENT if the image was closed. */
export let assertOpen: (img: Image) => void;

/**
 * An open image and, through `backing`, the rest of its chain. Closing the top closes the chain.
 * Made by `openImage` (files) or `openImageOn` (any Backend), never constructed directly.
 * `using img = openImage(…)` closes it at the end of the scope (`Symbol.dispose`).
 */
export class Image {
  // The engine binding stays private to the package: other modules reach it through the
  // functions below (imageEngine, imageId, …), which the package's entry points do not export.
  readonly #engine: Engine;
  readonly #id: number;
  readonly #handle: number;
  readonly format: ImageFormat;
  /** The name given when opening (a path for files). */
  readonly filename: string;
  #backingImage: Image | null;
  readonly #backend: Backend;
  /** Whether the image was opened for writing. */
  readonly writable: boolean;
  #header: HeaderInfo | undefined;
  #closed = false;
  #failed: Error | undefined;

  static {
    newImage = (...args) => new Image(...args);
    imageEngine = (img) => img.#engine;
    imageId = (img) => img.#id;
    closeLayer = (img) => img.#closeLayer();
    abandonWrites = (img, reason) => {
      img.#failed ??= reason;
    };
    assertOpen = (img) => img.#assertOpen();
    unlockImage = (img, secret) => {
      if (img.format === 'qcow2') img.#unlock(secret);
    };
    linkBacking = (img, backing) => {
      img.#engine.call((e) => e.setBacking(img.#id, backing.#id));
      img.#backingImage = backing;
    };
  }

  /**
   * `forCheck` opens a qcow2 image as `qemu-img check` does: the internal snapshot table is left
   * for the check to judge instead of refusing the open.
   *
   * `keySecret` unlocks a LUKS-encrypted qcow2 image (its encrypt.key-secret); without it such an
   * image opens for info, map and check, and any data read or write is ECOW_KEY_REQUIRED.
   */
  private constructor(engine: Engine, backend: Backend, filename: string, format: ImageFormat, writable: boolean, backing: Image | null, forCheck = false, keySecret?: Uint8Array) {
    this.#engine = engine;
    this.#backend = backend;
    this.filename = filename;
    this.format = format;
    this.writable = writable;
    this.#handle = engine.addBackend(backend);
    try {
      const flags = (writable ? OPEN_WRITABLE : 0) | (forCheck ? OPEN_FOR_CHECK : 0);
      this.#id = engine.call((e) => (format === 'qcow2' ? e.openQcow2(this.#handle, flags) : e.openRaw(this.#handle, writable ? 1 : 0)));
      if (backing) engine.call((e) => e.setBacking(this.#id, backing.#id));
    } catch (err) {
      engine.removeBackend(this.#handle);
      throw err;
    } finally {
      engine.collectSoon();
    }
    if (format === 'qcow2' && keySecret) {
      try {
        this.#unlock(keySecret);
      } catch (err) {
        engine.call((e) => e.abandon(this.#id));
        engine.removeBackend(this.#handle);
        throw err;
      }
    }
    this.#backingImage = backing;
  }

  /** Read the LUKS area named by the header and give the engine the cipher the secret unlocks. */
  #unlock(secret: Uint8Array): void {
    const h = this.headerInfo();
    if (h.cryptMethod !== 2 || !h.cryptoOffset || !h.cryptoLength) return;
    const region = new Uint8Array(h.cryptoLength);
    const n = this.#backend.read(region, h.cryptoOffset);
    if (n < region.length) throw new CowError('ECOW_BAD_LUKS_HEADER', `${this.filename}: the LUKS area at ${h.cryptoOffset} (${h.cryptoLength} bytes) is cut off by the end of the file`);
    let cipher;
    try {
      cipher = unlockLuks(parseLuksHeader(region, region.length), region, secret);
    } catch (e) {
      if (e instanceof CowError) throw new CowError(e.code, `${this.filename}: ${e.message.slice(e.code.length + 2)}`, { cause: e });
      throw e;
    }
    this.#engine.setCipher(this.#handle, cipher);
  }

  /** Whether the image is LUKS-encrypted (qcow2 crypt_method 2). */
  get encrypted(): boolean {
    return this.format === 'qcow2' && this.headerInfo().cryptMethod === 2;
  }

  /** The image below this one in the chain (null for the bottom). */
  get backing(): Image | null {
    return this.#backingImage;
  }

  /**
   * Point the header at another backing file — `name` and `format` exactly as they are to be
   * stored ('' for none) — and link `backing` below this image. Everything written before is made
   * durable first. The caller answers for the guest view (a safe switch copies data first).
   */
  switchBacking(backing: Image | null, name: string, format: string): void {
    this.#assertWritable();
    const e = this.#engine;
    this.#guarded((x) => x.setBackingFile(this.#id, e.newString(name), e.newString(format)));
    e.collectSoon();
    e.call((x) => x.setBacking(this.#id, backing ? backing.#id : -1));
    this.#backingImage = backing;
    this.#header = undefined;
  }

  /** Header facts (cached: the header changes only through this object). */
  headerInfo(): HeaderInfo {
    if (!this.#header) {
      this.#header = JSON.parse(this.#engine.call((e) => this.#engine.string(e.describe(this.#id)))) as HeaderInfo;
      this.#engine.collectSoon();
    }
    return this.#header;
  }

  get virtualSize(): number {
    return this.#engine.call((e) => e.virtualSize(this.#id));
  }

  /** Every image of the chain, this one first. */
  chain(): Image[] {
    const out: Image[] = [];
    for (let i: Image | null = this; i; i = i.backing) out.push(i);
    return out;
  }

  /** The guest's view of [offset, offset+length). */
  read(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    const chunk = Math.min(length, READ_CHUNK);
    if (chunk === 0) return out;
    const ptr = this.#engine.call((e) => e.alloc(chunk));
    try {
      for (let done = 0; done < length; ) {
        const n = Math.min(chunk, length - done);
        this.#engine.call((e) => e.read(this.#id, offset + done, ptr, n));
        out.set(this.#engine.bytes(ptr, n), done);
        done += n;
      }
    } finally {
      this.#engine.call((e) => e.free(ptr));
    }
    return out;
  }

  /** Guest write of `data` at `offset` (through the engine's allocation and copy-on-write). */
  write(offset: number, data: Uint8Array): void {
    this.#assertWritable();
    const chunk = Math.min(data.length, READ_CHUNK);
    if (chunk === 0) return;
    const ptr = this.#engine.call((e) => e.alloc(chunk));
    try {
      for (let done = 0; done < data.length; ) {
        const n = Math.min(chunk, data.length - done);
        this.#engine.bytes(ptr, n).set(data.subarray(done, done + n));
        this.#guarded((e) => e.write(this.#id, offset + done, ptr, n));
        done += n;
      }
    } finally {
      this.#engine.call((e) => e.free(ptr));
    }
  }

  /**
   * Make [offset, offset+length) read as zeros (zero clusters where the format allows). With
   * `unmap` the clusters are released (qemu-io write -z -u), else they stay allocated.
   */
  writeZeroes(offset: number, length: number, unmap = false): void {
    this.#assertWritable();
    this.#guarded((e) => e.writeZeroes(this.#id, offset, length, unmap ? 1 : 0));
  }

  /** Drop whole clusters in [offset, offset+length), as qemu-io's discard. */
  discard(offset: number, length: number): void {
    this.#assertWritable();
    this.#guarded((e) => e.discard(this.#id, offset, length));
  }

  /**
   * Grow the virtual size to `size` bytes (a smaller or equal size changes nothing); the new
   * range reads as zeros. Flushed: durable when this returns.
   */
  grow(size: number): void {
    this.#assertWritable();
    this.#guarded((e) => {
      e.grow(this.#id, size);
      e.flush(this.#id);
    });
    this.#header = undefined;
  }

  /** Make every write so far durable. */
  flush(): void {
    this.#assertWritable();
    this.#guarded((e) => e.flush(this.#id));
  }

  /**
   * A failed write may leave the engine's caches ahead of the disk; the image is then unusable
   * (the disk itself stays consistent: metadata only reaches it in crash-safe order).
   */
  #guarded(fn: (e: import('../engine/engine.js').EngineExports) => void): void {
    try {
      this.#engine.call(fn);
    } catch (err) {
      this.#failed = err as Error;
      throw err;
    }
  }

  #assertWritable(): void {
    this.#assertOpen();
    if (this.#failed) throw new CowError('ECOW_IO', `image ${this.filename} failed earlier and must be reopened: ${this.#failed.message}`, { cause: this.#failed });
    if (!this.writable) throw new CowError('ECOW_READ_ONLY', `image ${this.filename} was opened read-only`);
  }

  /**
   * Allocation map of the whole chain, with qemu-img map's rules: each extent reports the first
   * layer that allocates it (depth), and adjacent extents that agree are merged.
   */
  map(): MapEntry[] {
    const size = this.virtualSize;
    const layers = this.chain();
    const walk: ChainWalk = {
      layers,
      passEnd: new Array<number>(layers.length).fill(0),
      backingSize: layers.map((l) => (l.backing ? l.backing.virtualSize : 0)),
    };
    const entries: MapEntry[] = [];
    for (let off = 0; off < size; ) {
      const e = this.#blockStatusAbove(walk, off, size - off);
      const last = entries[entries.length - 1];
      if (last && mergeable(last, e)) last.length += e.length;
      else entries.push(e);
      off += e.length;
    }
    return entries;
  }

  /**
   * The chain's status at `off`: down the layers to the first that allocates it. A layer is asked
   * for its whole run from `off`, and where it leaves that run to its backing file the walk
   * remembers so (`passEnd`) and passes it by without asking again until the map reaches the end
   * of the run: map asks each layer once per run it has, not once per extent of the layers above
   * it (a 1000-deep chain with a cluster in every layer: 2000 extents, and each hole asked every
   * layer below the top about a run it had already described).
   */
  #blockStatusAbove(walk: ChainWalk, off: number, bytes: number): MapEntry {
    let depth = 0;
    let flags = 0;
    let offset = 0;
    let n = bytes;
    for (;;) {
      const l = walk.layers[depth];
      const known = walk.passEnd[depth];
      if (off < known) {
        // Still in a run this layer passes to its backing file (never the bottom layer: it has none).
        n = Math.min(n, known - off);
      } else {
        const run = this.#engine.call((e) => e.blockStatus(l.#id, off, bytes));
        flags = this.#engine.call((e) => e.statusFlags());
        offset = this.#engine.call((e) => e.statusOffset());
        n = Math.min(n, run);
        if (flags & (ST_DATA | ST_ZERO)) break;
        if (!l.backing) {
          flags = 0;
          break;
        }
        // The engine reads an unallocated run as zeros from where the backing file ends: the
        // run passes down only up to there.
        walk.passEnd[depth] = Math.min(off + run, walk.backingSize[depth]);
      }
      depth++;
    }
    const entry: MapEntry = {
      start: off,
      length: n,
      depth,
      present: (flags & ST_ALLOCATED) !== 0,
      zero: (flags & ST_ZERO) !== 0,
      data: (flags & ST_DATA) !== 0,
    };
    if (flags & ST_OFFSET_VALID) entry.offset = offset;
    return entry;
  }

  /** Size of the file behind this image, in bytes. */
  fileLength(): number {
    return this.#backend.size();
  }

  /** Close the image and the whole chain below it. */
  close(): void {
    try {
      this.#closeLayer();
    } finally {
      this.#backingImage?.close();
    }
  }

  /** `using`: close() at the end of the scope. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Close this image only; the chain below stays open (it is still used, or was unlinked). */
  #closeLayer(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      // close() flushes; after a failure the caches are not to be trusted, so nothing is written.
      if (this.#failed) this.#engine.call((e) => e.abandon(this.#id));
      else {
        try {
          this.#engine.call((e) => e.close(this.#id));
        } catch (err) {
          // The flush inside close() failed: the engine still holds the image (its caches, its
          // tables). Forget it without writing, or every failed close leaks its memory for good.
          this.#engine.call((e) => e.abandon(this.#id));
          throw err;
        }
      }
    } finally {
      this.#engine.removeBackend(this.#handle);
      this.#backend.close();
      this.#engine.collectSoon();
    }
  }

  #assertOpen(): void {
    if (this.#closed) throw new CowError('ECOW_BAD_ARGUMENT', `image ${this.filename} is closed`);
  }
}

/** A map's walk down a chain: its layers, top first, and what it learnt of each. */
interface ChainWalk {
  layers: Image[];
  /** Each layer leaves [the offset it was last asked at, passEnd) to its backing file. */
  passEnd: number[];
  /** Virtual size of each layer's backing file (0: none). */
  backingSize: number[];
}

function mergeable(a: MapEntry, b: MapEntry): boolean {
  if (a.zero !== b.zero || a.data !== b.data || a.depth !== b.depth || a.present !== b.present) return false;
  if ((a.offset === undefined) !== (b.offset === undefined)) return false;
  return a.offset === undefined || a.offset + a.length === b.offset;
}
