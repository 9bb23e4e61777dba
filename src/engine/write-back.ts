/**
 * Background write-back for FileBackend: fdatasyncs that drain the page cache while a job goes on
 * copying, so the job's final flush has little left to wait for.
 *
 * Engine jobs run synchronously, and a completion delivered through the event loop is not seen
 * until the job ends. With libuv's thread pool alone, a job could therefore start only as many
 * write-backs as the cap allows and none after: a 1 GiB commit drained its first 384 MiB in the
 * background and left the rest to its final flush. So the write-backs run on a small thread of
 * their own, which counts them down in shared memory; the job's thread reads that count without
 * an event loop and starts the next write-back as soon as one ends. Where no such thread can be
 * started (a runtime without `worker_threads`' eval, or a thread that failed), write-backs go to
 * libuv's pool as before, with the same cap. The CLI takes the pool first and the thread only past
 * its cap (preferPoolWriteBacks): a short job there starts no thread.
 *
 * Nothing is promised by a write-back: only FileBackend.flush() makes writes durable.
 */
import * as fs from 'node:fs';
import { nodeWorkerThreads } from '../load-on-use.js';

/**
 * Write-backs in flight at once (running or queued) from this thread. Each holds the disk's write
 * queue, not a CPU; with more queued, a file finished with would still be synced after its job,
 * slowing the next job (an uncapped backlog made the next commits 2–3× slower).
 */
const MAX_IN_FLIGHT = 2;

/**
 * The thread's code (CommonJS: eval'd workers are scripts). It counts each write-back down twice:
 * in the thread's total and in the file's own count (`m.file`), then wakes a close waiting on it.
 * It never closes a descriptor itself: Node tracks descriptors per thread.
 */
const SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
const inFlight = new Int32Array(workerData);
parentPort.on('message', (m) => {
  try { fs.fdatasyncSync(m.fd); } catch {}
  const file = new Int32Array(m.file);
  Atomics.sub(file, 0, 1);
  Atomics.notify(file, 0);
  Atomics.sub(inFlight, 0, 1);
});
`;

export interface Syncer {
  /** Start a write-back of `fd` unless as many as allowed are running; whether it started. */
  sync(fd: number): boolean;
  /** Write-backs started and not yet seen to end. */
  inFlight(): number;
  /**
   * Close `fd` (on this thread) once the write-backs started on it have ended: by calling `done`
   * then, when given, instead of closing it.
   */
  close(fd: number, done?: () => void): void;
}

/** A thread that runs the write-backs and counts them down in shared memory. */
export function threadSyncer(): Syncer {
  const shared = new SharedArrayBuffer(4);
  const inFlight = new Int32Array(shared);
  const worker = new (nodeWorkerThreads().Worker)(SOURCE, { eval: true, workerData: shared });
  worker.unref();
  /** Per descriptor: its write-backs not yet ended, in memory the thread counts down. */
  const pending = new Map<number, Int32Array>();
  let broken = false;
  // A thread that fails leaves the counts where they were: at worst the cap stays reached and the
  // final flush does the work, as without write-backs.
  worker.on('error', () => (broken = true));
  worker.on('exit', () => (broken = true));
  return {
    sync(fd) {
      if (broken || Atomics.load(inFlight, 0) >= MAX_IN_FLIGHT) return false;
      let file = pending.get(fd);
      if (!file) pending.set(fd, (file = new Int32Array(new SharedArrayBuffer(4))));
      Atomics.add(file, 0, 1);
      Atomics.add(inFlight, 0, 1);
      worker.postMessage({ fd, file: file.buffer });
      return true;
    },
    inFlight: () => Atomics.load(inFlight, 0),
    close(fd, done = () => fs.closeSync(fd)) {
      const file = pending.get(fd);
      pending.delete(fd);
      // A thread that is gone runs nothing more on the descriptor.
      whenDone(broken ? undefined : file, done);
    },
  };
}

/**
 * Call `done` once `file`'s count is 0: at once if it is (the usual case after a flush), else when
 * the write-back thread wakes it (Atomics.waitAsync: the caller never blocks on a write-back).
 */
function whenDone(file: Int32Array | undefined, done: () => void): void {
  const left = file ? Atomics.load(file, 0) : 0;
  if (left <= 0) return done();
  const { async, value } = (Atomics as unknown as AtomicsWaitAsync).waitAsync(file!, 0, left);
  if (!async) return whenDone(file, done);
  void value.then(() => whenDone(file, done));
}

/** ES2024's Atomics.waitAsync (Node 16+, Deno), which this project's TypeScript lib predates. */
interface AtomicsWaitAsync {
  waitAsync(array: Int32Array, index: number, value: number): { async: false; value: string } | { async: true; value: Promise<string> };
}

/**
 * Write-backs in flight at once on libuv's pool. Each holds one of its threads (4 by default), so
 * one stays free for the process's other file work.
 */
const POOL_MAX_IN_FLIGHT = 3;

/** libuv's thread pool: completions are seen only when the event loop runs (see above). */
function poolSyncer(): Syncer {
  let inFlight = 0;
  const running = new Map<number, number>();
  const closeAfter = new Map<number, () => void>();
  return {
    sync(fd) {
      if (inFlight >= POOL_MAX_IN_FLIGHT) return false;
      inFlight++;
      running.set(fd, (running.get(fd) ?? 0) + 1);
      fs.fdatasync(fd, () => {
        inFlight--;
        const left = running.get(fd)! - 1;
        if (left > 0) return void running.set(fd, left);
        running.delete(fd);
        const done = closeAfter.get(fd);
        closeAfter.delete(fd);
        done?.();
      });
      return true;
    },
    inFlight: () => inFlight,
    close(fd, done = () => fs.close(fd, () => {})) {
      if (running.has(fd)) closeAfter.set(fd, done);
      else done();
    },
  };
}

/**
 * libuv's pool while it has room, the thread after: starting the thread (a Node worker, an
 * isolate of its own) costs a process some 2000 page faults and 60-100 ms of CPU, more than a
 * write-back of a short job saves (measured with `cowchain img commit`). A job that never yields to the event loop gets three
 * write-backs on the pool (its first 384 MiB) and the thread's for the rest; a `cowchain img
 * commit` of 256 MiB (bench workload (a) qcow2) starts no thread.
 */
export function poolThenThreadSyncer(startThread: () => Syncer): Syncer {
  const pool = poolSyncer();
  let thread: Syncer | undefined;
  let noThread = false;
  /** Descriptors with write-backs on the thread. */
  const threaded = new Set<number>();
  return {
    sync(fd) {
      if (pool.sync(fd)) return true;
      if (!thread && !noThread) {
        try {
          thread = startThread();
        } catch {
          noThread = true; // no worker_threads' eval here: the pool's cap holds
        }
      }
      if (!thread?.sync(fd)) return false;
      threaded.add(fd);
      return true;
    },
    inFlight: () => pool.inFlight() + (thread?.inFlight() ?? 0),
    close(fd, done) {
      // closed once, after the write-backs of both
      if (thread && threaded.delete(fd)) thread.close(fd, () => pool.close(fd, done));
      else pool.close(fd, done);
    },
  };
}

let syncer: Syncer | undefined;

let poolFirst = false;

/**
 * Write-backs go to libuv's pool first and to the thread only past the pool's cap
 * (poolThenThreadSyncer): for a process that runs one job and nothing else on the pool, the
 * `cowchain` CLI. Elsewhere the pool stays free for the process's other file work (a service's
 * engine workers share one pool). Takes effect if called before the first write-back.
 */
export function preferPoolWriteBacks(): void {
  poolFirst = true;
}

/** This thread's write-back runner, made at the first write-back. */
export function writeBacks(): Syncer {
  if (!syncer) {
    if (poolFirst) syncer = poolThenThreadSyncer(threadSyncer);
    else {
      try {
        syncer = threadSyncer();
      } catch {
        syncer = poolSyncer();
      }
    }
  }
  return syncer;
}
