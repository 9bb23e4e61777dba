import * as fs from 'node:fs';
import { CowError } from '../errors.js';
import { lockImage, type LockMode } from './image-lock.js';
import { monotonicMs } from '../load-on-use.js';
import { writeBacks } from './write-back.js';
import { dataRun } from './file-extents.js';

/**
 * Where an image's bytes live. The engine sees only numeric handles; each handle is one Backend.
 * All calls are synchronous: the engine runs to completion inside one wasm call.
 */
export interface Backend {
  /** Read into `buf` at `offset`; returns bytes read (fewer only at end of file). */
  read(buf: Uint8Array, offset: number): number;
  write(buf: Uint8Array, offset: number): void;
  size(): number;
  /**
   * From `offset` (below size()), at most `len` bytes: n > 0 bytes that may hold data, or a hole
   * of -n bytes that reads as zeros. Absent: everything is data.
   */
  extent?(offset: number, len: number): number;
  /** Bytes the file takes on its device (st_blocks × 512). Absent: unknown. */
  allocated?(): number;
  truncate(size: number): void;
  /** Make every completed write durable. */
  flush(): void;
  close(): void;
}

/** Bytes written to one file after which a background write-back starts (see FileBackend). */
const WRITE_BACK_BYTES = 128 << 20;

/** Least time between two runs of a FileBackend's guard: a lock check is a few syscalls. */
const GUARD_INTERVAL_MS = 10;

/** A file on the host file system (Node `fs`, synchronous, positional I/O). */
export class FileBackend implements Backend {
  private fd: number;
  readonly path: string;
  /** Bytes written since the last flush or background write-back. */
  private unsynced = 0;
  /**
   * Whether anything may be unsynced: a write or truncate through this descriptor since the last
   * flush that succeeded (true at open, so a file's first flush always syncs). The engine flushes
   * after each step of its crash-safe order, and an image's close flushes again: a flush with
   * nothing written since the last one skips its fdatasync (a snapshot create made four where
   * two do, a small delete seven where four do). Durability is unchanged: an fdatasync covers
   * every write completed before it, and a failed one leaves this set.
   */
  private dirty = true;
  /** A second descriptor of the same file, for write-backs (-1: none yet; -2: not possible). */
  private writeBackFd = -1;
  /**
   * Called before every write and truncate (at most once per GUARD_INTERVAL_MS): the volume
   * driver passes its lock's check, so a holder whose lease was taken over while it was stopped
   * (SIGSTOP, a frozen VM) fails its very next write with ECOW_LOCK_LOST instead of overwriting
   * the next holder's work. What remains is the write already inside the kernel when it stopped,
   * plus the writes of at most GUARD_INTERVAL_MS of running time.
   */
  guard: (() => void) | undefined;
  private guardedAt = -Infinity;

  /**
   * `create`: make the file (or empty an existing one), like qemu-img create. `lock`: qemu's
   * image locks (image-lock.ts) — a writable file always gets the writer's (ECOW_IMAGE_LOCKED when
   * another process holds it), a read-only one the reader's when asked (default none).
   */
  constructor(path: string, writable: boolean, create = false, lock: LockMode = 'none') {
    this.path = path;
    try {
      // A new file is locked before it is emptied: 'w+' would truncate what someone else holds.
      this.fd = fs.openSync(path, create ? fs.constants.O_RDWR | fs.constants.O_CREAT : writable ? 'r+' : 'r', 0o666);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new CowError(err.code === 'ENOENT' ? 'ECOW_NOT_FOUND' : 'ECOW_IO', `cannot open ${path}: ${err.message}`, { cause: e });
    }
    try {
      lockImage(this.fd, path, writable || create ? 'write' : lock);
      if (create) fs.ftruncateSync(this.fd, 0);
    } catch (e) {
      fs.closeSync(this.fd);
      throw e;
    }
  }

  read(buf: Uint8Array, offset: number): number {
    let done = 0;
    while (done < buf.length) {
      const n = fs.readSync(this.fd, buf, done, buf.length - done, offset + done);
      if (n === 0) break;
      done += n;
    }
    return done;
  }

  /** Run the guard, unless it passed less than GUARD_INTERVAL_MS ago (monotonic time: a stop counts). */
  private guardIo(): void {
    if (!this.guard) return;
    const now = monotonicMs();
    if (now - this.guardedAt < GUARD_INTERVAL_MS) return;
    this.guard();
    this.guardedAt = monotonicMs();
  }

  write(buf: Uint8Array, offset: number): void {
    this.guardIo();
    this.dirty = true;
    let done = 0;
    while (done < buf.length) done += fs.writeSync(this.fd, buf, done, buf.length - done, offset + done);
    this.unsynced += buf.length;
    if (this.unsynced >= WRITE_BACK_BYTES) this.startWriteBack();
  }

  /**
   * Start an fdatasync without waiting for it (write-back.ts). The disk then drains the page cache
   * while the engine goes on copying, and the flush at the end has less left to wait for. A 1 GiB
   * sequential commit (bench workload (c)) spent about half its time in that last flush.
   *
   * Nothing is promised by a write-back. Only flush() makes writes durable, so the engine's
   * crash-safe order is untouched. A write-back runs on a descriptor of its own. Linux reports
   * a write-back error once per open file, so an error never gets used up here: the flush on the
   * image's own descriptor still sees it. When as many write-backs as allowed are running, none
   * starts, and the count goes on to the next write.
   */
  private startWriteBack(): void {
    if (this.writeBackFd === -1) this.writeBackFd = this.openSameFile();
    if (this.writeBackFd < 0) {
      this.unsynced = 0;
      return;
    }
    if (writeBacks().sync(this.writeBackFd)) this.unsynced = 0;
  }

  /** A second descriptor of this very file (same inode), or -2 when there is none to be had. */
  private openSameFile(): number {
    let fd = -2;
    try {
      fd = fs.openSync(this.path, 'r');
      const a = fs.fstatSync(fd);
      const b = fs.fstatSync(this.fd);
      if (a.ino === b.ino && a.dev === b.dev) return fd;
    } catch {
      // renamed or removed meanwhile: no write-backs, only the final flush
    }
    if (fd >= 0) fs.closeSync(fd);
    return -2;
  }

  size(): number {
    return fs.fstatSync(this.fd).size;
  }

  extent(offset: number, len: number): number {
    return dataRun(this.fd, offset, len);
  }

  allocated(): number {
    // st_blocks counts 512-byte units on Linux; a platform without it (or Deno's node:fs, whose
    // blocks may be absent) answers unknown.
    const { blocks } = fs.fstatSync(this.fd);
    return typeof blocks === 'number' && Number.isFinite(blocks) && blocks >= 0 ? blocks * 512 : -1;
  }

  truncate(size: number): void {
    this.guardIo();
    this.dirty = true;
    fs.ftruncateSync(this.fd, size);
  }

  flush(): void {
    if (!this.dirty) return;
    this.unsynced = 0;
    fs.fdatasyncSync(this.fd);
    this.dirty = false;
  }

  close(): void {
    if (this.fd < 0) return;
    fs.closeSync(this.fd);
    this.fd = -1;
    // A write-back still running uses its descriptor: that one is closed when the last one ends.
    if (this.writeBackFd >= 0) writeBacks().close(this.writeBackFd);
    this.writeBackFd = -2;
  }
}

/** Bytes in memory: for sandboxes without a file system, and for tests. */
export class MemoryBackend implements Backend {
  private buf: Uint8Array;
  private len: number;

  constructor(initial?: Uint8Array) {
    this.buf = initial ? new Uint8Array(initial) : new Uint8Array(0);
    this.len = this.buf.length;
  }

  /** The current contents (a copy). */
  bytes(): Uint8Array {
    return this.buf.slice(0, this.len);
  }

  read(buf: Uint8Array, offset: number): number {
    if (offset >= this.len) return 0;
    const n = Math.min(buf.length, this.len - offset);
    buf.set(this.buf.subarray(offset, offset + n));
    return n;
  }

  write(buf: Uint8Array, offset: number): void {
    this.ensure(offset + buf.length);
    this.buf.set(buf, offset);
    if (offset + buf.length > this.len) this.len = offset + buf.length;
  }

  size(): number {
    return this.len;
  }

  truncate(size: number): void {
    this.ensure(size);
    if (size < this.len) this.buf.fill(0, size, this.len);
    this.len = size;
  }

  flush(): void {}
  close(): void {}

  private ensure(n: number): void {
    if (n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(n, this.buf.length * 2, 4096));
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }
}
