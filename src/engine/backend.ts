import * as fs from 'node:fs';
import { CowError } from '../errors.js';

/**
 * Where an image's bytes live. The engine sees only numeric handles; each handle is one Backend.
 * All calls are synchronous: the engine runs to completion inside one wasm call.
 */
export interface Backend {
  /** Read into `buf` at `offset`; returns bytes read (fewer only at end of file). */
  read(buf: Uint8Array, offset: number): number;
  write(buf: Uint8Array, offset: number): void;
  size(): number;
  truncate(size: number): void;
  /** Make every completed write durable. */
  flush(): void;
  close(): void;
}

/** A file on the host file system (Node `fs`, synchronous, positional I/O). */
export class FileBackend implements Backend {
  private fd: number;
  readonly path: string;

  /** `create`: make the file (or empty an existing one), like qemu-img create. */
  constructor(path: string, writable: boolean, create = false) {
    this.path = path;
    try {
      this.fd = fs.openSync(path, create ? 'w+' : writable ? 'r+' : 'r');
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new CowError(err.code === 'ENOENT' ? 'ECOW_NOT_FOUND' : 'ECOW_IO', `cannot open ${path}: ${err.message}`, { cause: e });
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

  write(buf: Uint8Array, offset: number): void {
    let done = 0;
    while (done < buf.length) done += fs.writeSync(this.fd, buf, done, buf.length - done, offset + done);
  }

  size(): number {
    return fs.fstatSync(this.fd).size;
  }

  truncate(size: number): void {
    fs.ftruncateSync(this.fd, size);
  }

  flush(): void {
    fs.fdatasyncSync(this.fd);
  }

  close(): void {
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
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
