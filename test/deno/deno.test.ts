// Runs test/deno/smoke.ts under Deno 2 against the built package (dist/ + build/cowchain.wasm).
// Never skipped: if Deno is missing or cannot run the suite, this test fails.
//
// How Deno is found: the `deno` devDependency ships its binary in a per-platform package
// (@deno/linux-x64-glibc, @deno/darwin-arm64, …). Its postinstall (which would copy the binary
// to node_modules/deno/deno) may not run — npm 11 holds back install scripts that were not
// approved — so we call the platform package's binary directly, then fall back to
// node_modules/deno/deno and last to `node node_modules/deno/bin.cjs` (which installs on first use).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { runProcess, type ProcessResult } from '../support/child.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SMOKE = path.join(ROOT, 'test/deno/smoke.ts');
const EXE = process.platform === 'win32' ? 'deno.exe' : 'deno';
/** Deno's permissions for the suite: files (images, volume dirs), and the suite's own self-test variable. */
const DENO_ARGS = ['run', '--no-lock', '--no-prompt', '--allow-read', '--allow-write', '--allow-env=COWCHAIN_SMOKE_SELF_TEST'];

interface DenoCommand {
  file: string;
  prefix: string[];
  how: string;
}

function works(cmd: DenoCommand): string | null {
  const r = spawnSync(cmd.file, [...cmd.prefix, '--version'], { encoding: 'utf8', timeout: 30_000 });
  return r.status === 0 && /^deno \d+\./.test(r.stdout) ? r.stdout.split('\n')[0] : null;
}

/** The first way of running Deno that answers `--version`, and every way tried (for the failure message). */
function findDeno(): { cmd: DenoCommand | null; version: string | null; tried: string[] } {
  const candidates: DenoCommand[] = [];
  const platformDir = path.join(ROOT, 'node_modules/@deno');
  if (fs.existsSync(platformDir)) {
    for (const name of fs.readdirSync(platformDir).sort()) {
      const file = path.join(platformDir, name, EXE);
      if (fs.existsSync(file)) candidates.push({ file, prefix: [], how: `node_modules/@deno/${name}/${EXE}` });
    }
  }
  const installed = path.join(ROOT, 'node_modules/deno', EXE);
  if (fs.existsSync(installed)) candidates.push({ file: installed, prefix: [], how: `node_modules/deno/${EXE}` });
  const shim = path.join(ROOT, 'node_modules/deno/bin.cjs');
  if (fs.existsSync(shim)) candidates.push({ file: process.execPath, prefix: [shim], how: 'node node_modules/deno/bin.cjs' });
  const tried: string[] = [];
  for (const cmd of candidates) {
    tried.push(cmd.how);
    const version = works(cmd);
    if (version) return { cmd, version, tried };
  }
  return { cmd: null, version: null, tried };
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cowchain-deno-test-'));
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

/** The smoke suite under Deno, run without holding this process's event loop. */
function runSmoke(cmd: DenoCommand, env: Record<string, string> = {}): Promise<ProcessResult> {
  return runProcess(cmd.file, [...cmd.prefix, ...DENO_ARGS, SMOKE, work], { cwd: ROOT, timeoutMs: 600_000, env: { ...process.env, NO_COLOR: '1', ...env } });
}

function explain(r: ProcessResult): string {
  return `exit ${r.status}${r.signal ? ` (signal ${r.signal})` : ''}${r.error ? ` (${r.error.message})` : ''}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

describe('Deno 2 runs the built package', () => {
  const deno = findDeno();

  it('finds a working Deno 2 binary in node_modules', () => {
    expect(deno.cmd, `no working Deno (tried: ${deno.tried.join(', ') || 'nothing found'}); run npm install`).not.toBeNull();
    expect(Number(/^deno (\d+)\./.exec(deno.version ?? '')?.[1])).toBeGreaterThanOrEqual(2);
  });

  it('the built package exists (npm run build)', () => {
    for (const f of ['dist/index.js', 'dist/volume/driver.js', 'build/cowchain.wasm']) {
      expect(fs.existsSync(path.join(ROOT, f)), `${f} is missing: run npm run build first`).toBe(true);
    }
  });

  it('smoke suite passes under Deno (engine and volume driver)', async () => {
    expect(deno.cmd, 'Deno not found (see the first test)').not.toBeNull();
    const r = await runSmoke(deno.cmd!);
    expect(r.status, explain(r)).toBe(0);
    const summary = /^(\d+) passed, (\d+) failed$/m.exec(r.stdout);
    expect(summary, explain(r)).not.toBeNull();
    expect(Number(summary![2])).toBe(0);
    // runtime, 5 engine checks, 3 async checks, 2 driver delete orders: a suite that silently lost checks fails here
    expect(Number(summary![1])).toBeGreaterThanOrEqual(11);
    for (const part of ['runtime is Deno', 'engine: 2-layer chain, commitImage', 'async: commit in a worker', 'async: an AbortSignal cancels', 'driver: volume, two snapshots, delete older first', 'driver: volume, two snapshots, delete newer first']) {
      expect(r.stdout).toContain(`ok   ${part}`);
    }
  });

  it('a failing check makes the suite exit non-zero', async () => {
    expect(deno.cmd, 'Deno not found (see the first test)').not.toBeNull();
    const r = await runSmoke(deno.cmd!, { COWCHAIN_SMOKE_SELF_TEST: 'fail' });
    expect(r.status, explain(r)).toBe(1);
    expect(r.stdout).toContain('FAIL harness self-test');
    expect(r.stdout).toMatch(/^\d+ passed, 1 failed$/m);
  });
});
