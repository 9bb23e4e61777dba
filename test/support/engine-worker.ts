/**
 * Engine workers when the tests run from sources: plain node cannot run src/worker/engine-worker.ts,
 * so it is bundled with esbuild into one .mjs that plain node runs as a worker thread.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSync } from 'esbuild';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const ENTRY = path.join(ROOT, 'src/worker/engine-worker.ts');
/** CommonJS dependencies bundled in ESM need `require` for node built-ins. */
export const REQUIRE_BANNER = "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);";

/** Hash of every source file: a cached bundle is reused until the sources change. */
export function sourcesHash(): string {
  const h = createHash('sha256');
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts')) h.update(p).update(fs.readFileSync(p));
    }
  };
  walk(path.join(ROOT, 'src'));
  return h.digest('hex').slice(0, 16);
}

/**
 * The engine worker's bundle for the current sources, cached under node_modules/.cache by the hash
 * of src/ (made when missing): one bundle serves every test file.
 */
export function engineWorkerBundle(): string {
  const cache = path.join(ROOT, 'node_modules/.cache/cowchain-engine-worker');
  fs.mkdirSync(cache, { recursive: true });
  const script = path.join(cache, `engine-worker-${sourcesHash()}.mjs`);
  if (!fs.existsSync(script)) bundleEngineWorker(script);
  return script;
}

/** Bundle the engine worker to `out` (one ESM file plain node runs as a worker thread). */
export function bundleEngineWorker(out: string): void {
  const temp = `${out}.${process.pid}.tmp.mjs`;
  buildSync({ entryPoints: [ENTRY], outfile: temp, bundle: true, platform: 'node', format: 'esm', target: 'node20', logLevel: 'warning', banner: { js: REQUIRE_BANNER } });
  fs.renameSync(temp, out); // atomic: test files bundling at once never see half a file
}

