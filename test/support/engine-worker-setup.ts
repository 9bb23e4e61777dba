/**
 * vitest setup file: point the engine pool at a bundle of the worker's sources (engine-worker.ts),
 * cached under node_modules/.cache by the hash of src/, so one bundle serves every test file.
 * It imports no engine module (worker-script.ts imports nothing): a test file's vi.mock of
 * node:fs must still reach the engine, which is loaded after this runs.
 */
import { pathToFileURL } from 'node:url';
import { setEngineWorkerScript } from '../../src/worker/worker-script.js';

/**
 * The bundle global-setup.ts made for this run (COWCHAIN_TEST_ENGINE_WORKER): once per run rather
 * than a hash of src/ and an import of esbuild in every test process. Without it (a config with no
 * global setup), this process finds or makes the bundle itself.
 */
async function engineWorkerScript(): Promise<string> {
  const given = process.env.COWCHAIN_TEST_ENGINE_WORKER;
  // (watch mode reruns files after source edits: there the hash is taken again)
  if (given && process.env.VITEST_MODE !== 'WATCH') return given;
  const { engineWorkerBundle } = await import('./engine-worker.js');
  return engineWorkerBundle();
}

setEngineWorkerScript(pathToFileURL(await engineWorkerScript()));
