// The async API (src/worker): the same jobs as the synchronous functions, run in engine worker
// threads. Each job's result is refereed by qemu (compare, check) against the synchronous job on
// an identical copy; progress, cancellation, a host checkpoint that stops a job, a worker killed
// mid-job (ECOW_WORKER_DIED, image still clean) and errors arriving with their codes.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CowError,
  EnginePool,
  check,
  checkImage,
  commit,
  commitImage,
  convert,
  convertImage,
  create,
  openImage,
  rebase,
  rebaseImage,
  stream,
  streamImage,
} from '../../src/index.js';
import { copyDir, expectCheckClean, expectIdentical, expectNoCorruption } from '../support/chains.js';
import { rejectionCode } from '../support/errors.js';
import { MiB } from '../support/images.js';
import { qemuImg, qemuIo, requireQemu, tmpDir } from '../support/qemu.js';

requireQemu();

let root: string;
/**
 * base.qcow2 (16 MiB, data in its first half) <- mid.qcow2 <- top.qcow2 (data scattered over 12 MiB):
 * small, as every test copies it (twice for a reference), and steps of STEP make a commit many steps.
 */
let template: string;
/** A commit's step in these tests: a quarter of a MiB (a 16 MiB commit takes 64). */
const STEP = 256 * 1024;
const pool = new EnginePool({ size: 2 });
afterAll(() => pool.close());

beforeAll(() => {
  root = tmpDir('cowchain-async-');
  template = path.join(root, 'template');
  fs.mkdirSync(template);
  qemuImg(['create', '-q', '-f', 'qcow2', path.join(template, 'base.qcow2'), '16M']);
  qemuIo(path.join(template, 'base.qcow2'), ['write -P 0x11 0 8M']);
  qemuImg(['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', path.join(template, 'mid.qcow2')]);
  qemuIo(path.join(template, 'mid.qcow2'), ['write -P 0x22 2M 1M', 'write -z 10M 256k']);
  qemuImg(['create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', path.join(template, 'top.qcow2')]);
  const cmds: string[] = [];
  for (let i = 0; i < 48; i++) cmds.push(`write -P ${0x30 + i} ${i * STEP + (i % 7) * 16384} 128k`);
  qemuIo(path.join(template, 'top.qcow2'), cmds);
});

let n = 0;
const fresh = (label: string) => copyDir(template, path.join(root, `${label}-${n++}`));
describe('jobs in worker threads give what the synchronous jobs give', () => {
  it('commit (default, -d, -b BASE): qemu-img compare equal to commitImage on a copy, images clean, progress reported', async () => {
    for (const variant of [{}, { keepTop: true }, { base: 'base.qcow2' }] as const) {
      const label = JSON.stringify(variant);
      const ours = fresh('commit-w');
      const ref = fresh('commit-s');
      const base = 'base' in variant ? { base: path.join(ours, 'base.qcow2') } : {};
      const progress: [number, number][] = [];
      await commit(path.join(ours, 'top.qcow2'), { ...variant, ...base, pool, stepBytes: 4 * STEP, onProgress: (d, t) => progress.push([d, t]) });
      commitImage(path.join(ref, 'top.qcow2'), { ...variant, ...('base' in variant ? { base: path.join(ref, 'base.qcow2') } : {}) });
      for (const f of ['base.qcow2', 'mid.qcow2', 'top.qcow2']) {
        expectIdentical(path.join(ours, f), path.join(ref, f), `${label}: ${f}`);
        expectCheckClean(path.join(ours, f), 'qcow2', `${label}: ${f}`);
      }
      expect(progress.length, label).toBeGreaterThanOrEqual(8);
      expect(progress[progress.length - 1][0], label).toBe(progress[progress.length - 1][1]);
      for (let i = 1; i < progress.length; i++) expect(progress[i][0]).toBeGreaterThanOrEqual(progress[i - 1][0]);
    }
  });

  it('rebase (safe and unsafe), stream, convert, check, create: the same files as the synchronous functions', async () => {
    const ours = fresh('ops-w');
    const ref = fresh('ops-s');
    await rebase(path.join(ours, 'top.qcow2'), 'base.qcow2', { pool, backingFormat: 'qcow2' });
    rebaseImage(path.join(ref, 'top.qcow2'), 'base.qcow2', { backingFormat: 'qcow2' });
    expectIdentical(path.join(ours, 'top.qcow2'), path.join(ref, 'top.qcow2'), 'safe rebase');
    expect(openImage(path.join(ours, 'top.qcow2'), { noBacking: true }).headerInfo().backingFile).toBe('base.qcow2');

    await stream(path.join(ours, 'top.qcow2'), { pool });
    streamImage(path.join(ref, 'top.qcow2'));
    expectIdentical(path.join(ours, 'top.qcow2'), path.join(ref, 'top.qcow2'), 'stream');
    expect(JSON.parse(qemuImg(['info', '--output=json', path.join(ours, 'top.qcow2')]).stdout)['backing-filename']).toBeUndefined();

    await rebase(path.join(ours, 'mid.qcow2'), 'elsewhere.qcow2', { pool, unsafe: true, backingFormat: 'qcow2' });
    rebaseImage(path.join(ref, 'mid.qcow2'), 'elsewhere.qcow2', { unsafe: true, backingFormat: 'qcow2' });
    expect(fs.readFileSync(path.join(ours, 'mid.qcow2')).equals(fs.readFileSync(path.join(ref, 'mid.qcow2'))), 'unsafe rebase: same bytes').toBe(true);

    await convert(path.join(ours, 'top.qcow2'), path.join(ours, 'flat.qcow2'), { pool, format: 'qcow2', create: { clusterSize: 131072 } });
    const src = openImage(path.join(ref, 'top.qcow2'));
    convertImage(src, path.join(ref, 'flat.qcow2'), { format: 'qcow2', create: { clusterSize: 131072 } });
    src.close();
    expectIdentical(path.join(ours, 'flat.qcow2'), path.join(ref, 'flat.qcow2'), 'convert');
    expectCheckClean(path.join(ours, 'flat.qcow2'), 'qcow2', 'convert');

    expect(await check(path.join(ours, 'flat.qcow2'), { pool })).toStrictEqual(checkImage(path.join(ours, 'flat.qcow2')));

    // convert -c: the same compressed image as the synchronous convert, clean, its data compressed.
    await convert(path.join(ours, 'top.qcow2'), path.join(ours, 'packed.qcow2'), { pool, format: 'qcow2', compressed: true });
    const srcC = openImage(path.join(ref, 'top.qcow2'));
    convertImage(srcC, path.join(ref, 'packed.qcow2'), { format: 'qcow2', compressed: true });
    srcC.close();
    expect(fs.readFileSync(path.join(ours, 'packed.qcow2')).equals(fs.readFileSync(path.join(ref, 'packed.qcow2'))), 'convert -c: same bytes').toBe(true);
    expectCheckClean(path.join(ours, 'packed.qcow2'), 'qcow2', 'convert -c');
    expect(JSON.parse(qemuImg(['check', '--output=json', path.join(ours, 'packed.qcow2')]).stdout)['compressed-clusters'], 'compressed clusters').toBeGreaterThan(0);
    expectIdentical(path.join(ours, 'packed.qcow2'), path.join(ours, 'flat.qcow2'), 'convert -c reads as the plain convert');

    await create(path.join(ours, 'new.qcow2'), { format: 'qcow2', pool, backingFile: 'flat.qcow2', backingFormat: 'qcow2' });
    expectIdentical(path.join(ours, 'new.qcow2'), path.join(ours, 'flat.qcow2'), 'created overlay reads as its backing file');
    expectCheckClean(path.join(ours, 'new.qcow2'), 'qcow2', 'create');
  });

  it('jobs on two chains run at once in a pool of two (one worker each, none queued), each result correct', async () => {
    const a = fresh('par-a');
    const b = fresh('par-b');
    const ref = fresh('par-ref');
    commitImage(path.join(ref, 'top.qcow2'), { keepTop: true });
    const jobs = [commit(path.join(a, 'top.qcow2'), { pool, keepTop: true, stepBytes: STEP }), commit(path.join(b, 'top.qcow2'), { pool, keepTop: true, stepBytes: STEP })];
    expect(pool.running).toBe(2);
    expect(pool.queued).toBe(0);
    await Promise.all(jobs);
    expect(pool.running).toBe(0);
    for (const d of [a, b]) expectIdentical(path.join(d, 'base.qcow2'), path.join(ref, 'base.qcow2'), d);
  });
});

describe('errors, cancellation, a host stop and a dying worker', () => {
  it('errors arrive as CowErrors with their codes', async () => {
    const d = fresh('errors');
    expect(await rejectionCode(commit(path.join(d, 'missing.qcow2'), { pool }))).toBe('ECOW_NOT_FOUND');
    expect(await rejectionCode(commit(path.join(d, 'base.qcow2'), { pool }))).toBe('ECOW_BAD_ARGUMENT');
    fs.writeFileSync(path.join(d, 'bad.qcow2'), Buffer.concat([Buffer.from('QFI\xfb', 'latin1'), Buffer.alloc(508)]));
    expect(await rejectionCode(check(path.join(d, 'bad.qcow2'), { pool, format: 'qcow2' }))).toBe('ECOW_BAD_VERSION');
    expect(await rejectionCode(create(path.join(d, 'x.qcow2'), { format: 'qcow2', pool, size: 1 << 20, clusterSize: 3000 }))).toBe('ECOW_BAD_ARGUMENT');
    expect(await rejectionCode(commit('', { pool }))).toBe('ECOW_BAD_ARGUMENT');
    const err = await commit(path.join(d, 'missing.qcow2'), { pool }).catch((e: unknown) => e);
    expect((err as Error).message).toContain('missing.qcow2');
  });

  it('an AbortSignal cancels a running commit between steps: ECOW_CANCELLED, images clean, top unchanged; a re-run completes', async () => {
    const d = fresh('cancel');
    const ref = fresh('cancel-ref');
    commitImage(path.join(ref, 'top.qcow2'), { keepTop: true });
    const topBefore = fs.readFileSync(path.join(d, 'top.qcow2'));
    const ac = new AbortController();
    const seen: number[] = [];
    const err = await commit(path.join(d, 'top.qcow2'), {
      pool,
      keepTop: true,
      stepBytes: STEP,
      signal: ac.signal,
      onProgress: (done) => {
        seen.push(done);
        if (seen.length === 3) ac.abort(new Error('test abort'));
      },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CowError);
    expect((err as CowError).code).toBe('ECOW_CANCELLED');
    expect(((err as CowError).cause as Error).message).toBe('test abort');
    expect(seen.length).toBe(3);
    expect(seen[2]).toBeLessThan(16 * MiB);
    for (const f of ['base.qcow2', 'mid.qcow2', 'top.qcow2']) expectCheckClean(path.join(d, f), 'qcow2', `cancelled: ${f}`);
    expect(fs.readFileSync(path.join(d, 'top.qcow2')).equals(topBefore), 'the top is not written').toBe(true);
    await commit(path.join(d, 'top.qcow2'), { pool, keepTop: true });
    expectIdentical(path.join(d, 'base.qcow2'), path.join(ref, 'base.qcow2'), 're-run after the cancel');
  });

  it('without a checkpoint or progress the worker does not ask between steps: an abort reaches it through its cancel word', async () => {
    const d = fresh('cancel-word');
    const ac = new AbortController();
    // Steps of one cluster: the job is some 190 of them, so the abort below lands while it runs
    // (with four times larger steps, a worker scheduled before this thread once finished all of
    // them first, in .ci/run).
    const job = commit(path.join(d, 'top.qcow2'), { pool, keepTop: true, stepBytes: 64 * 1024, signal: ac.signal });
    // The job is already handed to a worker (run() dispatches at once): this abort can only reach it
    // through the cancel word, which the worker reads before each step; without it, the job would
    // run to its end.
    expect(pool.running).toBe(1);
    ac.abort(new Error('abort while running'));
    const err = await job.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CowError);
    expect((err as CowError).code).toBe('ECOW_CANCELLED');
    expect(((err as CowError).cause as Error).message).toBe('abort while running');
    // (A step or two may have run before the word was read: the commit is then unfinished, and
    // every image still checks clean.)
    for (const f of ['base.qcow2', 'mid.qcow2', 'top.qcow2']) expectCheckClean(path.join(d, f), 'qcow2', `cancelled: ${f}`);
  });

  it('a signal aborted before the start: ECOW_CANCELLED and nothing written', async () => {
    const d = fresh('cancel-before');
    const before = fs.readFileSync(path.join(d, 'base.qcow2'));
    const ac = new AbortController();
    ac.abort();
    expect(await rejectionCode(commit(path.join(d, 'top.qcow2'), { pool, signal: ac.signal }))).toBe('ECOW_CANCELLED');
    expect(fs.readFileSync(path.join(d, 'base.qcow2')).equals(before)).toBe(true);
  });

  it('a checkpoint that throws stops the job with its own error and nothing more is written; a progress callback that throws ends it too', async () => {
    const d = fresh('stop');
    let calls = 0;
    const lost = new CowError('ECOW_LOCK_LOST', 'test: lock lost');
    let sizeAtStop = -1;
    const err = await commit(path.join(d, 'top.qcow2'), {
      pool,
      keepTop: true,
      stepBytes: STEP,
      checkpoint: () => {
        if (++calls === 4) {
          sizeAtStop = fs.statSync(path.join(d, 'base.qcow2')).size;
          throw lost;
        }
      },
    }).catch((e: unknown) => e);
    expect(err).toBe(lost);
    // Abandoned: no flush of cached metadata after the stop, so the file did not grow further.
    expect(fs.statSync(path.join(d, 'base.qcow2')).size).toBe(sizeAtStop);
    expectNoCorruption(path.join(d, 'base.qcow2'), 'stopped commit: base as a crash at the stop leaves it');
    const thrown = new Error('progress callback failed');
    const err2 = await commit(path.join(fresh('progress-throws'), 'top.qcow2'), {
      pool,
      keepTop: true,
      stepBytes: STEP,
      onProgress: () => {
        throw thrown;
      },
    }).catch((e: unknown) => e);
    expect(err2).toBe(thrown);
  });

  it('a checkpoint may return a promise: the worker writes nothing until it settles', async () => {
    const d = fresh('async-checkpoint');
    const ref = fresh('async-checkpoint-ref');
    commitImage(path.join(ref, 'top.qcow2'), { keepTop: true });
    let calls = 0;
    let unchangedWhileHeld = false;
    await commit(path.join(d, 'top.qcow2'), {
      pool,
      keepTop: true,
      stepBytes: STEP,
      checkpoint: async () => {
        if (++calls !== 3) return;
        const before = fs.readFileSync(path.join(d, 'base.qcow2'));
        await new Promise((resolve) => setTimeout(resolve, 300));
        unchangedWhileHeld = fs.readFileSync(path.join(d, 'base.qcow2')).equals(before);
      },
    });
    expect(calls).toBeGreaterThan(3);
    expect(unchangedWhileHeld, 'the base did not change while the checkpoint was pending').toBe(true);
    expectIdentical(path.join(d, 'base.qcow2'), path.join(ref, 'base.qcow2'), 'the commit then finished');
  });

  it('a worker killed mid-job: ECOW_WORKER_DIED, never a hang; the images pass qemu-img check; the pool runs the re-run', async () => {
    const d = fresh('kill');
    const ref = fresh('kill-ref');
    commitImage(path.join(ref, 'top.qcow2'), { keepTop: true });
    const own = new EnginePool({ size: 1 });
    try {
      let progressCalls = 0;
      const err = await commit(path.join(d, 'top.qcow2'), {
        pool: own,
        keepTop: true,
        stepBytes: 2 * STEP,
        onProgress: () => {
          // Terminate while the worker copies: the next step is running (or about to).
          if (++progressCalls === 2) setImmediate(() => own.terminate());
        },
      }).catch((e: unknown) => e);
      expect(err, String(err)).toBeInstanceOf(CowError);
      expect((err as CowError).code).toBe('ECOW_WORKER_DIED');
      expect((err as CowError).message).toContain('top.qcow2');
      for (const f of ['base.qcow2', 'mid.qcow2', 'top.qcow2']) expectCheckClean(path.join(d, f), 'qcow2', `killed: ${f}`);
      await commit(path.join(d, 'top.qcow2'), { pool: own, keepTop: true });
      expectIdentical(path.join(d, 'base.qcow2'), path.join(ref, 'base.qcow2'), 're-run after the kill');
    } finally {
      await own.close();
    }
  });

  it('queued jobs wait for a free worker; a queued job whose signal aborts is dropped with ECOW_CANCELLED', async () => {
    const own = new EnginePool({ size: 1 });
    try {
      const d = fresh('queue');
      const first = commit(path.join(d, 'top.qcow2'), { pool: own, keepTop: true, stepBytes: STEP });
      const ac = new AbortController();
      const second = commit(path.join(d, 'top.qcow2'), { pool: own, keepTop: true, signal: ac.signal });
      expect(own.queued).toBe(1);
      ac.abort();
      expect(await rejectionCode(second)).toBe('ECOW_CANCELLED');
      await first;
      expect(own.queued).toBe(0);
    } finally {
      await own.close();
    }
  });
});
