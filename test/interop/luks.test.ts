// LUKS-encrypted qcow2 (issue 18), refereed by qemu-img/qemu-io 7.2 with the secret.
//
// Both ways: images qemu creates with -o encrypt.format=luks read identically here; images and
// overlays cowchain creates open in qemu with the secret, read as written and pass
// `qemu-img check`. Commit, safe rebase, stream and convert across an encrypted chain give what
// qemu-img gives on the same chain. The error codes (wrong secret, missing key, damaged LUKS
// header) and the rule that the secret appears in no argv, message or file are pinned too.
// PBKDF2 is kept short (encrypt.iter-time=10 ms) so that unlocking does not dominate the run.
// Creating a LUKS image still costs qemu-img about 2.5 s of CPU (it times PBKDF2 before it
// applies iter-time), so qemu-img creates two, empty: one of the default geometry (copied as the
// chain's base and as the 64 KiB read test's image) and one of 4 KiB clusters (copied as the 4 KiB
// read test's image and, pointed at the middle layer by `qemu-img rebase -u`, as the chain's top
// overlay); the chain's middle layer is cowchain's. Each layer has its own master key (a commit
// or stream that used the wrong layer's key would not read back), and the chain mixes cluster
// sizes. The chain is made once; each chain test works on a copy.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { beforeAll, describe, expect, it } from 'vitest';
import { commitImage, convertImage, createImage, openImage, rebaseImage, streamImage, checkImage } from '../../src/index.js';
import { qemuCreateLuks, qemuImg, requireQemu, tmpDir } from '../support/qemu.js';
import { readGuest } from '../support/guest.js';
import { KiB, MiB, rng, randInt } from '../support/images.js';
import { codeOf } from '../support/errors.js';
import { cli, expectCliFailure } from '../support/cli.js';

const SECRET = 'correct horse battery staple 18';
const KEY = Buffer.from(SECRET);
const keys = () => KEY;

let root: string;
let keyFile: string;
/** An empty 4 MiB LUKS image qemu-img made, default geometry (64 KiB clusters). */
let pristine: string;
/** The same with 4 KiB clusters. */
let pristine4k: string;
/**
 * base (enc, qemu's) ← mid (enc, cowchain's) ← top (enc, qemu's), 4 MiB, each written by qemu-io:
 * made once, copied by `chain`.
 */
let template: string;

beforeAll(async () => {
  requireQemu();
  root = tmpDir('cowchain-luks-');
  keyFile = path.join(root, 'secret.key');
  fs.writeFileSync(keyFile, SECRET);
  template = path.join(root, 'template');
  fs.mkdirSync(template);
  const size = 4 * MiB;
  pristine = path.join(root, 'pristine.qcow2');
  pristine4k = path.join(root, 'pristine-4k.qcow2');
  await Promise.all([qemuCreate(pristine, size), qemuCreate(pristine4k, size, [], 'cluster_size=4096')]);
  fs.copyFileSync(pristine, path.join(template, 'base.qcow2'));
  qio(path.join(template, 'base.qcow2'), 1, randomWrites(1, size, 8));
  createImage(path.join(template, 'mid.qcow2'), { format: 'qcow2', size, backingFile: 'base.qcow2', backingFormat: 'qcow2', encrypt: { format: 'luks', keySecret: KEY, iterTimeMs: 10 } });
  qio(path.join(template, 'mid.qcow2'), 2, randomWrites(2, size, 8));
  const top = path.join(template, 'top.qcow2');
  fs.copyFileSync(pristine4k, top);
  qemuImg(['rebase', '-u', ...OBJECT(), '-b', 'mid.qcow2', '-F', 'qcow2', '--image-opts', imageOpts(top)]);
  expect(JSON.parse(qemuImg(['info', '--output=json', top]).stdout)).toMatchObject({ 'backing-filename': 'mid.qcow2', 'cluster-size': 4096, encrypted: true });
  qio(top, 3, randomWrites(3, size, 8));
});

const OBJECT = () => ['--object', `secret,id=sec0,file=${keyFile}`];
/** qemu's --image-opts for `file` with the key for `depth` layers of its chain. */
function imageOpts(file: string, depth = 1): string {
  const keyOpts = Array.from({ length: depth }, (_, d) => `${'backing.'.repeat(d)}encrypt.key-secret=sec0`);
  return [`driver=qcow2`, `file.filename=${file}`, ...keyOpts].join(',');
}

/** qemu-img create of a LUKS image keyed by sec0 (test/support/qemu.ts). */
function qemuCreate(file: string, size: number, extra: string[] = [], opts = ''): Promise<void> {
  return qemuCreateLuks(file, size, keyFile, opts, extra);
}

/** qemu-io on an encrypted image (through --image-opts): throws on any error. */
function qio(file: string, depth: number, cmds: string[]): void {
  const r = spawnSync('qemu-io', [...OBJECT(), '--image-opts', ...cmds.flatMap((c) => ['-c', c]), imageOpts(file, depth)], { encoding: 'utf8' });
  if (r.status !== 0 || /(error|fail)/i.test(r.stdout + r.stderr)) throw new Error(`qemu-io on ${file}: ${r.stdout}${r.stderr}`);
}

/** The guest view of an encrypted chain as qemu reads it (qemu-img convert to raw). */
function qemuGuest(file: string, depth: number): Buffer {
  const out = `${file}.qemu.raw`;
  qemuImg(['convert', ...OBJECT(), '--image-opts', imageOpts(file, depth), '-O', 'raw', out]);
  const b = fs.readFileSync(out);
  fs.rmSync(out);
  return b;
}

function qemuCheckClean(file: string, depth = 1): void {
  const r = qemuImg(['check', ...OBJECT(), '--image-opts', imageOpts(file, depth)], { ok: [0, 1, 2, 3] });
  expect(r.status, `qemu-img check ${file}: ${r.stdout}${r.stderr}`).toBe(0);
}

/** Random writes (unaligned, some spanning clusters) as qemu-io commands and into `model`. */
function randomWrites(seed: number, size: number, count: number, model?: Buffer): string[] {
  const r = rng(seed);
  const cmds: string[] = [];
  for (let i = 0; i < count; i++) {
    const len = randInt(r, 1, 150 * KiB);
    const off = randInt(r, 0, size - len);
    const pat = randInt(r, 1, 255);
    cmds.push(`write -P ${pat} ${off} ${len}`);
    model?.fill(pat, off, off + len);
  }
  return cmds;
}

describe('qemu-made LUKS images read here as qemu reads them', () => {
  for (const clusterSize of [65536, 4096]) {
    it(`cluster_size=${clusterSize}: random unaligned writes by qemu-io, read back identically`, () => {
      const file = path.join(root, `qemu-${clusterSize}.qcow2`);
      const size = 4 * MiB;
      fs.copyFileSync(clusterSize === 65536 ? pristine : pristine4k, file); // 65536: qemu's default geometry
      qio(file, 1, randomWrites(clusterSize, size, 12));
      const want = qemuGuest(file, 1);
      const ours = readGuest(file, { keySecrets: keys });
      expect(ours.equals(want)).toBe(true);
      // And as the issue words it: qemu-img compare, with the secret, finds what we read identical.
      fs.writeFileSync(`${file}.ours.raw`, ours);
      qemuImg(['compare', '-q', ...OBJECT(), '--image-opts', imageOpts(file), `driver=raw,file.filename=${file}.ours.raw`]);
      const info = JSON.parse(qemuImg(['info', '--output=json', file]).stdout);
      expect(info.encrypted).toBe(true);
      // check needs no key here (qemu-img check wants it; a check reads no data).
      const outcome = checkImage(file);
      expect(outcome.exitCode, JSON.stringify(outcome)).toBe(0);
    });
  }
});

describe('LUKS images cowchain creates open in qemu with the secret', () => {
  it('an encrypted base and an encrypted overlay: written here, read by qemu as the model, check clean', () => {
    const base = path.join(root, 'ours-base.qcow2');
    const top = path.join(root, 'ours-top.qcow2');
    const size = 6 * MiB;
    createImage(base, { format: 'qcow2', size, encrypt: { format: 'luks', keySecret: KEY, iterTimeMs: 10 } });
    createImage(top, { format: 'qcow2', backingFile: 'ours-base.qcow2', backingFormat: 'qcow2', encrypt: { format: 'luks', keySecret: KEY, iterTimeMs: 10 } });
    const model = Buffer.alloc(size);
    const r = rng(18);
    for (const [file, writes] of [[base, 10], [top, 10]] as const) {
      const img = openImage(file, { writable: true, keySecrets: keys });
      try {
        for (let i = 0; i < writes; i++) {
          const len = randInt(r, 1, 200 * KiB);
          const off = randInt(r, 0, size - len);
          const data = crypto.randomBytes(len);
          img.write(off, data);
          data.copy(model, off);
        }
      } finally {
        img.close();
      }
    }
    qemuCheckClean(base);
    qemuCheckClean(top, 2);
    expect(qemuGuest(top, 2).equals(model), 'qemu reads the overlay chain as written').toBe(true);
    expect(readGuest(top, { keySecrets: keys }).equals(model)).toBe(true);
    // The LUKS header is qemu's: qemu-img info describes it.
    const info = JSON.parse(qemuImg(['info', '--output=json', top]).stdout);
    const enc = info['format-specific'].data.encrypt;
    expect([enc.format, enc['cipher-alg'], enc['cipher-mode'], enc['ivgen-alg'], enc['hash-alg']]).toEqual(['luks', 'aes-256', 'xts', 'plain64', 'sha256']);
    expect(enc.slots[0].active).toBe(true);
    // No file we wrote holds the secret.
    for (const f of [base, top]) expect(fs.readFileSync(f).includes(KEY), `${f} contains the secret`).toBe(false);
  });
});

describe('chain operations across an encrypted chain, against qemu-img', () => {
  /** A copy of the encrypted chain made in beforeAll, in a directory of its own. */
  function chain(name: string): string {
    const dir = path.join(root, name);
    fs.cpSync(template, dir, { recursive: true });
    return dir;
  }
  function twin(dir: string): string {
    const copy = `${dir}-qemu`;
    fs.cpSync(dir, copy, { recursive: true });
    return copy;
  }

  it('commit (top into mid) gives the chain qemu-img commit gives', () => {
    const dir = chain('commit');
    const q = twin(dir);
    const before = qemuGuest(path.join(dir, 'top.qcow2'), 3);
    commitImage(path.join(dir, 'top.qcow2'), { keySecrets: keys });
    qemuImg(['commit', '-q', ...OBJECT(), '--image-opts', imageOpts(path.join(q, 'top.qcow2'), 3)]);
    expect(qemuGuest(path.join(dir, 'mid.qcow2'), 2).equals(before)).toBe(true);
    expect(qemuGuest(path.join(dir, 'mid.qcow2'), 2).equals(qemuGuest(path.join(q, 'mid.qcow2'), 2))).toBe(true);
    expect(qemuGuest(path.join(dir, 'top.qcow2'), 3).equals(before)).toBe(true);
    qemuCheckClean(path.join(dir, 'mid.qcow2'), 2);
    qemuCheckClean(path.join(dir, 'top.qcow2'), 3);
  });

  it('safe rebase of top onto base, and stream of mid into top, keep the guest view', () => {
    const dir = chain('rebase');
    const top = path.join(dir, 'top.qcow2');
    const before = qemuGuest(top, 3);
    rebaseImage(top, 'base.qcow2', { backingFormat: 'qcow2', keySecrets: keys });
    expect(qemuGuest(top, 2).equals(before)).toBe(true);
    qemuCheckClean(top, 2);
    streamImage(top, { keySecrets: keys });
    expect(qemuGuest(top, 1).equals(before)).toBe(true);
    expect(JSON.parse(qemuImg(['info', '--output=json', top]).stdout)['backing-filename']).toBeUndefined();
    qemuCheckClean(top, 1);
  });

  it('convert of the chain to raw, to plain qcow2 and to an encrypted qcow2', () => {
    const dir = chain('convert');
    const top = path.join(dir, 'top.qcow2');
    const want = qemuGuest(top, 3);
    const img = openImage(top, { keySecrets: keys });
    try {
      convertImage(img, path.join(dir, 'out.raw'), { format: 'raw' });
      convertImage(img, path.join(dir, 'out.qcow2'), { format: 'qcow2' });
      convertImage(img, path.join(dir, 'out-enc.qcow2'), { format: 'qcow2', create: { encrypt: { format: 'luks', keySecret: KEY, iterTimeMs: 10 } } });
    } finally {
      img.close();
    }
    expect(fs.readFileSync(path.join(dir, 'out.raw')).equals(want)).toBe(true);
    qemuImg(['compare', '-q', '-f', 'qcow2', '-F', 'raw', path.join(dir, 'out.qcow2'), path.join(dir, 'out.raw')]);
    expect(qemuGuest(path.join(dir, 'out-enc.qcow2'), 1).equals(want)).toBe(true);
    qemuCheckClean(path.join(dir, 'out-enc.qcow2'));
  });
});

describe('refusals, with codes; the secret stays secret', () => {
  it('a wrong secret is ECOW_BAD_SECRET, no key ECOW_KEY_REQUIRED, a damaged header ECOW_BAD_LUKS_HEADER', () => {
    const file = path.join(root, 'codes.qcow2');
    fs.copyFileSync(path.join(template, 'base.qcow2'), file);
    qio(file, 1, ['write -P 7 0 64k']);
    expect(codeOf(() => openImage(file, { keySecrets: () => Buffer.from('not the secret') }))).toBe('ECOW_BAD_SECRET');
    const img = openImage(file);
    try {
      expect(codeOf(() => img.read(0, 512))).toBe('ECOW_KEY_REQUIRED');
    } finally {
      img.close();
    }
    // The crypto header extension names the LUKS area; break its magic.
    const bytes = fs.readFileSync(file);
    const at = bytes.indexOf(Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]));
    expect(at).toBeGreaterThan(0);
    bytes[at] = 0;
    fs.writeFileSync(file, bytes);
    expect(codeOf(() => openImage(file, { keySecrets: keys }))).toBe('ECOW_BAD_LUKS_HEADER');
  });

  it('the CLI takes secrets only from files and never prints them', async () => {
    const file = path.join(root, 'cli.qcow2');
    const created = await cli('img', 'create', '-f', 'qcow2', ...OBJECT(), '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10', file, '1M');
    expect(created.status, created.stderr).toBe(0);
    qio(file, 1, ['write -P 9 4k 8k']);
    const wrongFile = path.join(root, 'wrong.key');
    fs.writeFileSync(wrongFile, 'a wrong secret value');
    const wrong = await cli('img', 'convert', '--object', `secret,id=sec0,file=${wrongFile}`, '--image-opts', imageOpts(file), '-O', 'raw', path.join(root, 'cli.raw'));
    expectCliFailure(wrong, 'ECOW_BAD_SECRET');
    expect(wrong.stderr + wrong.stdout).not.toContain('a wrong secret value');
    const data = await cli('img', 'info', '--object', 'secret,id=sec0,data=inline-secret-value', '--image-opts', imageOpts(file));
    expectCliFailure(data, 'ECOW_BAD_ARGUMENT');
    expect(data.stderr + data.stdout).not.toContain('inline-secret-value');
    const missing = await cli('img', 'convert', '-O', 'raw', file, path.join(root, 'cli2.raw'));
    expectCliFailure(missing, 'ECOW_KEY_REQUIRED');
    const ok = await cli('img', 'convert', ...OBJECT(), '--image-opts', imageOpts(file), '-O', 'raw', path.join(root, 'cli.raw'));
    expect(ok.status, ok.stderr).toBe(0);
    expect(fs.readFileSync(path.join(root, 'cli.raw')).equals(qemuGuest(file, 1))).toBe(true);
    const info = await cli('img', 'info', '--output=json', file);
    expect(JSON.parse(info.stdout).encrypted).toBe(true);
    expect(info.stdout + info.stderr).not.toContain(SECRET);
  });
});
