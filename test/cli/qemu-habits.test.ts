// What a qemu-img user expects of the CLI (issue 15), each against qemu-img where it has the same
// thing: --version, --output human|json only, -p's percentages when stdout is not a terminal,
// img info on an image whose backing file is missing, create -u, commit -f, qemu-img options we
// lack refused by name, info and map printed as qemu-img prints them, every error one coded line.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { afterAll, describe, expect, it } from 'vitest';
import { buildProgram } from '../../src/cli/main.js';
import { VolumeDriver } from '../../src/volume/driver.js';
import { cli, expectCliFailure, ok } from '../support/cli.js';
import { ROOT } from '../support/bundle.js';
import { MiB } from '../support/images.js';
import { expectClean, qemuImg, qemuInfo, qemuIo, requireQemu, tmpDir } from '../support/qemu.js';

requireQemu();

const dir = tmpDir('cowchain-habits-');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const at = (name: string) => path.join(dir, name);

/** A usage error: exit 2, nothing on stdout, one line `cowchain: ECOW_USAGE: …`; returns it. */
async function usageError(...argv: string[]): Promise<string> {
  const r = await cli(...argv);
  expect(r.status, `${argv.join(' ')}: ${r.stderr}`).toBe(2);
  expect(r.stdout).toBe('');
  expect(r.stderr).toMatch(/^cowchain: ECOW_USAGE: [^\n]+\n$/);
  return r.stderr;
}

/** base.qcow2 (4 MiB written) ← top.qcow2 (1 MiB written at 2 MiB): a chain qemu made. */
function chain(name: string): { base: string; top: string } {
  const base = at(`${name}-base.qcow2`);
  const top = at(`${name}-top.qcow2`);
  qemuImg(['create', '-q', '-f', 'qcow2', base, '64M']);
  qemuIo(base, ['write -P 0x11 0 4M']);
  qemuImg(['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top]);
  qemuIo(top, ['write -P 0x22 2M 1M']);
  return { base, top };
}

describe('qemu-img habits', () => {
  it('--version and -V print the version of package.json, as qemu-img --version / -V', async () => {
    const version = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version;
    expect(await ok('--version')).toBe(`cowchain version ${version}\n`);
    expect(await ok('-V')).toBe(`cowchain version ${version}\n`);
  });

  it('--output takes human or json only, on every command that has it; anything else is a usage error naming it', async () => {
    const withOutput: string[][] = [];
    const walk = (c: Command, at: string[]) => {
      if (c.options.some((o) => o.long === '--output')) withOutput.push(at);
      for (const sub of c.commands) walk(sub, [...at, sub.name()]);
    };
    walk(buildProgram(), []);
    expect(withOutput.map((p) => p.join(' '))).toEqual(expect.arrayContaining(['img info', 'img map', 'img check', 'volume info', 'snapshot create']));
    const { top } = chain('output');
    for (const p of withOutput) {
      const args = p[0] === 'img' ? [top] : ['--dir', dir, '--volume', '00000000-0000-4000-8000-000000000001'];
      expect(await usageError(...p, '--output', 'xml', ...args)).toMatch(/--output.*'xml'.*human, json/);
    }
  });

  it('usage errors (an unknown option or command, a missing argument) are one coded line, exit 2, with where to look', async () => {
    expect(await usageError('img', 'info', '--bogus', at('x'))).toContain("unknown option '--bogus' (see 'cowchain img info --help')");
    expect(await usageError('img', 'inf', at('x'))).toContain("unknown command 'inf'");
    expect(await usageError('img', 'info')).toContain("missing required argument 'file'");
  });

  it("qemu-img's options that cowchain lacks are refused in one line naming the option", async () => {
    const { top } = chain('refused');
    expect(await usageError('img', 'commit', '-t', 'none', top)).toContain("qemu-img's -t is not supported by cowchain");
    expect(await usageError('img', 'map', '--image-opts', top)).toContain("qemu-img's --image-opts is not supported");
    expect(await usageError('img', 'convert', '-n', top, at('refused.raw'))).toContain("qemu-img's -n is not supported");
    expect(fs.existsSync(at('refused.raw'))).toBe(false);
  });

  it('-p prints qemu-img\'s (x.xx/100%) lines on stdout when it is not a terminal (img commit), the result after them', async () => {
    const { top } = chain('progress');
    const q = chain('progress-qemu');
    const ours = await ok('img', 'commit', '-p', top);
    const theirs = qemuImg(['commit', '-p', q.top]).stdout;
    for (const out of [ours, theirs]) {
      expect(out.startsWith('    (0.00/100%)\r')).toBe(true);
      expect(out.endsWith('    (100.00/100%)\r\nImage committed.\n')).toBe(true);
      expect(out.split('\r').slice(0, -1).every((l) => /^\n?    \(\d{1,3}\.\d\d\/100%\)$/.test(l)), JSON.stringify(out)).toBe(true);
    }
    expectClean(path.join(dir, 'progress-base.qcow2'));
    // -q wins over -p, as in qemu-img
    const again = chain('progress-quiet');
    expect(await ok('img', 'commit', '-p', '-q', again.top)).toBe('');
  });

  it('-p on a long volume command (snapshot delete) prints the percentages on stderr; stdout is the result', async () => {
    const vdir = at('vol');
    fs.mkdirSync(vdir);
    const vol = '0f000000-0000-4000-8000-000000000001';
    const snap = '0f000000-0000-4000-8000-0000000000aa';
    const driver = new VolumeDriver({ dir: vdir });
    await driver.createVolume(vol, 8 * MiB, { format: 'qcow2' });
    const { file } = await driver.createSnapshot(vol, snap, { status: 'available' });
    qemuIo(path.join(vdir, file), ['write -P 0x33 0 2M']);
    const r = await cli('snapshot', 'delete', '-p', '--dir', vdir, '--volume', vol, '--snapshot', snap, '--output', 'json');
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).snapshotId).toBe(snap);
    expect(r.stderr.startsWith('    (0.00/100%)\r')).toBe(true);
    expect(r.stderr.endsWith('    (100.00/100%)\r\n')).toBe(true);
  });

  it('img info on an image whose backing file is missing shows its own header as qemu-img does, and says the backing is missing', async () => {
    const lone = at('lone.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-u', '-b', 'gone.raw', '-F', 'raw', lone, '1G']);
    const r = await cli('img', 'info', lone);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe(qemuImg(['info', lone]).stdout);
    expect(r.stderr).toMatch(/^cowchain: warning: ECOW_BACKING_MISSING: backing file \S*gone\.raw of \S*lone\.qcow2 does not exist[^\n]*\n$/);
    const json = await cli('img', 'info', '--output=json', lone);
    expect(JSON.parse(json.stdout)).toStrictEqual(qemuInfo(lone));
    // the whole chain cannot be shown: one coded line, as qemu-img fails too
    expectCliFailure(await cli('img', 'info', '--backing-chain', lone), 'ECOW_BACKING_MISSING');
    expect(qemuImg(['info', '--backing-chain', lone], { ok: [1] }).status).toBe(1);
  });

  it('img create -u makes an overlay without opening its backing file (given the size), as qemu-img create -u', async () => {
    const ours = at('unsafe-ours.qcow2');
    const theirs = at('unsafe-qemu.qcow2');
    const line = await ok('img', 'create', '-f', 'qcow2', '-u', '-b', 'later.qcow2', '-F', 'qcow2', ours, '1G');
    const qemuLine = qemuImg(['create', '-f', 'qcow2', '-u', '-b', 'later.qcow2', '-F', 'qcow2', theirs, '1G']).stdout;
    expect(line).toBe(qemuLine.replace(theirs, ours));
    const info = qemuInfo(ours);
    expect([info['backing-filename'], info['backing-filename-format'], info['virtual-size']]).toEqual(['later.qcow2', 'qcow2', 2 ** 30]);
    // without the size there is nothing to take it from
    expectCliFailure(await cli('img', 'create', '-f', 'qcow2', '-u', '-b', 'later.qcow2', '-F', 'qcow2', at('unsafe-nosize.qcow2')), 'ECOW_BAD_ARGUMENT');
    // without -u the missing backing file is refused
    expectCliFailure(await cli('img', 'create', '-f', 'qcow2', '-b', 'later.qcow2', '-F', 'qcow2', at('safe.qcow2'), '1G'), 'ECOW_NOT_FOUND');
  });

  it('img commit -f FMT names the format of TOP, as qemu-img commit -f', async () => {
    const { base, top } = chain('commit-f');
    expect(await ok('img', 'commit', '-f', 'qcow2', top)).toBe('Image committed.\n');
    expectClean(base);
    expectCliFailure(await cli('img', 'commit', '-f', 'vmdk', top), 'ECOW_UNKNOWN_FORMAT');
  });

  it('img info and img map print what qemu-img prints (sizes as 1 GiB (1073741824 bytes), the File column, aligned)', async () => {
    const { base, top } = chain('human');
    for (const args of [['info', top], ['info', base], ['info', '--backing-chain', top], ['map', top], ['map', base]]) {
      expect(await ok('img', ...args), args.join(' ')).toBe(qemuImg(args).stdout);
    }
  });

  it('img check on a raw file: exit 63 and one coded line, as qemu-img check', async () => {
    const raw = at('plain.raw');
    fs.writeFileSync(raw, Buffer.alloc(MiB));
    const r = await cli('img', 'check', raw);
    expect(r.status).toBe(63);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('cowchain: ECOW_CHECK_UNSUPPORTED: This image format does not support checks\n');
    expect(qemuImg(['check', raw], { ok: [63] }).status).toBe(63);
  });

  it('VOL and SNAP are UUIDs: the volume and snapshot commands say so in their help', async () => {
    for (const argv of [['volume', 'info'], ['snapshot', 'create'], ['snapshot', 'delete'], ['volume', 'from-snapshot']]) {
      const help = (await ok(...argv, '--help')).replace(/\s+/g, ' ');
      expect(help, argv.join(' ')).toContain('--volume <uuid> the volume id: a UUID');
      if (argv[1] !== 'info') expect(help, argv.join(' ')).toContain('--snapshot <uuid> the snapshot id: a UUID');
    }
  });
});
