import * as fs from 'node:fs';
import { CowError } from '../errors.js';
import type { Image } from './image.js';

const CHUNK = 4 << 20;

export function isZero(buf: Uint8Array): boolean {
  if (buf.byteOffset % 8 !== 0) return buf.every((b) => b === 0);
  const words = new BigUint64Array(buf.buffer, buf.byteOffset, buf.byteLength >> 3);
  for (let i = 0; i < words.length; i++) if (words[i] !== 0n) return false;
  for (let i = words.length << 3; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

/**
 * Write the guest view of an image chain to a new raw file. Like qemu-img convert, ranges that
 * read as zeros are left as holes; the file is flushed before returning.
 */
export function convertToRaw(src: Image, dst: string, onProgress?: (done: number, total: number) => void): void {
  const size = src.virtualSize;
  let fd: number;
  try {
    fd = fs.openSync(dst, 'w');
  } catch (e) {
    throw new CowError('ECOW_IO', `cannot create ${dst}: ${(e as Error).message}`, { cause: e });
  }
  try {
    fs.ftruncateSync(fd, size);
    let done = 0;
    for (const extent of src.map()) {
      if (!extent.zero) {
        for (let off = extent.start; off < extent.start + extent.length; off += CHUNK) {
          const n = Math.min(CHUNK, extent.start + extent.length - off);
          const data = src.read(off, n);
          if (!isZero(data)) fs.writeSync(fd, data, 0, n, off);
        }
      }
      done += extent.length;
      onProgress?.(done, size);
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
