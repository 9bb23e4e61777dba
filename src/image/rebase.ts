import { CowError } from '../errors.js';
import { openImage, defaultResolveBacking, type BackingResolver, type KeySecrets } from './open-chain.js';
import { imageEngine, imageId, type Image } from './image.js';
import type { ImageFormat } from './types.js';
import { sameFile } from './same-file.js';
import { runJob, type JobOptions } from './job.js';
import { streamLive } from './live.js';

export interface RebaseOptions extends JobOptions {
  /** Header only (qemu-img rebase -u): the caller answers for the data. */
  unsafe?: boolean;
  /** Format of the new backing file; probed when absent (and the file exists). */
  backingFormat?: ImageFormat;
  resolveBacking?: BackingResolver;
  /**
   * Key secrets of encrypted images: of the image's chain by depth (0 = the image), and of the
   * new backing chain by the depth it will have (1 = the new backing file).
   */
  keySecrets?: KeySecrets;
}

/** The format to record for a new backing file: as given, else probed (if it can be opened). */
function backingFormatOf(file: string, name: string, given: ImageFormat | undefined, resolve: BackingResolver): ImageFormat | '' {
  if (given) return given;
  try {
    const b = openImage(resolve(name, file), { noBacking: true });
    const f = b.format;
    b.close();
    return f;
  } catch (err) {
    if (err instanceof CowError && (err.code === 'ECOW_NOT_FOUND' || err.code === 'ECOW_BACKING_MISSING')) return '';
    throw err;
  }
}

/**
 * Change the backing file of `file` to `newBacking` (stored as given; '' removes it), as
 * `qemu-img rebase`. Safe mode first writes into `file` every byte it does not allocate where the
 * old and the new chain differ, so the guest view is unchanged; the header switches last.
 */
export function rebaseImage(file: string, newBacking: string, options: RebaseOptions = {}): void {
  const resolve = options.resolveBacking ?? defaultResolveBacking;
  const format = newBacking === '' ? '' : backingFormatOf(file, newBacking, options.backingFormat, resolve);
  if (options.unsafe) {
    const img = openImage(file, { writable: true, noBacking: true, guardIo: options.guardIo });
    try {
      img.switchBacking(null, newBacking, format);
    } finally {
      img.close();
    }
    return;
  }
  const img = openImage(file, { writable: true, resolveBacking: options.resolveBacking, guardIo: options.guardIo, keySecrets: options.keySecrets });
  let next: Image | null = null;
  try {
    if (img.format !== 'qcow2') throw new CowError('ECOW_BAD_ARGUMENT', `${file} is ${img.format}; only qcow2 images have a backing file`);
    if (newBacking !== '') next = openImage(resolve(newBacking, file), { format: format || undefined, resolveBacking: options.resolveBacking, keySecrets: options.keySecrets && ((d, f) => options.keySecrets!(d + 1, f)) });
    const nextId = next ? imageId(next) : -1;
    const engine = imageEngine(img);
    runJob(engine, () => engine.call((e) => e.rebaseStart(imageId(img), nextId)), options, [img]);
    // The old chain stays linked below until the image is closed; the header now names the new one.
    const old = img.backing;
    img.switchBacking(next, newBacking, format);
    next = null;
    old?.close();
  } finally {
    next?.close();
    img.close();
  }
}

export interface StreamOptions extends JobOptions {
  /** Keep this image of the chain (path) as the new backing file; null/undefined: pull everything. */
  base?: string | null;
  resolveBacking?: BackingResolver;
  /** Key secrets of the chain's encrypted images (by depth from the image). */
  keySecrets?: KeySecrets;
}

/**
 * Stream (libvirt's blockRebase): copy into `file` whatever its backing chain allocates above
 * `base`, then make `base` its backing file (named as the chain named it) — or none.
 */
export function streamImage(file: string, options: StreamOptions = {}): void {
  const img = openImage(file, { writable: true, resolveBacking: options.resolveBacking, guardIo: options.guardIo, keySecrets: options.keySecrets });
  try {
    const chain = img.chain();
    let depth = chain.length;
    if (options.base) {
      const d = chain.findIndex((c, i) => i > 0 && sameFile(c.filename, options.base!));
      if (d < 0) throw new CowError('ECOW_BAD_ARGUMENT', `${options.base} is not in the backing chain of ${file}`);
      depth = d;
    }
    streamLive(img, depth, options);
  } finally {
    img.close();
  }
}

