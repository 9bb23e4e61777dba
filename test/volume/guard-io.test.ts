// Issue 19, item 2: the lease is checked before every write a volume operation issues, on every
// path — each engine job (commit, rebase safe and unsafe, stream, convert, create) in this thread
// and in an engine worker (which asks its host), and a new overlay's header. A guard that says
// the lock is lost stops the job before its first write: the target's bytes are unchanged, or
// the new file never appears.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CowError } from '../../src/errors.js';
import { createImage } from '../../src/image/create.js';
import { openImage } from '../../src/image/open-chain.js';
import { runJobRequest, type JobHooks, type JobRequest } from '../../src/volume/job-request.js';
import { VolumeFiles } from '../../src/volume/volume-files.js';
import { defaultEnginePool } from '../../src/worker/pool.js';
import { rejection } from '../support/errors.js';
import { tmpDir } from '../support/qemu.js';
import { BASE, MiB, SNAP, VOL } from '../support/volume.js';

let dir: string;
beforeEach(() => {
  dir = tmpDir('cowchain-guard-io-');
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const p = (n: string) => path.join(dir, n);

/** base.qcow2 (data in its first MiB) <- top.qcow2 (data in its second MiB). */
function chain(): void {
  createImage(p('base.qcow2'), { format: 'qcow2', size: 4 * MiB });
  createImage(p('top.qcow2'), { format: 'qcow2', backingFile: 'base.qcow2', backingFormat: 'qcow2' });
  for (const [file, off, byte] of [
    ['base.qcow2', 0, 0x11],
    ['top.qcow2', MiB, 0x22],
  ] as const) {
    const img = openImage(p(file), { writable: true, noBacking: true });
    img.write(off, Buffer.alloc(MiB, byte));
    img.close();
  }
}

/** Each job, and the file it writes (null: a file it makes). */
const JOBS: { name: string; request: () => JobRequest; writes: string; made?: boolean }[] = [
  { name: 'commit', request: () => ({ op: 'commit', top: p('top.qcow2') }), writes: 'base.qcow2' },
  { name: 'rebase (unsafe)', request: () => ({ op: 'rebase', file: p('top.qcow2'), newBacking: '', unsafe: true }), writes: 'top.qcow2' },
  { name: 'rebase (safe)', request: () => ({ op: 'rebase', file: p('top.qcow2'), newBacking: '' }), writes: 'top.qcow2' },
  { name: 'stream', request: () => ({ op: 'stream', file: p('top.qcow2') }), writes: 'top.qcow2' },
  { name: 'convert', request: () => ({ op: 'convert', src: p('top.qcow2'), dst: p('out.qcow2'), format: 'qcow2' }), writes: 'out.qcow2', made: true },
  { name: 'create', request: () => ({ op: 'create', file: p('new.qcow2'), options: { format: 'qcow2', size: 4 * MiB } }), writes: 'new.qcow2', made: true },
];

const RUNNERS: { name: string; run: (request: JobRequest, hooks: JobHooks) => Promise<unknown> }[] = [
  { name: 'in this thread', run: async (request, hooks) => runJobRequest(request, hooks as Parameters<typeof runJobRequest>[1]) },
  { name: 'in an engine worker', run: (request, hooks) => defaultEnginePool().run(request, hooks) },
];

const lost = () => new CowError('ECOW_LOCK_LOST', 'lock taken over (test)');

describe('the per-write guard', () => {
  for (const runner of RUNNERS) {
    for (const job of JOBS) {
      it(`${job.name} ${runner.name}: runs before its writes, and a lost lock stops it before the first`, async () => {
        chain();
        let calls = 0;
        await runner.run(job.request(), { guardIo: () => void calls++ });
        expect(calls, 'guard calls').toBeGreaterThan(0);

        fs.rmSync(dir, { recursive: true, force: true });
        fs.mkdirSync(dir);
        chain();
        const before = job.made ? null : fs.readFileSync(p(job.writes));
        const e = await rejection(runner.run(job.request(), { guardIo: () => { throw lost(); } }));
        expect(e.code, e.message).toBe('ECOW_LOCK_LOST');
        if (before) expect(fs.readFileSync(p(job.writes)).equals(before), `${job.writes} unchanged`).toBe(true);
        else expect(fs.existsSync(p(job.writes)), `${job.writes} not made`).toBe(false);
      });
    }
  }

  it("a new overlay's header is written under the guard too (VolumeFiles.createOverlay)", async () => {
    createImage(p(BASE), { format: 'raw', size: MiB });
    let calls = 0;
    // The first call is createOverlay's own check before it starts; the next ones are its writes.
    const files = new VolumeFiles(dir, VOL, () => {
      if (++calls > 1) throw lost();
    });
    const e = await rejection(files.createOverlay(`${BASE}.${SNAP.aaaa}`, { size: MiB, backing: BASE, backingFormat: 'raw' }));
    expect(e.code).toBe('ECOW_LOCK_LOST');
    expect(fs.statSync(p(`${BASE}.${SNAP.aaaa}`)).size, 'nothing written into the new file').toBe(0);
  });
});
