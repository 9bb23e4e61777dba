// Runs test/deno/smoke.ts under Deno 2 against the built package (dist/ + build/cowchain.wasm).
// Never skipped: if Deno is missing or cannot run the suite, this test fails.
//
// Deno comes from the `deno` devDependency (test/support/deno.ts finds it).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { runProcess, type ProcessResult } from '../support/child.js';
import { findDeno, type DenoCommand } from '../support/deno.js';
import { openImage } from '../../src/index.js';
import { requireQemu } from '../support/qemu.js';
import { cryptoPrimitivesDigest } from './crypto-primitives.js';

/** smoke.ts's LUKS_SECRET. */
const DENO_LUKS_SECRET = Buffer.from('deno luks smoke secret');

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SMOKE = path.join(ROOT, 'test/deno/smoke.ts');
/**
 * Deno's permissions for the suite: files (images, volume dirs), the process's uid (the driver
 * checks with access(2) that it may write a volume's files, and Deno's access() reads the uid),
 * and the suite's own self-test variable. The README's Deno section names the same.
 */
const DENO_ARGS = ['run', '--no-lock', '--no-prompt', '--allow-read', '--allow-write', '--allow-sys=uid', '--allow-env=COWCHAIN_SMOKE_SELF_TEST'];

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
    // runtime, 6 engine checks, the crypto primitives, 3 async checks, 2 driver delete orders: a suite that silently lost checks fails here
    expect(Number(summary![1])).toBeGreaterThanOrEqual(13);
    // The LUKS primitives give under Deno the bytes they give here under Node.
    expect(r.stdout).toContain(`crypto primitives digest: ${cryptoPrimitivesDigest()}`);
    for (const part of ['runtime is Deno', 'engine: 2-layer chain, commitImage', 'engine: LUKS-encrypted qcow2', 'async: commit in a worker', 'async: an AbortSignal cancels', 'driver: volume, two snapshots, delete older first', 'driver: volume, two snapshots, delete newer first']) {
      expect(r.stdout).toContain(`ok   ${part}`);
    }
  });

  // The LUKS check leaves its committed encrypted base and the guest bytes it must read: the same
  // bytes decrypt identically here in Node and in qemu-img (the referee of the whole suite).
  it('an encrypted image Deno wrote (node:crypto under Deno) reads identically in Node and in qemu-img with the secret', () => {
    const file = path.join(work, 'luks-from-deno.qcow2');
    expect(fs.existsSync(file), 'the smoke suite (previous test) left no encrypted image').toBe(true);
    const want = fs.readFileSync(path.join(work, 'luks-from-deno.raw'));
    const img = openImage(file, { keySecrets: () => DENO_LUKS_SECRET });
    try {
      expect(img.encrypted).toBe(true);
      expect(Buffer.from(img.read(0, img.virtualSize)).equals(want)).toBe(true);
    } finally {
      img.close();
    }
    requireQemu();
    const keyFile = path.join(work, 'luks.key');
    fs.writeFileSync(keyFile, DENO_LUKS_SECRET);
    const out = path.join(work, 'luks-by-qemu.raw');
    const opts = ['--object', `secret,id=s0,file=${keyFile}`, '--image-opts', `driver=qcow2,file.filename=${file},encrypt.key-secret=s0`];
    const r = spawnSync('qemu-img', ['convert', ...opts, '-O', 'raw', out], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(fs.readFileSync(out).equals(want)).toBe(true);
    const c = spawnSync('qemu-img', ['check', ...opts], { encoding: 'utf8' });
    expect(c.status, c.stdout + c.stderr).toBe(0);
  });

  it('a failing check makes the suite exit non-zero', async () => {
    expect(deno.cmd, 'Deno not found (see the first test)').not.toBeNull();
    const r = await runSmoke(deno.cmd!, { COWCHAIN_SMOKE_SELF_TEST: 'fail' });
    expect(r.status, explain(r)).toBe(1);
    expect(r.stdout).toContain('FAIL harness self-test');
    expect(r.stdout).toMatch(/^\d+ passed, 1 failed$/m);
  });
});
