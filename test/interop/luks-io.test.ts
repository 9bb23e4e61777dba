// `cowchain io` on LUKS-encrypted qcow2 (issue 18): qemu-io's own forms, `--object secret,…` with
// `--image-opts driver=qcow2,file.filename=F,encrypt.key-secret=ID[,backing.encrypt.key-secret=ID]`,
// refereed by qemu-io and qemu-img with the same secret. The built CLI runs as its own process, as
// a user runs it. A wrong secret is ECOW_BAD_SECRET (exit 1, one stderr line), a missing key
// ECOW_KEY_REQUIRED before any command runs, and the secret appears in no output.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { beforeAll, describe, expect, it } from 'vitest';
import { createImage } from '../../src/index.js';
import { requireQemu, tmpDir } from '../support/qemu.js';
import { cliProcess, expectCliFailure, type CliRun } from '../support/cli.js';
import { KiB, MiB } from '../support/images.js';

const SECRET = 'the io secret, 18';
let root: string;
let keyFile: string;
const outputs: CliRun[] = [];

const OBJECT = () => ['--object', `secret,id=sec0,file=${keyFile}`];
function imageOpts(file: string, depth = 1): string {
  const keys = Array.from({ length: depth }, (_, d) => `${'backing.'.repeat(d)}encrypt.key-secret=sec0`);
  return ['driver=qcow2', `file.filename=${file}`, ...keys].join(',');
}

/** `cowchain io` as its own process; every run's output is kept for the no-leak check. */
function io(args: string[]): CliRun {
  const r = cliProcess(['io', ...args]);
  outputs.push(r);
  return r;
}

function qemu(cmd: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  expect(r.stdout + r.stderr).not.toContain(SECRET);
  return r;
}

/** A LUKS qcow2 made here (iter-time 10 ms: unlocking costs no time). */
function encrypted(name: string, size: number, backing?: string): string {
  const file = path.join(root, name);
  createImage(file, { format: 'qcow2', size, ...(backing ? { backingFile: backing, backingFormat: 'qcow2' as const } : {}), encrypt: { format: 'luks', keySecret: Buffer.from(SECRET), iterTimeMs: 10 } });
  return file;
}

/** The guest bytes qemu-img reads with the secret (convert to raw). */
function qemuGuest(file: string, depth: number): Buffer {
  const out = path.join(root, `${path.basename(file)}.${depth}.raw`);
  const r = qemu('qemu-img', ['convert', ...OBJECT(), '--image-opts', imageOpts(file, depth), '-O', 'raw', out]);
  expect(r.status, r.stderr).toBe(0);
  const bytes = fs.readFileSync(out);
  fs.rmSync(out);
  return bytes;
}

beforeAll(() => {
  requireQemu();
  root = tmpDir('cowchain-luks-io-');
  keyFile = path.join(root, 'secret.key');
  fs.writeFileSync(keyFile, SECRET);
});

describe('cowchain io on encrypted images, with --object and --image-opts', () => {
  it("writes what qemu-io and qemu-img read back with the secret, and passes qemu-img check", () => {
    const file = encrypted('one.qcow2', 1 * MiB);
    const w = io([...OBJECT(), '--image-opts', '-c', 'write -P 0x5a 0 64k', '-c', 'write -P 0x33 100000 3000', imageOpts(file)]);
    expect(w.status, w.stderr).toBe(0);
    expect(w.stdout).toContain('wrote 65536/65536 bytes at offset 0');
    const r = qemu('qemu-io', [...OBJECT(), '--image-opts', imageOpts(file), '-c', 'read -P 0x5a 0 64k', '-c', 'read -P 0x33 100000 3000', '-c', 'read -P 0 64k 34464']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).not.toContain('Pattern verification failed');
    expect(r.stdout).toContain('read 65536/65536 bytes at offset 0');
    const want = Buffer.alloc(1 * MiB);
    want.fill(0x5a, 0, 64 * KiB);
    want.fill(0x33, 100000, 103000);
    expect(qemuGuest(file, 1).equals(want)).toBe(true);
    const c = qemu('qemu-img', ['check', ...OBJECT(), '--image-opts', imageOpts(file)]);
    expect(c.status, c.stdout + c.stderr).toBe(0);
  });

  it('reads what qemu-io wrote, and writes an encrypted overlay through backing.encrypt.key-secret', () => {
    const base = encrypted('base.qcow2', 2 * MiB);
    const q = qemu('qemu-io', [...OBJECT(), '--image-opts', imageOpts(base), '-c', 'write -P 0x11 0 1M']);
    expect(q.status, q.stderr).toBe(0);
    const top = encrypted('top.qcow2', 2 * MiB, base);
    const w = io([...OBJECT(), '--image-opts', '-c', 'read -P 0x11 0 1M', '-c', 'write -P 0x22 512k 64k', '-c', 'read -P 0x11 0 512k', imageOpts(top, 2)]);
    expect(w.status, w.stdout + w.stderr).toBe(0);
    expect(w.stdout).not.toContain('Pattern verification failed');
    const r = qemu('qemu-io', [...OBJECT(), '--image-opts', imageOpts(top, 2), '-c', 'read -P 0x11 0 512k', '-c', 'read -P 0x22 512k 64k', '-c', 'read -P 0x11 576k 448k']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).not.toContain('Pattern verification failed');
    // Read-only, as qemu-io -r.
    const ro = io([...OBJECT(), '--image-opts', '-r', '-c', 'read -P 0x22 512k 64k', imageOpts(top, 2)]);
    expect(ro.status, ro.stderr).toBe(0);
  });

  it('a wrong secret is ECOW_BAD_SECRET, a missing key ECOW_KEY_REQUIRED, both before anything is written; the secret is never printed', () => {
    const file = encrypted('refuse.qcow2', 1 * MiB);
    const before = fs.readFileSync(file);
    const wrongFile = path.join(root, 'wrong.key');
    fs.writeFileSync(wrongFile, 'a wrong io secret value');
    const wrong = io(['--object', `secret,id=sec0,file=${wrongFile}`, '--image-opts', '-c', 'write -P 0x5a 0 64k', imageOpts(file)]);
    expectCliFailure(wrong, 'ECOW_BAD_SECRET', 'wrong secret');
    expect(wrong.stderr).not.toContain('a wrong io secret value');
    const missing = io(['-c', 'write -P 0x5a 0 64k', file]);
    expectCliFailure(missing, 'ECOW_KEY_REQUIRED', 'no key');
    const noId = io([...OBJECT(), '--image-opts', '-c', 'read 0 64k', `driver=qcow2,file.filename=${file},encrypt.key-secret=other`]);
    expectCliFailure(noId, 'ECOW_BAD_ARGUMENT', 'unknown secret id');
    const inline = io(['--object', 'secret,id=sec0,data=inline-io-secret', '--image-opts', '-c', 'read 0 64k', imageOpts(file)]);
    expectCliFailure(inline, 'ECOW_BAD_ARGUMENT', 'data=');
    expect(inline.stderr).not.toContain('inline-io-secret');
    expect(fs.readFileSync(file).equals(before)).toBe(true);
    for (const r of outputs) expect(r.stdout + r.stderr).not.toContain(SECRET);
  });
});
