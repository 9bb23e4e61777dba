/**
 * Durable file-system updates in one directory: replace a small file atomically, make a
 * directory entry change (create, rename, unlink) durable.
 *
 * Only the fsyncs, which wait for the disk, and the removal of images (unlinkAsync) go to
 * libuv's thread pool; the other steps (open, write a few hundred bytes, close, rename, link, the
 * removal of a small temp file) are synchronous, as the engine's own
 * file access and the volume lock's are. Each awaited step of node:fs/promises is a round trip
 * through the pool and the event loop: a snapshot create made some 37 of them, 9 per replaced
 * file, and waited on the event loop 7-15 ms in all where its fsyncs took 2-3 ms.
 */
import { randomHex } from '../load-on-use.js';
import fs from 'node:fs';
import path from 'node:path';
import { CowError, isCowError } from '../errors.js';

/**
 * The names in `dir`, read on the thread pool (a share may hold thousands of volumes) through
 * node:fs's callback, not node:fs/promises: that module takes a start some 1 ms to load (with
 * readline and the file watchers), and the short volume commands need nothing else of it.
 */
export function readdirAsync(dir: string): Promise<string[]> {
  return new Promise((resolve, reject) => fs.readdir(dir, (e, names) => (e ? reject(e) : resolve(names))));
}

/**
 * unlink(2) on the thread pool: removing an image frees its blocks, which for a large file holds
 * the caller for as long (a 1 GiB snapshot: 260 ms of a service's event loop).
 */
export function unlinkAsync(file: string): Promise<void> {
  return new Promise((resolve, reject) => fs.unlink(file, (e) => (e ? reject(e) : resolve())));
}

/** fsync(2) of `fd` on the thread pool: the one step that waits for the disk. */
export function fsyncAsync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fsync(fd, (e) => (e ? reject(e) : resolve())));
}

/**
 * fsync a directory, so that entries created, renamed or removed in it survive a crash.
 * EINVAL (a file system that cannot fsync a directory) is accepted: the change is then as durable
 * as that file system makes it, and failing every update would make the volume unusable.
 */
export async function syncDir(dir: string): Promise<void> {
  const fd = fs.openSync(dir, 'r');
  try {
    await fsyncAsync(fd);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Replace `dir/name` with `content` atomically and durably: a crash at any instant leaves either
 * the old file or the new one, complete. The temp file is `dir/<tempPrefix><random>` (same
 * directory: rename is only atomic within one file system); on failure before the rename it is
 * removed and the old file is untouched. `what` names the file in error messages. `beforeRename`
 * runs right before the rename, after the slow part (a lock check: nothing is published by a
 * holder that lost its lock meanwhile); what it throws is passed on after the cleanup. `mode`:
 * the new file's mode (default 0o666 less the umask).
 */
export async function writeFileAtomic(
  dir: string,
  name: string,
  tempPrefix: string,
  content: string,
  what: string,
  beforeRename?: () => void,
  mode?: number,
): Promise<void> {
  const target = path.join(dir, name);
  // Random suffix: concurrent writers (or a leftover from a crash) never share a temp file.
  // 'wx' (O_EXCL): never reuse or follow something already at that name.
  const temp = path.join(dir, `${tempPrefix}${randomHex(8)}`);
  let fd: number | undefined;
  try {
    fd = fs.openSync(temp, 'wx', 0o666);
    if (mode !== undefined) fs.fchmodSync(fd, mode); // chmod, not open's mode: the umask does not apply
    fs.writeFileSync(fd, content, 'utf8');
    // fsync before rename: otherwise a crash can leave the rename durable but the data not,
    // i.e. an empty or partial file under the real name.
    await fsyncAsync(fd);
    fs.closeSync(fd);
    fd = undefined;
    beforeRename?.();
    // rename(2) replaces the old file atomically: readers see the old or the new content.
    fs.renameSync(temp, target);
  } catch (e) {
    if (fd !== undefined) closeQuietly(fd);
    unlinkQuietly(temp);
    if (isCowError(e)) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new CowError('ECOW_IO', `cannot write ${what} ${target}: ${code ?? String(e)}`, { cause: e });
  }
  // The rename is a directory update; until the directory is on disk a crash can bring back the
  // old file (or, for a first write, no file at all).
  try {
    await syncDir(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CowError('ECOW_IO', `${what} ${target} was replaced but fsync of directory ${dir} failed: ${code ?? String(e)}`, {
      cause: e,
    });
  }
}

/**
 * Create `dir/name` whole or not at all, never replacing anything: `make` writes a temp file
 * `dir/<tempPrefix><random>` (and makes it durable), which is then hard-linked to `name` (EEXIST
 * → ECOW_EXISTS: link(2) never clobbers) and unlinked. A failure removes the temp file; a crash
 * can leave one behind (its prefix says whose it is). `mode`: the new file's mode.
 */
export async function createFileAtomic(
  dir: string,
  name: string,
  tempPrefix: string,
  make: (tempPath: string) => void | Promise<void>,
  mode?: number,
): Promise<string> {
  const target = path.join(dir, name);
  const temp = path.join(dir, `${tempPrefix}${randomHex(8)}`);
  try {
    await make(temp);
    if (mode !== undefined) fs.chmodSync(temp, mode);
    try {
      fs.linkSync(temp, target);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new CowError(code === 'EEXIST' ? 'ECOW_EXISTS' : 'ECOW_IO', `cannot create ${target}: ${code ?? String(e)}`, { cause: e });
    }
  } finally {
    // Linked, this only drops a name; after a failure it removes what `make` wrote (an image).
    await unlinkAsync(temp).catch(() => {});
  }
  try {
    await syncDir(dir);
  } catch (e) {
    throw new CowError('ECOW_IO', `created ${target} but fsync of directory ${dir} failed: ${(e as Error).message}`, { cause: e });
  }
  return target;
}

function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // the error that brought us here is the one to report
  }
}

function unlinkQuietly(file: string): void {
  try {
    fs.unlinkSync(file);
  } catch {
    // already gone, or never made
  }
}
