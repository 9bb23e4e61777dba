/**
 * A raw file's holes, so that a raw image reports them as zero and nothing reads them: Node's fs
 * has no SEEK_DATA/SEEK_HOLE, so a small native binding asks (native/file-extents.c, `npm run
 * build:native`). Without it, or under Deno, whose node:fs descriptors are not the kernel's (an
 * lseek on one would ask about another file), every byte is data: slower, never wrong. A hole is
 * only ever what the kernel calls one, so it reads as zeros; a file system that cannot tell
 * reports data.
 */
import { createRequire } from 'node:module';

interface ExtentsBinding {
  dataRun(fd: number, offset: number, end: number): number;
}

let binding: ExtentsBinding | null | undefined;

function loadBinding(): ExtentsBinding | null {
  if (binding !== undefined) return binding;
  binding = null;
  const deno = typeof (globalThis as { Deno?: unknown }).Deno !== 'undefined';
  if (process.platform === 'linux' && !deno) {
    try {
      binding = createRequire(import.meta.url)('../../build/file-extents.node') as ExtentsBinding;
    } catch {
      binding = null;
    }
  }
  return binding;
}

/**
 * From `offset` (below `size`, the file's size), at most `len` bytes: n > 0 bytes of data, or a
 * hole of -n bytes; never 0.
 */
export function dataRun(fd: number, offset: number, len: number, size: number): number {
  const end = Math.min(offset + len, size);
  const b = loadBinding();
  if (!b || end <= offset) return len;
  const n = b.dataRun(fd, offset, end);
  // Anything out of bounds counts as data: the safe answer.
  return n !== 0 && Math.abs(n) <= end - offset ? n : end - offset;
}
