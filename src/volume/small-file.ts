/**
 * Reading the volume's small control files (info file, journal) when they may be hostile or
 * broken: a symlink is not followed, a FIFO or device is never opened for a blocking read (a read
 * from a FIFO with no writer would hang the process while it keeps renewing the lock), and at
 * most `maxBytes` are read. Whatever goes wrong is one ECOW_INFO_INVALID line naming the file.
 */
import * as fs from 'node:fs';
import { CowError } from '../errors.js';

/** Bytes of `file`, or null when there is none. `what` names it in errors ("info file"). */
export function readSmallFile(file: string, maxBytes: number, what: string): Buffer | null {
  const invalid = (why: string, cause?: unknown): never => {
    throw new CowError('ECOW_INFO_INVALID', `${what} ${file}: ${why}`, { cause });
  };
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever.
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    if (code === 'ELOOP') return invalid('is a symbolic link (not followed)', e);
    return invalid(`unreadable (${code ?? String(e)})`, e);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) return invalid(`is not a regular file (${kindOf(st)})`);
    if (st.size > maxBytes) return invalid(`is ${st.size} bytes, more than the ${maxBytes} allowed`);
    // Read up to maxBytes + 1 (one more tells a file that grew past the limit), into a buffer
    // sized for what fstat said and grown if the file grew meanwhile: a zeroed maxBytes (1 MiB
    // for the info file) on every read cost page faults and zeroing on each of the many reads
    // an operation makes.
    let buf = Buffer.allocUnsafe(Math.min(st.size, maxBytes) + 1);
    let n = 0;
    for (;;) {
      if (n === buf.length) {
        if (n > maxBytes) break;
        const grown = Buffer.allocUnsafe(Math.min(2 * n, maxBytes + 1));
        buf.copy(grown, 0, 0, n);
        buf = grown;
      }
      const got = fs.readSync(fd, buf, n, buf.length - n, n);
      if (got === 0) break;
      n += got;
    }
    if (n > maxBytes) return invalid(`grew past the ${maxBytes} bytes allowed while being read`);
    return buf.subarray(0, n);
  } catch (e) {
    if (e instanceof CowError) throw e;
    return invalid(`unreadable (${(e as NodeJS.ErrnoException).code ?? String(e)})`, e);
  } finally {
    fs.closeSync(fd);
  }
}

function kindOf(st: fs.Stats): string {
  if (st.isFIFO()) return 'a FIFO';
  if (st.isDirectory()) return 'a directory';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  return 'not a plain file';
}

/** A value from a hostile file, for an error message: JSON-quoted, at most `max` characters. */
export function quoteBounded(value: string, max = 80): string {
  const q = JSON.stringify(value.length > max ? value.slice(0, max) : value);
  return value.length > max ? `${q}… (${value.length} characters)` : q;
}
