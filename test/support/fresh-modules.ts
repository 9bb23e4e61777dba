/**
 * vitest setup file, the first one: every test file starts from fresh modules, as in a process of
 * its own. The quick tier runs its files in reused processes (`isolate: false` in
 * vitest.config.ts): a process per file cost each file ~0.3 s of CPU to start node and vitest's
 * worker. Without isolation vitest keeps the module cache from one file to the next; dropping it
 * here gives each file its own copies of src/ and test/support/ (a new Engine, its own caches and
 * module state), so a file sees no state a previous one left. What stays is what a process keeps
 * anyway: node_modules (loaded by Node itself, not by vitest), native bindings, and process.env,
 * which a test that changes it restores in a `finally`.
 *
 * At the end of the file, the default engine pool's worker threads (src/worker/pool.ts, the pool
 * the driver and the async API use unless given another) are stopped, as the end of the file's
 * process stopped them: idle, they would stay for the rest of the run. A pool a test makes itself
 * it closes itself.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, vi } from 'vitest';

vi.resetModules();

/**
 * What the runner answered when this process asked for a module's transformed code or resolved
 * an import: the same every time in a run that does not watch files, so each file's fresh copies
 * of src/ are evaluated from code already here instead of two round trips to the runner per
 * module (63 modules for src/index.ts; ~0.17 s of CPU per file, mostly these messages). In
 * watch mode (files change between runs) nothing is kept.
 */
type Rpc = { fetch: (id: string, mode: string) => Promise<unknown>; resolveId: (id: string, importer: string | undefined, mode: string) => Promise<unknown> };
const RPC_CACHE = Symbol.for('cowchain.test.rpc-cache');
const processState = globalThis as { [RPC_CACHE]?: { wrapped: WeakSet<object>; fetched: Map<string, Promise<unknown>>; resolved: Map<string, Promise<unknown>> } };
const rpcCache = (processState[RPC_CACHE] ??= { wrapped: new WeakSet(), fetched: new Map(), resolved: new Map() });
const worker = (globalThis as { __vitest_worker__?: { rpc?: Rpc } }).__vitest_worker__;
if (worker?.rpc && !rpcCache.wrapped.has(worker.rpc) && process.env.VITEST_MODE !== 'WATCH') {
  const rpc = worker.rpc;
  const remember = (map: Map<string, Promise<unknown>>, key: string, ask: () => Promise<unknown>) => {
    let answer = map.get(key);
    if (!answer) {
      map.set(key, (answer = ask()));
      // (a failed answer is asked again next time)
      answer.catch(() => map.delete(key));
    }
    return answer;
  };
  const cached: Rpc = new Proxy(rpc, {
    get(target, key) {
      if (key === 'fetch') {
        return (id: string, mode: string) =>
          remember(rpcCache.fetched, `${mode}\0${id}`, async () => {
            const r = (await target.fetch(id, mode)) as { id?: string; externalize?: string; code?: string };
            // The runner may hand the code over as a file it will overwrite: keep the code itself.
            return r && r.id && !r.externalize ? { code: fs.readFileSync(r.id, 'utf8') } : r;
          });
      }
      if (key === 'resolveId') return (id: string, importer: string | undefined, mode: string) => remember(rpcCache.resolved, `${mode}\0${importer ?? ''}\0${id}`, () => target.resolveId(id, importer, mode));
      return Reflect.get(target, key) as unknown;
    },
  });
  rpcCache.wrapped.add(cached);
  worker.rpc = cached;
}

const POOL_MODULE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/worker/pool.ts');

// Registered first, so it runs after the file's own afterAll hooks (vitest runs them as a stack).
afterAll(() => {
  // Only if the file loaded the pool module: importing it here would load the engine into every file.
  // (vitest's module cache, keyed by file path: fail loudly if a vitest upgrade moves it.)
  const cache = (globalThis as { __vitest_worker__?: { moduleCache?: unknown } }).__vitest_worker__?.moduleCache;
  if (!(cache instanceof Map)) throw new Error("test/support/fresh-modules.ts: vitest's module cache (__vitest_worker__.moduleCache) is gone: update this file");
  const pool = (cache.get(POOL_MODULE) as { exports?: unknown } | undefined)?.exports as typeof import('../../src/worker/pool.js') | undefined;
  pool?.defaultEnginePool?.().terminate();
});
