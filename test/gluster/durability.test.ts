// Durability steps on FUSE: a child process runs the detached lifecycle (create volume, two
// snapshots, delete one by commit + rebase, delete the active one, clone) through the driver on
// the GlusterFS mount, under strace. From the trace:
//  - every fsync and fdatasync it made returned 0 (none failed, and no directory fsync was
//    refused with EINVAL — the one error syncDir tolerates — so none was silently skipped);
//  - a file that is renamed or linked into place was fsynced first;
//  - every rename, link and unlink in the volume directory is followed by an fsync of the
//    directory before the driver does anything else there (only the removal of the temp file
//    of a link comes in between);
//  - the engine's flushes (fdatasync of the images it wrote) happened.
// Then the result is read back through mount B.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, expect, it } from 'vitest';
import { openImage } from '../../src/image/open-chain.js';
import { VolumeDriver } from '../../src/volume/driver.js';
import { qemuCheck, qemuImg, requireQemu } from '../support/qemu.js';
import { bundleChild, glusterMounts, localDir, runChild, sharedDir } from './support.js';

requireQemu();
const m = glusterMounts();
const STRACE = spawnSync('sh', ['-c', 'command -v strace']).stdout?.toString().trim();

const VOL = '5e5e5e5e-1234-4234-8234-123412341234';
const CLONE = '6f6f6f6f-1234-4234-8234-123412341234';
const OPS = ['createVolume', 'write', 'createSnapshot', 'write', 'createSnapshot', 'write', 'deleteSnapshot-commit-rebase', 'deleteSnapshot-active', 'cloneVolume', 'end'];

let child = '';
beforeAll(async () => {
  child = await bundleChild('test/gluster/fixtures/ops-child.ts');
});

interface Call {
  t: number;
  name: string;
  args: string;
  ret: number;
  err: string;
}

/** strace -ff -ttt -y output files (one per thread), merged by time. */
function readTrace(prefix: string): Call[] {
  const dir = path.dirname(prefix);
  const calls: Call[] = [];
  for (const f of fs.readdirSync(dir).filter((n) => n.startsWith(`${path.basename(prefix)}.`))) {
    for (const line of fs.readFileSync(path.join(dir, f), 'utf8').split('\n')) {
      const r = /^(\d+\.\d+) (\w+)\((.*)\) += (-?\d+)(?: (\w+))?/.exec(line);
      if (r) calls.push({ t: Number(r[1]), name: r[2], args: r[3], ret: Number(r[4]), err: r[5] ?? '' });
    }
  }
  return calls.sort((a, b) => a.t - b.t);
}

/** The path strace -y shows for the fd argument of fsync/fdatasync: `18</a/b>` → `/a/b`. */
const fdPath = (c: Call): string => /^\d+<(.*)>$/.exec(c.args)?.[1] ?? '';
/** The quoted path arguments of rename/link/unlink (and their *at forms). */
const paths = (c: Call): string[] => [...c.args.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((x) => x[1]);

it('fsync of files and of the directory after every rename/link/unlink, all succeeding on FUSE', async () => {
  expect(STRACE, 'strace is needed for this test (test/gluster/setup.sh installs it)').toBeTruthy();
  const d = sharedDir(m, 'durability');
  const trace = path.join(localDir('strace'), 't');
  const r = await runChild(child, {
    env: { DIR: d.a },
    wrapper: [STRACE!, '-f', '-ff', '-ttt', '-qq', '-y', '-o', trace, '-e', 'trace=fsync,fdatasync,rename,renameat,renameat2,link,linkat,unlink,unlinkat,access,faccessat,faccessat2'],
    timeoutMs: 120_000,
  });
  expect(`${r.code} ${r.signal}`, r.stderr).toBe('0 null');

  const all = readTrace(trace);
  const markers = all.filter((c) => c.args.startsWith('"/cowchain-marker/')).map((c) => paths(c)[0].slice('/cowchain-marker/'.length));
  expect(markers, 'the operations, in order').toEqual(OPS);
  // Only what concerns the volume directory (node itself fsyncs nothing else; be precise anyway).
  const inDir = (p: string) => p === d.a || path.dirname(p) === d.a;
  const calls = all.filter((c) => (c.name.startsWith('f') && !c.name.startsWith('faccess') ? inDir(fdPath(c)) : paths(c).some(inDir)) || c.args.startsWith('"/cowchain-marker/'));

  const syncs = calls.filter((c) => c.name === 'fsync' || c.name === 'fdatasync');
  const failed = syncs.filter((c) => c.ret !== 0);
  expect(failed.map((c) => `${c.name}(${c.args}) = ${c.ret} ${c.err}`), 'failed fsync/fdatasync').toEqual([]);
  const dirSyncs = syncs.filter((c) => fdPath(c) === d.a);
  const imageFlushes = syncs.filter((c) => c.name === 'fdatasync' && /\/volume-[^/]*$/.test(fdPath(c)));
  const changes = calls.filter((c) => /^(rename|link|unlink)/.test(c.name));
  console.log(`durability on ${m.source}: ${syncs.length} fsync/fdatasync (${dirSyncs.length} of the directory, ${imageFlushes.length} image flushes), ${changes.length} renames/links/unlinks, all returned 0`);
  expect(changes.filter((c) => c.ret !== 0).map((c) => `${c.name}(${c.args}) = ${c.ret} ${c.err}`)).toEqual([]);
  expect(imageFlushes.length, 'the engine flushed the images it wrote').toBeGreaterThan(10);

  const problems: string[] = [];
  calls.forEach((c, i) => {
    if (!/^(rename|link)/.test(c.name)) return;
    // the source was made durable before it was put in place
    const src = paths(c)[0];
    if (!calls.slice(0, i).some((s) => (s.name === 'fsync' || s.name === 'fdatasync') && fdPath(s) === src && s.ret === 0)) {
      problems.push(`${c.name}(${c.args}) of a file never fsynced`);
    }
  });
  calls.forEach((c, i) => {
    if (!/^(rename|link|unlink)/.test(c.name)) return;
    // the next thing done in the directory is its fsync (a temp file's removal may come first)
    for (const next of calls.slice(i + 1)) {
      if (/^unlink/.test(next.name) && path.basename(paths(next)[0]).startsWith('.')) continue;
      if (next.name === 'fsync' && fdPath(next) === d.a && next.ret === 0) return;
      problems.push(`${c.name}(${c.args}) is followed by ${next.name}(${next.args}) before the directory is fsynced`);
      return;
    }
    problems.push(`${c.name}(${c.args}): no fsync of the directory afterwards`);
  });
  expect(problems).toEqual([]);
  // every info-file and journal replacement and every link into place was among them
  expect(changes.filter((c) => /^rename/.test(c.name) && paths(c)[1].endsWith('.info')).length).toBe(6);
  expect(changes.filter((c) => /^link/.test(c.name)).length).toBe(2);

  // The result, read through mount B: the clone holds the volume's content, every file is clean.
  const { chain } = await new VolumeDriver({ dir: d.b }).volumeInfo(VOL);
  expect(chain.map((l) => l.name)).toEqual([`volume-${VOL}`]);
  const read = (f: string) => {
    const img = openImage(path.join(d.b, f));
    try {
      return Buffer.from(img.read(0, img.virtualSize));
    } finally {
      img.close();
    }
  };
  expect(read(`volume-${CLONE}`).equals(read(`volume-${VOL}`)), 'the clone reads as the volume').toBe(true);
  for (const f of [`volume-${VOL}`, `volume-${CLONE}`]) {
    const fmt = JSON.parse(qemuImg(['info', '--output=json', path.join(d.b, f)]).stdout).format;
    if (fmt === 'qcow2') expect(qemuCheck(path.join(d.b, f)).status, f).toBe(0);
  }
  expect(fs.readdirSync(d.b).sort()).toEqual(['.cinderSecureEnvIndicator', `volume-${CLONE}`, `volume-${CLONE}.format`, `volume-${VOL}`, `volume-${VOL}.format`, `volume-${VOL}.info`].sort());
});
