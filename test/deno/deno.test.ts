// Runs test/deno/smoke.ts under Deno 2 against the built package (dist/ + build/cowchain.wasm).
// Never skipped: if Deno is missing or cannot run the suite, this test fails.
//
// Deno comes from the `deno` devDependency (test/support/deno.ts finds it).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { runProcess, type ProcessResult } from '../support/child.js';
import { findDeno, type DenoCommand } from '../support/deno.js';
import { createImage, openImage } from '../../src/index.js';
import { qemuCreateLuks, qemuImg, requireQemu } from '../support/qemu.js';
import { cryptoPrimitivesDigest } from './crypto-primitives.js';

/** smoke.ts's LUKS_SECRET. */
const DENO_LUKS_SECRET = Buffer.from('deno luks smoke secret');
/** smoke.ts's LUKS_INPUTS: encrypted images made here and by qemu-img, for Deno to read. */
const LUKS_INPUTS = 'luks-inputs.json';

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

  // Encrypted images made by Node (this process: a base and an overlay) and by qemu-img (its
  // defaults, aes-256-xts-plain64 and sha256, as Cinder's volumes get them), with the bytes each
  // must read: the smoke suite reads them under Deno (its check 'engine: LUKS images made by Node
  // and by qemu-img'). One qemu-img image only: creating one costs qemu 2-3 s of CPU (it times
  // PBKDF2 before it applies iter-time); aes-128 and sha1 under Deno are in the primitives digest.
  it('leaves encrypted images made by Node and by qemu-img for the smoke suite to read', async () => {
    const dir = path.join(work, 'luks-in');
    fs.mkdirSync(dir, { recursive: true });
    const size = 3 * 2 ** 20;
    const encrypt = { format: 'luks' as const, keySecret: DENO_LUKS_SECRET, iterTimeMs: 10 };
    const model = Buffer.alloc(size);
    createImage(path.join(dir, 'node-base.qcow2'), { format: 'qcow2', size, encrypt });
    createImage(path.join(dir, 'node-top.qcow2'), { format: 'qcow2', backingFile: 'node-base.qcow2', backingFormat: 'qcow2', encrypt });
    for (const [name, writes] of [['node-base.qcow2', [[0, 1.5 * 2 ** 20 + 3], [2 * 2 ** 20 - 700, 5000]]], ['node-top.qcow2', [[65536 - 5, 10], [2.5 * 2 ** 20 + 1, 70_000]]]] as const) {
      const img = openImage(path.join(dir, name), { writable: true, keySecrets: () => DENO_LUKS_SECRET });
      try {
        for (const [off, len] of writes) {
          const data = crypto.randomBytes(len);
          img.write(off, data);
          data.copy(model, off);
        }
      } finally {
        img.close();
      }
    }
    fs.writeFileSync(path.join(dir, 'node.raw'), model);
    requireQemu();
    const keyFile = path.join(work, 'luks-in.key');
    fs.writeFileSync(keyFile, DENO_LUKS_SECRET);
    await qemuCreateLuks(path.join(dir, 'qemu.qcow2'), size, keyFile);
    const object = ['--object', `secret,id=sec0,file=${keyFile}`];
    const opts = `driver=qcow2,file.filename=${path.join(dir, 'qemu.qcow2')},encrypt.key-secret=sec0`;
    const r = spawnSync('qemu-io', [...object, '--image-opts', '-c', 'write -P 0x41 0 1M', '-c', 'write -P 0x42 1100000 300000', '-c', 'write -P 0x43 4095 9000', opts], { encoding: 'utf8' });
    expect(r.status === 0 && !/(error|fail)/i.test(r.stdout + r.stderr), `qemu-io: ${r.stdout}${r.stderr}`).toBe(true);
    qemuImg(['convert', ...object, '--image-opts', opts, '-O', 'raw', path.join(dir, 'qemu.raw')]);
    const inputs = [
      { name: 'made by Node: LUKS base and overlay', file: 'luks-in/node-top.qcow2', raw: 'luks-in/node.raw' },
      { name: 'made by qemu-img and written by qemu-io', file: 'luks-in/qemu.qcow2', raw: 'luks-in/qemu.raw' },
    ];
    fs.writeFileSync(path.join(work, LUKS_INPUTS), JSON.stringify(inputs));
  });

  it('smoke suite passes under Deno (engine and volume driver)', async () => {
    expect(deno.cmd, 'Deno not found (see the first test)').not.toBeNull();
    const r = await runSmoke(deno.cmd!);
    expect(r.status, explain(r)).toBe(0);
    const summary = /^(\d+) passed, (\d+) failed$/m.exec(r.stdout);
    expect(summary, explain(r)).not.toBeNull();
    expect(Number(summary![2])).toBe(0);
    // runtime, 7 engine checks, the crypto primitives, 3 async checks, 2 driver delete orders: a suite that silently lost checks fails here
    expect(Number(summary![1])).toBeGreaterThanOrEqual(14);
    // The LUKS primitives give under Deno the bytes they give here under Node.
    expect(r.stdout).toContain(`crypto primitives digest: ${cryptoPrimitivesDigest()}`);
    for (const part of ['runtime is Deno', 'engine: 2-layer chain, commitImage', 'engine: LUKS-encrypted qcow2', 'engine: LUKS images made by Node and by qemu-img', 'async: commit in a worker', 'async: an AbortSignal cancels', 'driver: volume, two snapshots, delete older first', 'driver: volume, two snapshots, delete newer first']) {
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
    // (the suite cut to its first check and the failing one: the harness is what is tested here)
    expect(r.stdout).toContain('FAIL harness self-test');
    expect(r.stdout).toMatch(/^1 passed, 1 failed$/m);
  });
});
