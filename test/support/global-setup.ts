/**
 * vitest globalSetup: runs once, before any test file. It makes sure the engine
 * (build/cowchain.wasm, from assembly/) and the built CLI bundle and package (dist/, from src/) are those
 * of this tree, building what is older than its sources, so that every test that runs
 * `node dist/cli/main.js` or loads the wasm tests this tree — also when a single file is run with
 * `npx vitest run test/…`. After `npm run build` (as `npm test` does first) nothing is rebuilt.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { engineWorkerBundle } from './engine-worker.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** The newest modification time of the files under `dir` (0 if none). */
function newest(dir: string): number {
  let t = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) t = Math.max(t, fs.statSync(path.join(e.parentPath, e.name)).mtimeMs);
  }
  return t;
}

const mtime = (file: string): number => (fs.existsSync(file) ? fs.statSync(file).mtimeMs : 0);

function run(what: string, args: string[]): void {
  const r = spawnSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${what} failed (exit ${r.status}):\n${r.stdout}${r.stderr}`);
}

/**
 * The runner's own event loop: a test process waits at most 60 s for the runner to answer
 * (vitest's RPC time-out), so a runner held that long fails the run with every test passed.
 * Blocks over 2 s are printed at the end, with when they ended.
 */
function watchRunnerLoop(): () => void {
  const TICK_MS = 250;
  let last = performance.now();
  const blocks: string[] = [];
  let longest = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    if (now - last - TICK_MS > 2_000) blocks.push(`${((now - last - TICK_MS) / 1000).toFixed(1)} s at ${new Date().toISOString()}`);
    longest = Math.max(longest, now - last - TICK_MS);
    last = now;
  }, TICK_MS);
  timer.unref();
  return () => {
    clearInterval(timer);
    for (const b of blocks) console.warn(`vitest runner: event loop held for ${b}`);
    if (process.env.COWCHAIN_LOOP_REPORT_MS) console.warn(`vitest runner: longest event-loop stall ${(longest / 1000).toFixed(2)} s`);
  };
}

export default function setup(): () => void {
  const wasm = path.join(ROOT, 'build/cowchain.wasm');
  if (mtime(wasm) < newest(path.join(ROOT, 'assembly'))) {
    console.log('global setup: building the engine (build/cowchain.wasm)');
    run('asc assembly/index.ts --target release', [path.join(ROOT, 'node_modules/assemblyscript/bin/asc.js'), 'assembly/index.ts', '--target', 'release']);
  }
  if (!fs.existsSync(path.join(ROOT, 'build/zstd-decoder.wasm'))) {
    console.log('global setup: extracting the zstd decoder (build/zstd-decoder.wasm)');
    run('scripts/extract-zstd.mjs', [path.join(ROOT, 'scripts/extract-zstd.mjs')]);
  }
  // tsc rewrites every output and the CLI bundle is built after it: a bundle older than the
  // newest source means a stale build. As `npm run build:ts`, dist/ starts empty (a moved source
  // leaves no stale output). Type errors do not stop tsc from emitting (test/package/typecheck.test.ts
  // reports them).
  const cli = path.join(ROOT, 'dist/cli/main.js');
  if (mtime(cli) < newest(path.join(ROOT, 'src'))) {
    console.log('global setup: building dist/ (tsc -p tsconfig.build.json, scripts/build-cli.mjs)');
    const started = Date.now();
    fs.rmSync(path.join(ROOT, 'dist'), { recursive: true, force: true });
    spawnSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: ROOT, encoding: 'utf8' });
    run('scripts/build-cli.mjs', [path.join(ROOT, 'scripts/build-cli.mjs')]);
    if (mtime(cli) < started - 2000) throw new Error(`global setup: the CLI was not built (${cli})`);
  }
  // The engine worker's bundle, once for the run: the test processes (started after this, with
  // this environment) read its path (test/support/engine-worker-setup.ts).
  process.env.COWCHAIN_TEST_ENGINE_WORKER = engineWorkerBundle();
  return watchRunnerLoop();
}
