/**
 * One worker thread, whatever the runtime: Node's worker_threads, or a Web Worker under Deno.
 * The pool sees messages in, messages out, and one `exit` when the thread is gone for any reason
 * (crash, uncaught error, terminate) — so a job never waits on a thread that no longer exists.
 */
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker as NodeWorker } from 'node:worker_threads';
import { CowError } from '../errors.js';
import type { HostMessage, WorkerMessage } from './protocol.js';

export interface EngineThread {
  post(message: HostMessage): void;
  /** Whether the host process may exit while this thread lives (Node; Web Workers cannot say). */
  keepAlive(yes: boolean): void;
  terminate(): void;
}

export interface ThreadEvents {
  message(message: WorkerMessage): void;
  /** The thread is gone; `why` for the error message. Called once. */
  exit(why: string): void;
}

interface WebWorker {
  postMessage(message: unknown): void;
  terminate(): void;
  onmessage: ((e: { data: WorkerMessage }) => void) | null;
  onerror: ((e: { message?: string; preventDefault(): void }) => void) | null;
  onmessageerror: ((e: unknown) => void) | null;
}
type WebWorkerConstructor = new (url: string, options: { type: 'module' }) => WebWorker;

/** Deno has Web Workers (and a worker_threads emulation on top of them): use the real ones. */
const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== 'undefined';

export function startThread(script: URL, events: ThreadEvents): EngineThread {
  if (script.protocol === 'file:' && !fs.existsSync(fileURLToPath(script))) {
    throw new CowError('ECOW_ENGINE_LOAD', `engine worker script ${script.href} does not exist (is the package built?)`);
  }
  let gone = false;
  const exit = (why: string) => {
    if (gone) return;
    gone = true;
    events.exit(why);
  };
  if (isDeno) {
    const Ctor = (globalThis as unknown as { Worker: WebWorkerConstructor }).Worker;
    const w = new Ctor(script.href, { type: 'module' });
    w.onmessage = (e) => events.message(e.data);
    w.onerror = (e) => {
      e.preventDefault();
      w.terminate();
      exit(`failed: ${e.message ?? 'uncaught error'}`);
    };
    w.onmessageerror = () => {
      w.terminate();
      exit('sent a message that could not be read');
    };
    return {
      post: (m) => w.postMessage(m),
      keepAlive: () => {},
      terminate: () => {
        w.terminate();
        exit('was terminated');
      },
    };
  }
  const w = new NodeWorker(script);
  let lastError: Error | undefined;
  w.on('message', (m: WorkerMessage) => events.message(m));
  w.on('error', (e: Error) => (lastError = e));
  w.on('messageerror', (e: Error) => (lastError = e));
  w.on('exit', (code: number) => exit(`exited with code ${code}${lastError ? ` (${lastError.message})` : ''}`));
  return {
    post: (m) => w.postMessage(m),
    keepAlive: (yes) => (yes ? w.ref() : w.unref()),
    terminate: () => void w.terminate(),
  };
}
