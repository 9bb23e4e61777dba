/**
 * A raw file's holes, so that a raw image reports them as zero and nothing reads them: Node's fs
 * has no SEEK_DATA/SEEK_HOLE, so a small native binding asks (native/file-extents.c, `npm run
 * build:native`). Without it, or under Deno, whose node:fs descriptors are not the kernel's (an
 * lseek on one would ask about another file), every byte is data: slower, never wrong. A hole is
 * only ever what the kernel calls one, so it reads as zeros; a file system that cannot tell
 * reports data.
 */
import { loadNativeBinding } from './native-binding.js';

interface ExtentsBinding {
  dataRun(fd: number, offset: number, end: number): number;
}

let binding: ExtentsBinding | null | undefined;

/**
 * From `offset`, at most `len` bytes: n > 0 bytes of data, or a hole of -n bytes; never 0. Past
 * the end of the file is a hole (it reads as zeros); the engine asks only below it.
 */
export function dataRun(fd: number, offset: number, len: number): number {
  if (binding === undefined) binding = loadNativeBinding<ExtentsBinding>('file-extents');
  if (!binding || len <= 0) return len;
  const n = binding.dataRun(fd, offset, offset + len);
  // Anything out of bounds counts as data: the safe answer.
  return n !== 0 && Math.abs(n) <= len ? n : len;
}
