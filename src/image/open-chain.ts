import * as fs from 'node:fs';
import * as path from 'node:path';
import { Engine } from '../engine/engine.js';
import { FileBackend, type Backend } from '../engine/backend.js';
import { CowError } from '../errors.js';
import { closeLayer, linkBacking, newImage, unlockImage, type Image } from './image.js';
import { parseImageFormat } from './format.js';
import type { ImageFormat } from './types.js';

/**
 * Decides where a backing name read from a header leads. Returns the path to open, or throws
 * (ECOW_BACKING_REJECTED) — the volume driver plugs in its strict per-volume policy here.
 */
export type BackingResolver = (backingName: string, childPath: string) => string;

/**
 * The format of a backing file, from its name as the child's header stores it and the format
 * that header records (null: none). Undefined: probe it. The volume driver answers from what it
 * was told, never from the file's bytes (a raw volume's guest can write a qcow2 header).
 */
export type BackingFormatPolicy = (backingName: string, recorded: ImageFormat | null) => ImageFormat | undefined;

/**
 * The key secret of each LUKS-encrypted image of a chain, by depth (0 = the top, 1 = its backing
 * file, …; qemu's encrypt.key-secret, backing.encrypt.key-secret, …) and file name; undefined
 * for none. The bytes are the LUKS passphrase; they are never logged or stored.
 */
export type KeySecrets = (depth: number, filename: string) => Uint8Array | undefined;

export interface OpenOptions {
  /** Open the top image for writing. */
  writable?: boolean;
  /** Backing images (by depth: 1 = the top's backing file) to open for writing too (commit bases). */
  writableDepths?: number[];
  /**
   * Open a backing file for writing too when this says so: asked with its name as `child`'s
   * header stores it, once that header is read (a caller that knows the chain by name, not by depth).
   */
  writableBacking?: (name: string, child: string) => boolean;
  /** The top image's format; probed from its first bytes when absent. */
  format?: ImageFormat;
  /** Do not open backing files (header-only work, e.g. an unsafe rebase). */
  noBacking?: boolean;
  resolveBacking?: BackingResolver;
  /** Formats of backing files (default: the header's backing format, else probed). */
  formatOf?: BackingFormatPolicy;
  /**
   * Take qemu's reader lock on the read-only images too (ECOW_IMAGE_LOCKED while another process
   * writes one), as qemu-img without -U does. Writable images always get the writer's lock.
   */
  readLocks?: boolean;
  /** Most images in one chain (default DEFAULT_MAX_CHAIN_DEPTH). */
  maxDepth?: number;
  /** Run before every write to a writable layer (FileBackend.guard): the volume lock's check. */
  guardIo?: () => void;
  /**
   * Open the top image as `qemu-img check` does: its internal snapshot table is left for the
   * check to judge (a normal open refuses a table qemu cannot read).
   */
  forCheck?: boolean;
  /** Key secrets of the encrypted images of the chain. */
  keySecrets?: KeySecrets;
}

/**
 * Most images openImage opens in one chain unless told otherwise. The engine's table caches
 * share one memory budget, so a chain this deep is read within a bounded heap (a 1000-deep chain
 * with data in every layer: 64 MiB of engine memory).
 */
export const DEFAULT_MAX_CHAIN_DEPTH = 1000;

/** qemu's rule: a relative backing name is relative to the directory of the image naming it. */
export const defaultResolveBacking: BackingResolver = (name, childPath) =>
  path.isAbsolute(name) ? name : path.join(path.dirname(childPath), name);

/** The name qemu prints as full-backing-filename (its path_combine: no normalisation). */
export function fullBackingFilename(childFilename: string, backingName: string): string {
  if (backingName.startsWith('/')) return backingName;
  const slash = childFilename.lastIndexOf('/');
  return slash < 0 ? backingName : childFilename.slice(0, slash + 1) + backingName;
}

function probeFormat(engine: Engine, backend: Backend): ImageFormat {
  const handle = engine.addBackend(backend);
  try {
    return engine.call((e) => e.probe(handle)) === 1 ? 'qcow2' : 'raw';
  } finally {
    engine.removeBackend(handle);
  }
}

/**
 * Open an image file and its whole backing chain. Each layer is opened once, from the top down
 * (its header names the next), and the layers are linked from the bottom up.
 */
export function openImage(file: string, options: OpenOptions = {}): Image {
  const engine = Engine.get();
  const resolve = options.resolveBacking ?? defaultResolveBacking;
  const maxDepth = options.maxDepth ?? DEFAULT_MAX_CHAIN_DEPTH;
  const layers: Image[] = [];
  const seen = new Set<string>();
  let backend: FileBackend | undefined;
  try {
    let filename = file;
    let format = options.format;
    let writable = options.writable ?? false;
    for (;;) {
      const depth = layers.length;
      if (depth >= maxDepth) throw new CowError('ECOW_CHAIN_TOO_DEEP', `backing chain of ${file} is deeper than ${maxDepth} images`);
      const real = realpathOrThrow(filename, depth === 0 ? undefined : layers[depth - 1].filename);
      if (seen.has(real)) throw new CowError('ECOW_CHAIN_LOOP', `backing chain of ${file} loops back to ${filename}`);
      seen.add(real);
      backend = new FileBackend(filename, writable, false, options.readLocks ? 'read' : 'none');
      if (writable) backend.guard = options.guardIo;
      const fmt = format ?? probeFormat(engine, backend);
      const forCheck = depth === 0 && options.forCheck === true;
      // Unlocked later, bottom-up, as the chain is linked: a key error never hides a broken chain.
      const layer = newImage(engine, backend, filename, fmt, writable, null, forCheck);
      backend = undefined; // the image owns it now
      layers.push(layer);
      if (fmt !== 'qcow2' || options.noBacking) break;
      const header = layer.headerInfo();
      const name = header.backingFile ?? null;
      if (name === null) break;
      const child = filename;
      filename = resolve(name, child);
      const recordedName = header.backingFormat ?? null;
      const recorded = recordedName === null ? null : parseImageFormat(recordedName, `the backing format recorded in ${filename}`);
      format = options.formatOf ? options.formatOf(name, recorded) : (recorded ?? undefined);
      writable = (options.writableDepths?.includes(layers.length) ?? false) || (options.writableBacking?.(name, child) ?? false);
    }
    for (let i = layers.length - 1; i >= 0; i--) {
      if (i + 1 < layers.length) linkBacking(layers[i], layers[i + 1]);
      const secret = options.keySecrets?.(i, layers[i].filename);
      if (secret) unlockImage(layers[i], secret);
    }
    return layers[0];
  } catch (e) {
    backend?.close();
    for (const layer of layers) closeLayer(layer);
    throw e;
  }
}

function realpathOrThrow(filename: string, child: string | undefined): string {
  try {
    // realpath(3): one system call per layer, where the JS realpathSync lstats every component
    // of the path (a 1000-deep chain in /tmp/a/b: 4000 lstats per open).
    return fs.realpathSync.native(filename);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') {
      if (child) throw new CowError('ECOW_BACKING_MISSING', `backing file ${filename} of ${child} does not exist`, { cause: e });
      throw new CowError('ECOW_NOT_FOUND', `image ${filename} does not exist`, { cause: e });
    }
    throw new CowError('ECOW_IO', `cannot resolve ${filename}: ${err.message}`, { cause: e });
  }
}

/** Open an image on any Backend (memory, custom storage); `backing` is linked as given; `keySecret` unlocks a LUKS-encrypted one. */
export function openImageOn(backend: Backend, options: { name?: string; format?: ImageFormat; writable?: boolean; backing?: Image | null; keySecret?: Uint8Array } = {}): Image {
  const engine = Engine.get();
  const format = options.format ?? probeFormat(engine, backend);
  return newImage(engine, backend, options.name ?? '<memory>', format, options.writable ?? false, options.backing ?? null, false, options.keySecret);
}
