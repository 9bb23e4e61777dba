import * as fs from 'node:fs';
import { CowError } from '../errors.js';
import { openImage } from './open-chain.js';
import { imageEngine, imageId, type Image } from './image.js';
import { createImage, type CreateOptions } from './create.js';
import type { ImageFormat } from './format.js';
import { runJob, type JobOptions, type ProgressCallback } from './job.js';

export interface ConvertOptions extends JobOptions {
  /** Output format (default raw). */
  format?: ImageFormat;
  /** qcow2 layout options of the new image (cluster size, refcount bits, compat, extended L2). */
  create?: Omit<CreateOptions, 'format' | 'size' | 'backingFile' | 'backingFormat'>;
  /** Virtual size of the new image; at least the source's (default: the source's). */
  size?: number;
  /**
   * Store every cluster holding data compressed, as `qemu-img convert -c` (qcow2 only; the
   * compression type is `create.compressionType`, deflate by default).
   */
  compressed?: boolean;
}

/**
 * Write the guest view of a chain into a new image, as `qemu-img convert -O FMT`. Ranges that
 * read as zeros are left unallocated (holes in a raw file). The new image is flushed.
 */
export function convertImage(src: Image, dst: string, options: ConvertOptions = {}): void {
  const format = options.format ?? 'raw';
  const size = options.size ?? src.virtualSize;
  if (size < src.virtualSize) throw new CowError('ECOW_BAD_ARGUMENT', `size ${size} is smaller than the source's ${src.virtualSize}`);
  if (options.compressed && options.create?.encrypt) throw new CowError('ECOW_BAD_ARGUMENT', 'compressed output cannot be encrypted (qemu refuses it too)');
  if (options.compressed && format !== 'qcow2') throw new CowError('ECOW_BAD_ARGUMENT', `compressed output needs the qcow2 format, not ${format}`);
  createImage(dst, { ...(options.create ?? {}), format, size }, { guardIo: options.guardIo });
  try {
    const key = options.create?.encrypt?.keySecret;
    const out = openImage(dst, { format, writable: true, noBacking: true, guardIo: options.guardIo, keySecrets: key && (() => key) });
    try {
      const engine = imageEngine(src);
      runJob(engine, () => engine.call((e) => e.convertStart(imageId(src), imageId(out), options.compressed ? 1 : 0)), options, [out]);
    } finally {
      out.close();
    }
  } catch (e) {
    fs.rmSync(dst, { force: true });
    throw e;
  }
}

/** The guest view of a chain as a new raw file. */
export function convertToRaw(src: Image, dst: string, onProgress?: ProgressCallback): void {
  convertImage(src, dst, { format: 'raw', onProgress });
}
