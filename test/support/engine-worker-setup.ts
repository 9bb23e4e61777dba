/**
 * vitest setup file: point the engine pool at a bundle of the worker's sources (engine-worker.ts),
 * cached under node_modules/.cache by the hash of src/, so one bundle serves every test file.
 * It imports no engine module (worker-script.ts imports nothing): a test file's vi.mock of
 * node:fs must still reach the engine, which is loaded after this runs.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { setEngineWorkerScript } from '../../src/worker/worker-script.js';
import { ROOT, bundleEngineWorker, sourcesHash } from './engine-worker.js';

const cache = path.join(ROOT, 'node_modules/.cache/cowchain-engine-worker');
fs.mkdirSync(cache, { recursive: true });
const script = path.join(cache, `engine-worker-${sourcesHash()}.mjs`);
if (!fs.existsSync(script)) bundleEngineWorker(script);
setEngineWorkerScript(pathToFileURL(script));
