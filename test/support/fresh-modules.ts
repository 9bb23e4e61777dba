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
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, vi } from 'vitest';

vi.resetModules();

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
