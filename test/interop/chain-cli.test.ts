// The chain commands of the built CLI (issue 4): `node dist/cli/main.js img commit [-b BASE] [-d]
// [-q] TOP`, `img rebase [-u] -b NEW [-F FMT] FILE`, `img stream [-b BASE] FILE` and `img convert
// [-O raw|qcow2] [-o …] SRC DST`, each run side by side with qemu-img (same arguments, same working
// directory, identical copies of the chain) and with the API (commitImage, rebaseImage,
// streamImage, convertImage) on a third copy. Each command's first run here is a process of the
// built CLI (exit status and output as a user sees them); the others run main() in-process (a
// node child cost ~0.15 s of CPU, more than the qemu-img runs of a whole case):
//  - the same stdout as qemu-img ("Image committed.", nothing with -q, nothing for rebase and
//    convert) and exit 0;
//  - the same result as qemu-img (`qemu-img compare`, header facts of `qemu-img info
//    --backing-chain`, byte-identical files for an unsafe rebase) and byte-for-byte the files the
//    API writes;
//  - errors: exit 1 where qemu-img exits 1, and exactly one stderr line `cowchain: ECOW_…: message`,
//    nothing on stdout, no file changed (or left behind).
// `img stream` has no qemu-img counterpart; its referee is `qemu-img rebase` onto the same base.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { commitImage, convertImage, openImage, rebaseImage, streamImage } from '../../src/index.js';
import { qemuImg, requireQemu, tmpDir } from '../support/qemu.js';
import { KiB, MiB } from '../support/images.js';
import {
  type ChainSpec, type LayerSpec, buildChain, copyDir, expectCheckClean, expectIdentical, expectNothingAllocated, expectSameChainHeaders, headerFacts,
} from '../support/chains.js';
import { cli, cliProcess, expectCliError, expectCliFailure } from '../support/cli.js';


interface Run {
  status: number;
  stdout: string;
  stderr: string;
}


function qemu(args: string[], cwd: string): Run {
  const r = spawnSync('qemu-img', args, { cwd, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/**
 * `cowchain ARGS` in `cwd`: as a process of the built CLI (`asProcess`: exit status and output as
 * a user sees them), else in-process (main(), after a chdir), where a node child costs more CPU
 * than the qemu-img runs of a whole case. Each command's first run in this file is a process.
 */
async function ourCli(args: string[], cwd: string, asProcess = false): Promise<Run> {
  if (asProcess) return cliProcess(args, cwd);
  const prev = process.cwd();
  process.chdir(cwd);
  try {
    return await cli(...args);
  } finally {
    process.chdir(prev);
  }
}

/** cowchain and qemu-img with the same arguments succeed and print the same stdout. */
async function bothOk(sub: string[], ours: string, theirs: string, asProcess = false): Promise<string> {
  const a = await ourCli(['img', ...sub], ours, asProcess);
  const b = qemu(sub, theirs);
  expect(b.status, `qemu-img ${sub.join(' ')}: ${b.stderr}`).toBe(0);
  expect(a.status, `cowchain img ${sub.join(' ')}: ${a.stderr}`).toBe(0);
  expect(a.stderr, `cowchain img ${sub.join(' ')}`).toBe('');
  expect(a.stdout, `cowchain img ${sub.join(' ')}: stdout as qemu-img's`).toBe(b.stdout);
  return a.stdout;
}

/** The same failure by qemu-img (exit 1), for the arguments that make ours fail. */
function expectQemuFails(sub: string[], cwd: string): void {
  const r = qemu(sub, cwd);
  expect(r.status, `qemu-img ${sub.join(' ')} should fail: ${r.stdout}${r.stderr}`).toBe(1);
}

/**
 * The error contract (expectCliFailure) of `cowchain ARGS` run in-process (main()) in `dir`: the
 * error tests run their first case as a process of the built CLI (exit status and stderr as a
 * user sees them) and the rest in-process, where a node child costs more CPU than the qemu-img
 * runs of a whole case.
 */
async function expectCliErrorIn(args: string[], code: string, dir: string): Promise<string> {
  const cwd = process.cwd();
  process.chdir(dir);
  try {
    return expectCliFailure(await cli(...args), code, `cowchain ${args.join(' ')} (in-process)`);
  } finally {
    process.chdir(cwd);
  }
}

/** Every file of `a` has the same bytes in `b` (and `b` has no other file). */
function expectSameFiles(a: string, b: string, label: string): void {
  expect(fs.readdirSync(b).sort(), label).toStrictEqual(fs.readdirSync(a).sort());
  for (const f of fs.readdirSync(a)) expect(fs.readFileSync(path.join(b, f)).equals(fs.readFileSync(path.join(a, f))), `${label}: ${f}`).toBe(true);
}

const layer = (o: Partial<LayerSpec> & Pick<LayerSpec, 'name'>): LayerSpec => ({
  format: 'qcow2', size: 3 * MiB, clusterSize: 64 * KiB, compat: '1.1', extendedL2: false, refcountBits: 16, fill: 'io', seed: 1, ops: 24, maxLen: 256 * KiB, ...o,
});

/** l0.raw (2 MiB) <- l1.qcow2 (v2) <- l2.qcow2 (4 KiB clusters) <- l3.qcow2 (extended L2), plus unrelated images. */
const CHAIN: ChainSpec = {
  layers: [
    layer({ name: 'l0.raw', format: 'raw', fill: 'patterned', size: 2 * MiB, seed: 41 }),
    layer({ name: 'l1.qcow2', compat: '0.10', size: 2 * MiB + 512, seed: 42 }),
    layer({ name: 'l2.qcow2', clusterSize: 4 * KiB, seed: 43, maxLen: 64 * KiB }),
    layer({ name: 'l3.qcow2', clusterSize: 32 * KiB, extendedL2: true, seed: 44 }),
  ],
};

let root: string;
/** The untouched fixtures (the chain in `chain/`, unrelated images next to it). */
let pristine: string;
let n = 0;

/** Three identical copies: for cowchain's CLI, for qemu-img, for the API. */
function copies(): { ours: string; theirs: string; api: string } {
  const k = n++;
  return {
    ours: copyDir(pristine, path.join(root, `${k}-cli`)),
    theirs: copyDir(pristine, path.join(root, `${k}-qemu`)),
    api: copyDir(pristine, path.join(root, `${k}-api`)),
  };
}

beforeAll(() => {
  requireQemu();

  root = tmpDir('cowchain-chain-cli-');
  pristine = path.join(root, 'pristine');
  fs.mkdirSync(pristine);
  buildChain(pristine, CHAIN);
  qemuImg(['create', '-q', '-f', 'qcow2', path.join(pristine, 'lone.qcow2'), String(MiB)]);
  buildChain(pristine, { layers: [layer({ name: 'other.qcow2', size: 5 * MiB, clusterSize: 512, seed: 45, maxLen: 32 * KiB })] });
  fs.writeFileSync(path.join(pristine, 'other.raw'), Buffer.alloc(MiB, 0x5a));
});

describe('img commit', () => {
  it('commit TOP: "Image committed.", the base as qemu-img commit leaves it, the top emptied; the files commitImage writes', async () => {
    const { ours, theirs, api } = copies();
    expect(await bothOk(['commit', 'l3.qcow2'], ours, theirs, true)).toBe('Image committed.\n');
    commitImage(path.join(api, 'l3.qcow2'));
    expectIdentical(path.join(ours, 'l2.qcow2'), path.join(theirs, 'l2.qcow2'), 'base');
    expectIdentical(path.join(ours, 'l3.qcow2'), path.join(pristine, 'l3.qcow2'), "top's guest view");
    expectNothingAllocated(path.join(ours, 'l3.qcow2'), 'emptied top');
    expectCheckClean(path.join(ours, 'l2.qcow2'), 'qcow2', 'base');
    expectCheckClean(path.join(ours, 'l3.qcow2'), 'qcow2', 'top');
    expectSameChainHeaders(path.join(ours, 'l3.qcow2'), path.join(theirs, 'l3.qcow2'), 'chain headers');
    expectSameFiles(api, ours, 'CLI vs API');
  });

  it('commit -d TOP leaves the top as it was', async () => {
    const { ours, theirs, api } = copies();
    expect(await bothOk(['commit', '-d', 'l3.qcow2'], ours, theirs)).toBe('Image committed.\n');
    commitImage(path.join(api, 'l3.qcow2'), { keepTop: true });
    expectIdentical(path.join(ours, 'l2.qcow2'), path.join(theirs, 'l2.qcow2'), 'base');
    expect(fs.readFileSync(path.join(ours, 'l3.qcow2')).equals(fs.readFileSync(path.join(pristine, 'l3.qcow2')))).toBe(true);
    expectSameFiles(api, ours, 'CLI vs API');
  });

  it('commit -q -b BASE TOP (a v2 base two layers down, named relative to the working directory): quiet, the base as qemu-img leaves it', async () => {
    const { ours, theirs, api } = copies();
    expect(await bothOk(['commit', '-q', '-b', 'l1.qcow2', 'l3.qcow2'], ours, theirs)).toBe('');
    commitImage(path.join(api, 'l3.qcow2'), { base: path.join(api, 'l1.qcow2') });
    expectIdentical(path.join(ours, 'l1.qcow2'), path.join(theirs, 'l1.qcow2'), 'base', 'qcow2', 'qcow2');
    expectIdentical(path.join(ours, 'l3.qcow2'), path.join(pristine, 'l3.qcow2'), "top's guest view");
    expectCheckClean(path.join(ours, 'l1.qcow2'), 'qcow2', 'base');
    expectSameChainHeaders(path.join(ours, 'l3.qcow2'), path.join(theirs, 'l3.qcow2'), 'chain headers');
    expectSameFiles(api, ours, 'CLI vs API');
  });

  it('commit of a top named through another directory, into a raw base smaller than the top (it grows)', async () => {
    const { ours, theirs, api } = copies();
    const a = await ourCli(['img', 'commit', `${path.basename(ours)}/l1.qcow2`], root);
    const b = qemu(['commit', `${path.basename(theirs)}/l1.qcow2`], root);
    expect(b.status, b.stderr).toBe(0);
    expect([a.status, a.stdout, a.stderr], a.stderr).toStrictEqual([0, b.stdout, '']);
    commitImage(path.join(api, 'l1.qcow2'));
    expect(fs.statSync(path.join(ours, 'l0.raw')).size).toBe(fs.statSync(path.join(theirs, 'l0.raw')).size);
    expect(fs.statSync(path.join(ours, 'l0.raw')).size).toBe(2 * MiB + 512);
    expectIdentical(path.join(ours, 'l0.raw'), path.join(theirs, 'l0.raw'), 'raw base', 'raw', 'raw');
    expectIdentical(path.join(ours, 'l1.qcow2'), path.join(pristine, 'l1.qcow2'), "the top's guest view");
    expectNothingAllocated(path.join(ours, 'l1.qcow2'), 'emptied v2 top');
    expectCheckClean(path.join(ours, 'l1.qcow2'), 'qcow2', 'emptied v2 top');
    expectSameFiles(api, ours, 'CLI vs API');
  });

  it('errors: exit 1, one coded line, nothing changed — where qemu-img fails too', async () => {
    const { ours, theirs } = copies();
    const cases: [string[], string][] = [
      [['commit', 'lone.qcow2'], 'ECOW_BAD_ARGUMENT'], // no backing file
      [['commit', '-b', 'other.qcow2', 'l3.qcow2'], 'ECOW_BAD_ARGUMENT'], // not in the chain
      [['commit', 'missing.qcow2'], 'ECOW_NOT_FOUND'],
      [['commit', '-d', 'nothing/here.qcow2'], 'ECOW_NOT_FOUND'],
    ];
    for (const [i, [args, code]] of cases.entries()) {
      if (i === 0) expectCliError(['img', ...args], code, ours);
      else await expectCliErrorIn(['img', ...args], code, ours);
      expectQemuFails(args, theirs);
    }
    expectSameFiles(pristine, ours, 'after the refused commands');
    // A chain whose backing file is gone.
    fs.rmSync(path.join(ours, 'l1.qcow2'));
    fs.rmSync(path.join(theirs, 'l1.qcow2'));
    await expectCliErrorIn(['img', 'commit', 'l3.qcow2'], 'ECOW_BACKING_MISSING', ours);
    expectQemuFails(['commit', 'l3.qcow2'], theirs);
    expect(fs.readFileSync(path.join(ours, 'l3.qcow2')).equals(fs.readFileSync(path.join(pristine, 'l3.qcow2')))).toBe(true);
    expect(fs.readFileSync(path.join(ours, 'l2.qcow2')).equals(fs.readFileSync(path.join(pristine, 'l2.qcow2')))).toBe(true);
  });
});

describe('img rebase', () => {
  it('safe rebase onto an image deeper in the chain, FILE in another directory: the guest view kept, as qemu-img rebase', async () => {
    const { ours, theirs, api } = copies();
    // From the parent directory: NEW is relative to FILE's directory (qemu's rule), not to the cwd.
    const args = (d: string) => ['rebase', '-b', 'l1.qcow2', '-F', 'qcow2', `${path.basename(d)}/l3.qcow2`];
    const a = await ourCli(['img', ...args(ours)], root, true);
    const b = qemu(args(theirs), root);
    expect([a.status, a.stdout, a.stderr], a.stderr).toStrictEqual([0, '', '']);
    expect([b.status, b.stdout], b.stderr).toStrictEqual([0, '']);
    rebaseImage(path.join(api, 'l3.qcow2'), 'l1.qcow2', { backingFormat: 'qcow2' });
    expectIdentical(path.join(ours, 'l3.qcow2'), path.join(pristine, 'l3.qcow2'), "top's guest view");
    expectIdentical(path.join(ours, 'l3.qcow2'), path.join(theirs, 'l3.qcow2'), 'ours vs qemu');
    expectCheckClean(path.join(ours, 'l3.qcow2'), 'qcow2', 'top');
    expectSameChainHeaders(path.join(ours, 'l3.qcow2'), path.join(theirs, 'l3.qcow2'), 'chain headers');
    expect(headerFacts(path.join(ours, 'l3.qcow2'))['backing-filename']).toBe('l1.qcow2');
    expectSameFiles(api, ours, 'CLI vs API');
  });

  it('safe rebase without -F (the format is probed and recorded), onto an unrelated qcow2 image, and -b "" (flatten)', async () => {
    const { ours, theirs, api } = copies();
    let r = await ourCli(['img', 'rebase', '-b', 'other.qcow2', 'l2.qcow2'], ours);
    expect([r.status, r.stdout, r.stderr]).toStrictEqual([0, '', '']);
    expect(qemu(['rebase', '-b', 'other.qcow2', '-F', 'qcow2', 'l2.qcow2'], theirs).status).toBe(0);
    rebaseImage(path.join(api, 'l2.qcow2'), 'other.qcow2');
    expectIdentical(path.join(ours, 'l2.qcow2'), path.join(pristine, 'l2.qcow2'), "l2's guest view");
    expectIdentical(path.join(ours, 'l3.qcow2'), path.join(pristine, 'l3.qcow2'), "l3's guest view");
    expectSameChainHeaders(path.join(ours, 'l3.qcow2'), path.join(theirs, 'l3.qcow2'), 'chain headers');
    await bothOk(['rebase', '-b', '', 'l3.qcow2'], ours, theirs);
    rebaseImage(path.join(api, 'l3.qcow2'), '');
    expectIdentical(path.join(ours, 'l3.qcow2'), path.join(pristine, 'l3.qcow2'), 'flattened top');
    expectSameChainHeaders(path.join(ours, 'l3.qcow2'), path.join(theirs, 'l3.qcow2'), 'flattened: headers');
    expectCheckClean(path.join(ours, 'l3.qcow2'), 'qcow2', 'flattened top');
    expectSameFiles(api, ours, 'CLI vs API');
    r = await ourCli(['img', 'info', '--output', 'json', 'l3.qcow2'], ours);
    expect(JSON.parse(r.stdout)['backing-filename']).toBeUndefined();
  });

  it('rebase -u: the header only, byte for byte what qemu-img writes (also onto a name that does not exist)', async () => {
    const { ours, theirs, api } = copies();
    await bothOk(['rebase', '-u', '-b', 'other.raw', '-F', 'raw', 'l3.qcow2'], ours, theirs);
    await bothOk(['rebase', '-u', '-b', '../nowhere/gone.qcow2', '-F', 'qcow2', 'l2.qcow2'], ours, theirs);
    await bothOk(['rebase', '-u', '-b', '', 'l1.qcow2'], ours, theirs);
    rebaseImage(path.join(api, 'l3.qcow2'), 'other.raw', { unsafe: true, backingFormat: 'raw' });
    rebaseImage(path.join(api, 'l2.qcow2'), '../nowhere/gone.qcow2', { unsafe: true, backingFormat: 'qcow2' });
    rebaseImage(path.join(api, 'l1.qcow2'), '', { unsafe: true });
    expectSameFiles(theirs, ours, 'CLI vs qemu-img');
    expectSameFiles(api, ours, 'CLI vs API');
  });

  it('errors: exit 1, one coded line, nothing changed — where qemu-img fails too', async () => {
    const { ours, theirs } = copies();
    const cases: [string[], string][] = [
      [['rebase', '-b', 'missing.qcow2', '-F', 'qcow2', 'l3.qcow2'], 'ECOW_NOT_FOUND'], // safe: the new backing file must open
      [['rebase', '-b', 'l1.qcow2', '-F', 'qcow2', 'missing.qcow2'], 'ECOW_NOT_FOUND'],
      [['rebase', '-b', 'other.qcow2', '-F', 'qcow2', '-f', 'raw', 'l0.raw'], 'ECOW_BAD_ARGUMENT'],
    ];
    for (const [k, [args, code]] of cases.entries()) {
      // Our rebase has no -f: a raw FILE is recognised by probing.
      const ourArgs = ['img', ...args.filter((x, i, a) => x !== '-f' && a[i - 1] !== '-f')];
      if (k === 0) expectCliError(ourArgs, code, ours);
      else await expectCliErrorIn(ourArgs, code, ours);
      expectQemuFails(args, theirs);
    }
    await expectCliErrorIn(['img', 'rebase', '-b', 'l1.qcow2', '-F', 'vmdk', 'l3.qcow2'], 'ECOW_UNKNOWN_FORMAT', ours);
    expectSameFiles(pristine, ours, 'after the refused commands');
  });
});

describe('img stream', () => {
  it('stream FILE (everything) and stream -b BASE FILE: the guest view kept; qemu-img rebase onto the same base agrees', async () => {
    const { ours, theirs, api } = copies();
    let r = await ourCli(['img', 'stream', '-b', 'l1.qcow2', 'l3.qcow2'], ours, true);
    expect([r.status, r.stdout, r.stderr]).toStrictEqual([0, '', '']);
    expect(qemu(['rebase', '-b', 'l1.qcow2', '-F', 'qcow2', 'l3.qcow2'], theirs).status).toBe(0);
    streamImage(path.join(api, 'l3.qcow2'), { base: path.join(api, 'l1.qcow2') });
    expectIdentical(path.join(ours, 'l3.qcow2'), path.join(pristine, 'l3.qcow2'), 'streamed to l1');
    expectIdentical(path.join(ours, 'l3.qcow2'), path.join(theirs, 'l3.qcow2'), 'ours vs qemu');
    expectSameChainHeaders(path.join(ours, 'l3.qcow2'), path.join(theirs, 'l3.qcow2'), 'chain headers');
    expectCheckClean(path.join(ours, 'l3.qcow2'), 'qcow2', 'streamed top');
    r = await ourCli(['img', 'stream', 'l2.qcow2'], ours);
    expect([r.status, r.stdout, r.stderr]).toStrictEqual([0, '', '']);
    expect(qemu(['rebase', '-b', '', 'l2.qcow2'], theirs).status).toBe(0);
    streamImage(path.join(api, 'l2.qcow2'));
    expectIdentical(path.join(ours, 'l2.qcow2'), path.join(pristine, 'l2.qcow2'), 'streamed all');
    expectSameChainHeaders(path.join(ours, 'l2.qcow2'), path.join(theirs, 'l2.qcow2'), 'streamed all: headers');
    expectSameFiles(api, ours, 'CLI vs API');
  });

  it('errors: a base outside the chain, a missing file', async () => {
    const { ours } = copies();
    expectCliError(['img', 'stream', '-b', 'other.qcow2', 'l3.qcow2'], 'ECOW_BAD_ARGUMENT', ours);
    await expectCliErrorIn(['img', 'stream', 'missing.qcow2'], 'ECOW_NOT_FOUND', ours);
    expectSameFiles(pristine, ours, 'after the refused commands');
  });
});

describe('img convert', () => {
  it('-O raw (and the default), -O qcow2, -O qcow2 -o … (repeated; size ignored as qemu-img does): the content and header of qemu-img convert; the files convertImage writes', async () => {
    const { ours, theirs, api } = copies();
    const variants: [string[], 'raw' | 'qcow2', Parameters<typeof convertImage>[2]][] = [
      [['-O', 'raw'], 'raw', { format: 'raw' }],
      [[], 'raw', {}],
      [['-O', 'qcow2'], 'qcow2', { format: 'qcow2' }],
      [['-O', 'qcow2', '-o', 'cluster_size=4k,compat=0.10'], 'qcow2', { format: 'qcow2', create: { clusterSize: 4096, compat: '0.10' } }],
      [['-O', 'qcow2', '-o', 'cluster_size=32k', '-o', 'extended_l2=on,refcount_bits=1'], 'qcow2', { format: 'qcow2', create: { clusterSize: 32768, extendedL2: true, refcountBits: 1 } }],
      [['-O', 'qcow2', '-o', 'cluster_size=2M,size=1G'], 'qcow2', { format: 'qcow2', create: { clusterSize: 2 * MiB } }],
    ];
    for (const [i, [opts, fmt, apiOpts]] of variants.entries()) {
      const dst = `out${i}.${fmt}`;
      await bothOk(['convert', ...opts, 'l3.qcow2', dst], ours, theirs, i === 0);
      const src = openImage(path.join(api, 'l3.qcow2'));
      try {
        convertImage(src, path.join(api, dst), apiOpts);
      } finally {
        src.close();
      }
      const label = `convert ${opts.join(' ')}`;
      expectIdentical(path.join(ours, dst), path.join(theirs, dst), label, fmt, fmt);
      expectIdentical(path.join(ours, dst), path.join(pristine, 'l3.qcow2'), `${label} vs the source`, fmt, 'qcow2');
      expect(headerFacts(path.join(ours, dst), fmt), label).toStrictEqual(headerFacts(path.join(theirs, dst), fmt));
      expectCheckClean(path.join(ours, dst), fmt, label);
    }
    expectSameFiles(api, ours, 'CLI vs API');
  });

  it('errors: exit 1, one coded line, no target left behind — where qemu-img fails too', async () => {
    const { ours, theirs } = copies();
    const cases: [string[], string][] = [
      [['convert', '-O', 'qcow2', '-o', 'foo=1', 'l3.qcow2', 'x.qcow2'], 'ECOW_BAD_ARGUMENT'],
      [['convert', '-O', 'raw', '-o', 'cluster_size=4k', 'l3.qcow2', 'x.raw'], 'ECOW_BAD_ARGUMENT'],
      [['convert', '-O', 'qcow2', '-o', 'cluster_size=4k,extended_l2=on', 'l3.qcow2', 'x.qcow2'], 'ECOW_BAD_ARGUMENT'],
      [['convert', '-O', 'qcow2', '-o', 'cluster_size=3000', 'l3.qcow2', 'x.qcow2'], 'ECOW_BAD_ARGUMENT'],
      [['convert', '-O', 'qcow2', '-o', 'compat=0.10,refcount_bits=8', 'l3.qcow2', 'x.qcow2'], 'ECOW_BAD_ARGUMENT'],
      [['convert', '-O', 'qcow2', '-o', 'size=12Q', 'l3.qcow2', 'x.qcow2'], 'ECOW_BAD_ARGUMENT'],
      [['convert', '-O', 'raw', 'missing.qcow2', 'x.raw'], 'ECOW_NOT_FOUND'],
    ];
    for (const [i, [args, code]] of cases.entries()) {
      if (i === 0) expectCliError(['img', ...args], code, ours);
      else await expectCliErrorIn(['img', ...args], code, ours);
      expectQemuFails(args, theirs);
    }
    // Formats qemu has and we do not: a bad argument (as cli-read.test.ts pins it).
    expect(await expectCliErrorIn(['img', 'convert', '-O', 'vmdk', 'l3.qcow2', 'x.vmdk'], 'ECOW_BAD_ARGUMENT', ours)).toContain('vmdk');
    await expectCliErrorIn(['img', 'convert', '-O', 'qcow2', '-o', 'backing_file=l2.qcow2,backing_fmt=qcow2', 'l3.qcow2', 'x.qcow2'], 'ECOW_BAD_ARGUMENT', ours);
    expectSameFiles(pristine, ours, 'after the refused commands');
  });
});
