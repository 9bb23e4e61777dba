// Image operations with their files on the GlusterFS mount: create, commit (emptying the top,
// -d, -b), rebase (safe and unsafe), convert and check, each result refereed by qemu-img check /
// compare / info — read through the OTHER mount (B), so what was checked is what reached the
// volume, not what one client cached.
//
// `commit TOP` includes emptying the top, the step at which qemu-img commit 7.2 aborts on such a
// mount ("First cluster in emptied image is in use", exit 134, after copying the data); the test
// runs qemu-img commit on an identical copy and reports what it did, and requires cowchain's
// commit to be right either way.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { checkImage, commitImage, convertImage, createImage, openImage, rebaseImage } from '../../src/index.js';
import { buildChain, copyDir, expectCheckClean, expectIdentical, expectNothingAllocated, headerFacts, type ChainSpec, type LayerSpec } from '../support/chains.js';
import { MiB, readBE, writeBE } from '../support/images.js';
import { qemuCheck, qemuImg, qemuIo, requireQemu } from '../support/qemu.js';
import { glusterMounts, localDir, sharedDir, type SharedDir } from './support.js';

requireQemu();
const m = glusterMounts();

const SIZE = 8 * MiB;
const layer = (name: string, format: 'raw' | 'qcow2', seed: number, over: Partial<LayerSpec> = {}): LayerSpec => ({
  name,
  format,
  size: SIZE,
  clusterSize: 65536,
  compat: '1.1',
  extendedL2: false,
  refcountBits: 16,
  fill: format === 'raw' ? 'patterned' : 'io',
  seed,
  ops: 24,
  maxLen: 512 * 1024,
  ...over,
});
/** base (raw or qcow2) <- mid <- top, made by qemu on the mount. */
const chain = (baseFormat: 'raw' | 'qcow2'): ChainSpec => ({
  layers: [layer('base', baseFormat, 11), layer('mid', 'qcow2', 12, { clusterSize: 32768 }), layer('top', 'qcow2', 13)],
});

let d: SharedDir;
let local: string;
let n = 0;
beforeAll(() => {
  d = sharedDir(m, 'image-ops');
  local = localDir('image-ops');
});

/** A fresh case directory on the volume: [through A, through B]. */
function caseDir(label: string): [string, string] {
  const name = `${label}-${n++}`;
  fs.mkdirSync(path.join(d.a, name));
  return [path.join(d.a, name), path.join(d.b, name)];
}

/** What `file`'s chain reads, as a raw file on local disk (qemu-img convert). */
function snapshotRaw(file: string, label: string): string {
  const out = path.join(local, `${label}-${n++}.raw`);
  qemuImg(['convert', '-O', 'raw', file, out]);
  return out;
}

describe('on the GlusterFS mount', () => {
  it('create: raw, qcow2, qcow2 over a backing file — qemu-img info and check agree (through mount B)', () => {
    const [a, b] = caseDir('create');
    createImage(path.join(a, 'r.raw'), { format: 'raw', size: SIZE });
    createImage(path.join(a, 'q.qcow2'), { format: 'qcow2', size: SIZE, clusterSize: 16384 });
    createImage(path.join(a, 'o.qcow2'), { format: 'qcow2', backingFile: 'q.qcow2', backingFormat: 'qcow2' });
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=16384', path.join(a, 'qemu-q.qcow2'), String(SIZE)]);
    qemuImg(['create', '-q', '-f', 'qcow2', '-b', 'q.qcow2', '-F', 'qcow2', path.join(a, 'qemu-o.qcow2')]);
    expect(fs.statSync(path.join(b, 'r.raw')).size).toBe(SIZE);
    expect(headerFacts(path.join(b, 'q.qcow2'))).toStrictEqual(headerFacts(path.join(b, 'qemu-q.qcow2')));
    expect(headerFacts(path.join(b, 'o.qcow2'))).toStrictEqual(headerFacts(path.join(b, 'qemu-o.qcow2')));
    for (const f of ['q.qcow2', 'o.qcow2']) expectCheckClean(path.join(b, f), 'qcow2', `created ${f}`);
    expectIdentical(path.join(b, 'o.qcow2'), path.join(b, 'r.raw'), 'a new overlay reads zeros', 'qcow2', 'raw');
  });

  for (const baseFormat of ['raw', 'qcow2'] as const) {
    it(`commit TOP (the top emptied afterwards), ${baseFormat} base — where qemu-img commit aborts on this mount`, () => {
      const [a, b] = caseDir(`commit-${baseFormat}`);
      buildChain(a, chain(baseFormat));
      const before = snapshotRaw(path.join(a, 'top'), 'before');
      const qemuCopy = copyDir(a, `${a}-qemu`);

      commitImage(path.join(a, 'top'));
      // mid now holds the top's view; the top allocates nothing and still reads the same
      expectIdentical(path.join(b, 'mid'), before, 'mid after commit reads what top read', 'qcow2', 'raw');
      expectIdentical(path.join(b, 'top'), before, 'top reads the same after commit', 'qcow2', 'raw');
      expectNothingAllocated(path.join(b, 'top'), 'emptied top');
      for (const f of ['mid', 'top']) expectCheckClean(path.join(b, f), 'qcow2', `after commit: ${f}`);

      // The referee's own run, on an identical copy on the mount: reported, not required.
      const q = qemuImg(['commit', '-f', 'qcow2', path.join(qemuCopy, 'top')], { ok: [0, 1, 134, -1] }); // -1: killed by a signal (SIGABRT)
      const msg = (q.stderr || q.stdout).trim().split('\n').pop();
      console.log(`qemu-img commit on ${m.source} (${baseFormat} base): ${q.status === -1 ? 'killed by a signal (abort)' : `exit ${q.status}`}${q.status ? ` — ${msg}` : ''}`);
      if (q.status === 0) expectIdentical(path.join(qemuCopy, 'mid'), path.join(b, 'mid'), 'qemu-img commit and cowchain agree', 'qcow2', 'qcow2');
      else expectIdentical(path.join(qemuCopy, 'mid'), before, 'qemu-img copied the data before it aborted', 'qcow2', 'raw');
    });
  }

  it('commit -d TOP and commit -b BASE TOP', () => {
    const [a, b] = caseDir('commit-d-b');
    buildChain(a, chain('qcow2'));
    const before = snapshotRaw(path.join(a, 'top'), 'before');
    const baseBefore = snapshotRaw(path.join(a, 'base'), 'base-before');
    const copy = copyDir(a, `${a}-b`);
    const topBytes = fs.readFileSync(path.join(a, 'top'));

    commitImage(path.join(a, 'top'), { keepTop: true });
    expect(fs.readFileSync(path.join(b, 'top')).equals(topBytes), '-d leaves the top untouched').toBe(true);
    expectIdentical(path.join(b, 'mid'), before, 'mid after commit -d', 'qcow2', 'raw');
    expectIdentical(path.join(b, 'base'), baseBefore, 'base untouched by commit -d', 'qcow2', 'raw');
    expectCheckClean(path.join(b, 'mid'), 'qcow2', 'mid after commit -d');

    const cb = path.join(m.b, path.relative(m.a, copy));
    commitImage(path.join(copy, 'top'), { base: path.join(copy, 'base') });
    expectIdentical(path.join(cb, 'base'), before, 'base after commit -b base', 'qcow2', 'raw');
    expectCheckClean(path.join(cb, 'base'), 'qcow2', 'base after commit -b');
  });

  it('rebase: safe onto another backing file keeps the guest view; unsafe changes the header only', () => {
    const [a, b] = caseDir('rebase');
    buildChain(a, chain('raw'));
    // another backing file: a different raw image
    buildChain(a, { layers: [layer('other', 'raw', 99)] });
    const before = snapshotRaw(path.join(a, 'top'), 'before');

    rebaseImage(path.join(a, 'top'), 'other', { backingFormat: 'raw' });
    expect(headerFacts(path.join(b, 'top'))['backing-filename']).toBe('other');
    expectIdentical(path.join(b, 'top'), before, 'safe rebase keeps the guest view', 'qcow2', 'raw');
    expectCheckClean(path.join(b, 'top'), 'qcow2', 'after safe rebase');

    const midBytes = fs.readFileSync(path.join(a, 'mid'));
    rebaseImage(path.join(a, 'mid'), 'other', { unsafe: true, backingFormat: 'raw' });
    expect(headerFacts(path.join(b, 'mid'))).toMatchObject({ 'backing-filename': 'other', 'backing-filename-format': 'raw' });
    // same bytes but the header's backing name
    const after = fs.readFileSync(path.join(b, 'mid'));
    expect(after.length).toBe(midBytes.length);
    expect(after.subarray(65536).equals(midBytes.subarray(65536)), 'unsafe rebase writes the header only').toBe(true);
    expectCheckClean(path.join(b, 'mid'), 'qcow2', 'after unsafe rebase');
  });

  it('convert a chain to raw and to qcow2 on the mount — qemu-img compare with the source', () => {
    const [a, b] = caseDir('convert');
    buildChain(a, chain('qcow2'));
    for (const format of ['raw', 'qcow2'] as const) {
      const src = openImage(path.join(a, 'top'));
      try {
        convertImage(src, path.join(a, `out.${format}`), { format });
      } finally {
        src.close();
      }
      expectIdentical(path.join(b, `out.${format}`), path.join(b, 'top'), `convert to ${format}`, format, 'qcow2');
      expectCheckClean(path.join(b, `out.${format}`), format, `converted ${format}`);
    }
  });

  it('check and leak repair: ours and qemu-img check agree, the repaired image is clean', () => {
    const [a, b] = caseDir('check');
    buildChain(a, chain('qcow2'));
    expect(checkImage(path.join(a, 'top')).exitCode).toBe(0);
    expect(qemuCheck(path.join(b, 'top')).status).toBe(0);

    // A leaked cluster: write guest cluster 0, then clear its L2 entry by hand — the data
    // cluster keeps refcount 1 with nothing referencing it.
    const leak = path.join(a, 'leak.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', leak, String(SIZE)]);
    qemuIo(leak, ['write -P 0x5a 0 64k'], 'qcow2');
    const l1 = Number(readBE(leak, 40, 8));
    const l2 = Number(readBE(leak, l1, 8) & 0x00fffffffffffe00n);
    writeBE(leak, l2, 8, 0);
    const theirs = qemuCheck(path.join(b, 'leak.qcow2'));
    expect(theirs.status, JSON.stringify(theirs.result)).toBe(3);
    const ours = checkImage(leak);
    expect({ exit: ours.exitCode, leaks: ours.result?.leaks }).toStrictEqual({ exit: 3, leaks: theirs.result.leaks });
    const repaired = checkImage(leak, { repair: 'leaks' });
    expect(repaired.exitCode).toBe(0);
    expectCheckClean(path.join(b, 'leak.qcow2'), 'qcow2', 'after leak repair on the mount');
  });
});
