// The CLI (`node dist/cli/main.js img …`; in-process for all but the chain image) against qemu-img on the same images: info and
// info --backing-chain JSON field by field, map JSON exactly, convert -O raw byte for byte, and the
// error contract (exit 1, one line `cowchain: ECOW_…: message` on stderr).
//
// Raw bases are written completely (no holes): without the native binding our raw layer reports
// every byte as data, qemu reports holes as zero — see read-matrix.test.ts.
import * as fs from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { qemuImg, qemuInfo, qemuMap, qemuRaw, requireQemu, tmpDir } from '../support/qemu.js';
import {
  H, KiB, MiB, createQcow2, expectInfoMatches, expectSameBytes, join, makeFullRaw, qemuIoMany, randomCommands,
  writeBE, writePatternedRaw,
} from '../support/images.js';
import { type CliRun, cli, cliProcess, expectCliError, expectCliFailure } from '../support/cli.js';

/**
 * `cowchain ARGS` as the built CLI's own process for the chain image (every command) and the first
 * error, as users run it; in-process (main(), the same code and output) for the other images,
 * where a node child costs more CPU than the qemu-img runs it is compared with.
 */
async function run(args: string[], asProcess: boolean, cwd?: string): Promise<CliRun> {
  if (asProcess) return cliProcess(args, cwd);
  const was = process.cwd();
  if (cwd) process.chdir(cwd);
  try {
    return await cli(...args);
  } finally {
    process.chdir(was);
  }
}

async function cliOk(args: string[], asProcess: boolean, cwd?: string): Promise<string> {
  const r = await run(args, asProcess, cwd);
  if (r.status !== 0) throw new Error(`cowchain ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  expect(r.stderr).toBe('');
  return r.stdout;
}

async function expectCliErrorInProcess(args: string[], code: string): Promise<string> {
  return expectCliFailure(await cli(...args), code, `cowchain ${args.join(' ')} (in-process)`);
}

let dir: string;
/** name → image file (relative to dir). */
const images: Record<string, string> = {};

beforeAll(() => {
  requireQemu();

  dir = tmpDir('cowchain-cli-');
  const size = 4 * MiB;
  // 1. A chain: raw base (fully written) <- mid.qcow2 (4K clusters) <- top.qcow2 (extended L2).
  makeFullRaw(join(dir, 'base.raw'), size, 101);
  createQcow2(join(dir, 'mid.qcow2'), size, { cluster_size: 4096 }, { file: 'base.raw', format: 'raw' });
  qemuIoMany(join(dir, 'mid.qcow2'), randomCommands(102, size, { count: 40, maxLen: 64 * KiB, zeroShare: 0.2, discardShare: 0.1 }));
  createQcow2(join(dir, 'top.qcow2'), size, { cluster_size: 32 * KiB, extended_l2: 'on' }, { file: 'mid.qcow2', format: 'qcow2' });
  qemuIoMany(join(dir, 'top.qcow2'), randomCommands(103, size, { count: 40, maxLen: 20 * KiB, zeroShare: 0.2, discardShare: 0.1 }));
  images.chain = 'top.qcow2';
  // 2. compat 0.10 with 512-byte clusters, no backing.
  createQcow2(join(dir, 'v2.qcow2'), 2 * MiB, { compat: '0.10', cluster_size: 512 });
  qemuIoMany(join(dir, 'v2.qcow2'), randomCommands(104, 2 * MiB, { count: 60, maxLen: 8 * KiB, discardShare: 0.1 }));
  images.v2 = 'v2.qcow2';
  // 3. Compressed (deflate), refcount_bits 64.
  writePatternedRaw(join(dir, 'src.raw'), 2 * MiB, 105);
  qemuImg(['convert', '-c', '-O', 'qcow2', '-o', 'refcount_bits=64', join(dir, 'src.raw'), join(dir, 'deflate.qcow2')]);
  images.compressed = 'deflate.qcow2';
  // 4. Overlay bigger than its qcow2 base.
  createQcow2(join(dir, 'small.qcow2'), 1 * MiB, { cluster_size: 2 * MiB });
  qemuIoMany(join(dir, 'small.qcow2'), [`write -P 0x21 0 ${1 * MiB}`]);
  createQcow2(join(dir, 'big.qcow2'), 3 * MiB, {}, { file: 'small.qcow2', format: 'qcow2' });
  qemuIoMany(join(dir, 'big.qcow2'), [`write -P 0x22 ${1 * MiB - 4096} 8192`]);
  images.bigger = 'big.qcow2';
  // 5. A raw image on its own (probed as raw), fully written.
  makeFullRaw(join(dir, 'plain.raw'), 1 * MiB, 106);
  images.raw = 'plain.raw';
});

describe.each(['chain', 'v2', 'compressed', 'bigger', 'raw'])('image "%s"', (name) => {
  const abs = () => join(dir, images[name]);
  const asProcess = name === 'chain';

  it('img info --output=json matches qemu-img info (absolute path)', async () => {
    const ours = JSON.parse(await cliOk(['img', 'info', '--output=json', abs()], asProcess));
    expectInfoMatches(ours, qemuInfo(abs()), name);
  });

  it('img info --output=json matches qemu-img info (relative path, run in the image directory)', async () => {
    const ours = JSON.parse(await cliOk(['img', 'info', '--output=json', images[name]], asProcess, dir));
    const theirs = JSON.parse(qemuImg(['info', '--output=json', images[name]], { cwd: dir }).stdout);
    expectInfoMatches(ours, theirs, name);
  });

  it('img info --output=json --backing-chain matches qemu-img, image by image', async () => {
    const ours = JSON.parse(await cliOk(['img', 'info', '--output=json', '--backing-chain', abs()], asProcess));
    const theirs = qemuInfo(abs(), true);
    expect(Array.isArray(ours)).toBe(true);
    expect(ours.length).toBe(theirs.length);
    ours.forEach((o: Record<string, unknown>, i: number) => expectInfoMatches(o, theirs[i], `${name} layer ${i}`));
  });

  it('img map --output=json equals qemu-img map', async () => {
    expect(JSON.parse(await cliOk(['img', 'map', '--output=json', abs()], asProcess))).toStrictEqual(qemuMap(abs()));
  });

  it('img convert -O raw equals qemu-img convert -O raw', async () => {
    const out = join(dir, `${name}.cli.raw`);
    expect(await cliOk(['img', 'convert', '-O', 'raw', abs(), out], asProcess)).toBe('');
    expectSameBytes(fs.readFileSync(out), qemuRaw(abs(), dir), `${name} converted`);
    fs.rmSync(out);
  });
});

describe('the chain really is three deep', () => {
  it('--backing-chain lists top, mid and the raw base', async () => {
    const ours = JSON.parse(await cliOk(['img', 'info', '--output=json', '--backing-chain', join(dir, 'top.qcow2')], false));
    expect(ours.map((i: any) => i.format)).toEqual(['qcow2', 'qcow2', 'raw']);
    expect(ours[0]['format-specific'].data['extended-l2']).toBe(true);
  });
});

describe('errors: exit 1 and one line on stderr', () => {
  it('a missing file is ECOW_NOT_FOUND', async () => {
    const msg = expectCliError(['img', 'info', '--output=json', join(dir, 'nope.qcow2')], 'ECOW_NOT_FOUND');
    expect(msg).toContain('nope.qcow2');
    await expectCliErrorInProcess(['img', 'map', '--output=json', join(dir, 'nope.qcow2')], 'ECOW_NOT_FOUND');
    await expectCliErrorInProcess(['img', 'convert', '-O', 'raw', join(dir, 'nope.qcow2'), join(dir, 'x.raw')], 'ECOW_NOT_FOUND');
    expect(fs.existsSync(join(dir, 'x.raw'))).toBe(false);
  });

  it('garbage that is not qcow2 is a raw image, as qemu-img probes it', async () => {
    const f = join(dir, 'garbage.bin');
    fs.writeFileSync(f, Buffer.from(Array.from({ length: 8192 }, (_, i) => (i * 131 + 7) & 0xff || 1)));
    const ours = JSON.parse(await cliOk(['img', 'info', '--output=json', f], false));
    expect(ours.format).toBe('raw');
    expectInfoMatches(ours, qemuInfo(f), 'garbage');
  });

  it('a qcow2 with a patched version fails with ECOW_BAD_VERSION (and qemu-img refuses it too)', async () => {
    const f = join(dir, 'badversion.qcow2');
    createQcow2(f, 1 * MiB);
    writeBE(f, H.version, 4, 4);
    for (const args of [['img', 'info', '--output=json', f], ['img', 'map', '--output=json', f], ['img', 'convert', '-O', 'raw', f, join(dir, 'bv.raw')]]) {
      const msg = await expectCliErrorInProcess(args, 'ECOW_BAD_VERSION');
      expect(msg).toMatch(/\b4\b/);
    }
    expect(qemuImg(['info', f], { ok: [1] }).stderr).toMatch(/version 4/i);
  });

  it('a missing backing file is ECOW_BACKING_MISSING where the chain is read (info --backing-chain, map)', async () => {
    const f = join(dir, 'orphan.qcow2');
    qemuImg(['create', '-f', 'qcow2', '-u', '-b', 'gone.raw', '-F', 'raw', f, String(1 * MiB)]);
    expect(qemuImg(['info', '--backing-chain', f], { ok: [1] }).stderr).toContain('gone.raw');
    for (const args of [['img', 'info', '--backing-chain', '--output=json', f], ['img', 'map', '--output=json', f]]) {
      expect(await expectCliErrorInProcess(args, 'ECOW_BACKING_MISSING')).toContain('gone.raw');
    }
  });

  it('an unsupported output format is ECOW_BAD_ARGUMENT', async () => {
    await expectCliErrorInProcess(['img', 'convert', '-O', 'vmdk', join(dir, 'v2.qcow2'), join(dir, 'out.vmdk')], 'ECOW_BAD_ARGUMENT');
  });
});
