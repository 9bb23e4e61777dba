/**
 * Bundle a TypeScript entry (a child process or worker thread of a test) into one ESM file that
 * plain node runs: started in a fraction of vite-node's time, which matters when a test starts
 * dozens of them on a loaded machine. The same approach as test/volume/crash.test.ts.
 *
 * The engine worker is bundled beside it (the driver's jobs run in worker threads).
 * The engine finds its wasm at ../../build/cowchain.wasm from its module: the bundle is written
 * two directories below a `build` link to the real build directory.
 * etcd3 (the etcd coordinator's client, loaded on demand) is not bundled: it reads its gRPC
 * definitions from beside its own files. A `node_modules` link beside `build` resolves it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { REQUIRE_BANNER, bundleEngineWorker } from './engine-worker.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Bundle `entry` (path relative to the repository root) into `dir`; returns the bundle's path. */
export async function bundleForNode(entry: string, dir: string, name = 'bundle'): Promise<string> {
  const home = fs.mkdtempSync(path.join(dir, `${name}-`));
  fs.symlinkSync(path.join(ROOT, 'build'), path.join(home, 'build'));
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(home, 'node_modules'));
  const out = path.join(home, 'a', 'b', `${name}.mjs`);
  await build({
    entryPoints: [path.join(ROOT, entry)],
    outfile: out,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    logLevel: 'warning',
    external: ['etcd3'],
    // CommonJS dependencies bundled in ESM need `require` for node built-ins.
    banner: { js: REQUIRE_BANNER },
  });
  // The engine pool loads engine-worker.js from beside its own module: beside the bundle here.
  bundleEngineWorker(path.join(path.dirname(out), 'engine-worker.js'));
  return out;
}
