/**
 * An engine worker thread: loads the engine the host sends it, then runs jobs (job-request.ts)
 * one at a time, opening their files itself. Runs as a Node worker_threads worker or as a Web
 * Worker (Deno); the protocol is protocol.ts.
 */
import { parentPort } from 'node:worker_threads';
import { setEngineSource, type EngineSource } from '../engine/engine.js';
import { CowError } from '../errors.js';
import { runJobRequest } from '../volume/job-request.js';
import { CONTROL, VERDICT, serializeError, type HostMessage, type WorkerMessage } from './protocol.js';

interface Port {
  post(message: WorkerMessage): void;
  listen(handler: (message: HostMessage) => void): void;
}

/** Node: the worker_threads parent port. A Web Worker (Deno): its global scope. */
function hostPort(): Port {
  if (parentPort) {
    const p = parentPort;
    return { post: (m) => p.postMessage(m), listen: (h) => p.on('message', h) };
  }
  const scope = globalThis as unknown as { postMessage(m: unknown): void; onmessage: ((e: { data: HostMessage }) => void) | null };
  return { post: (m) => scope.postMessage(m), listen: (h) => (scope.onmessage = (e) => h(e.data)) };
}

/** Thrown inside a job when the host said stop: the host reports its own reason. */
class StoppedByHost extends Error {}

const port = hostPort();
let loadError: CowError | undefined;

function run(message: Extract<HostMessage, { t: 'run' }>): void {
  const { id } = message;
  if (loadError) {
    port.post({ t: 'failed', id, error: serializeError(loadError), stopped: false });
    return;
  }
  const control = new Int32Array(message.control);
  const cancel = new AbortController();
  const cancelled = () => cancel.abort(new CowError('ECOW_CANCELLED', 'cancelled by the host'));
  const ask = (t: 'checkpoint' | 'guard'): void => {
    Atomics.store(control, CONTROL.verdict, VERDICT.pending);
    port.post({ t, id });
    Atomics.wait(control, CONTROL.verdict, VERDICT.pending);
    const verdict = Atomics.load(control, CONTROL.verdict);
    if (verdict === VERDICT.stop) throw new StoppedByHost();
    if (verdict === VERDICT.cancel) cancelled();
  };
  // No checkpoint on the host: read its cancel word, without a round trip (protocol.ts).
  const peek = (): void => {
    if (Atomics.load(control, CONTROL.cancel) !== 0) cancelled();
  };
  try {
    const result = runJobRequest(message.job, {
      stepBytes: message.stepBytes,
      signal: cancel.signal,
      checkpoint: message.checkpoint ? () => ask('checkpoint') : peek,
      guardIo: message.guard ? () => ask('guard') : undefined,
      onProgress: message.progress ? (done, total) => port.post({ t: 'progress', id, done, total }) : undefined,
    });
    port.post({ t: 'done', id, result });
  } catch (e) {
    port.post({ t: 'failed', id, error: serializeError(e), stopped: e instanceof StoppedByHost });
  }
}

port.listen((message) => {
  if (message.t === 'init') {
    try {
      setEngineSource(message.module as EngineSource);
    } catch (e) {
      loadError = e instanceof CowError ? e : new CowError('ECOW_ENGINE_LOAD', `engine worker: ${(e as Error).message}`, { cause: e });
    }
    return;
  }
  run(message);
});
