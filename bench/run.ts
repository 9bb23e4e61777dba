// `npm run bench`: cowchain against qemu-img in the same run, on identical copies of the reference
// workloads. Prints medians, MB/s and ratios (a ratio > 1 means cowchain is faster).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Bench } from 'tinybench';
import { EnginePool, commit, commitImage, createImage, engineMemoryBytes } from 'cowchain';
import { WORKLOADS, template, freshCopy } from './workloads.js';
import { benchDevice, benchLag, benchParallel, benchParallelCompress, benchParallelQemu } from './workers.js';
import { benchCompress, printCompress } from './compress.js';
import { benchStartup } from './startup.js';
import { benchEncryptedCommit, printEncryptedCommit } from './encrypted-commit.js';
import { benchDeep, printDeep } from './deep.js';
import { committedBytes, median, run, taskMedian, taskSamples } from './common.js';

const ROOT = process.env.COWCHAIN_BENCH_DIR ?? path.join(os.tmpdir(), 'cowchain-bench');
const ITERATIONS = Number(process.env.COWCHAIN_BENCH_ITERATIONS ?? 5);
const CLI = path.resolve('dist/cli/main.js');
/** A tmpfs where the parallel commits also run, to show the engine's parallelism without a device. */
const SHM = process.env.COWCHAIN_BENCH_TMPFS ?? '/dev/shm';

interface Row {
  workload: string;
  mib: number;
  cowchainMs: number;
  workerMs: number;
  cliMs: number;
  qemuMs: number;
}

async function benchCommit(): Promise<Row[]> {
  const rows: Row[] = [];
  // One worker, started before the timings (a service keeps its pool).
  const pool = new EnginePool({ size: 1 });
  const warm = path.join(ROOT, 'warm');
  freshCopy(template(ROOT, WORKLOADS[0], 0), warm);
  await commit(path.join(warm, 'top.qcow2'), { pool, keepTop: true });
  fs.rmSync(warm, { recursive: true, force: true });
  for (const [i, w] of WORKLOADS.entries()) {
    const tpl = template(ROOT, w, i);
    const work = path.join(ROOT, `work-${i}`);
    const bytes = committedBytes(path.join(tpl, 'top.qcow2'));
    // Fresh copies for every run, then one turn of the event loop, as an embedding service has
    // between operations.
    // `async` is always given: without it tinybench calls the function once when it is added, to
    // see whether it returns a promise, and nothing awaits that call: it started a worker commit
    // of the first copy, which then held the images' locks while the next task ran
    // (ECOW_IMAGE_LOCKED: the lock doing its job on a bench that raced itself).
    const sync = {
      async: false,
      beforeEach: async () => {
        freshCopy(tpl, work);
        await new Promise((resolve) => setImmediate(resolve));
      },
    };
    const async = { ...sync, async: true };
    const contenders: [string, () => unknown, typeof sync][] = [
      ['cowchain (in-process)', () => commitImage(path.join(work, 'top.qcow2'), { keepTop: true }), sync],
      ['cowchain (worker)', () => commit(path.join(work, 'top.qcow2'), { pool, keepTop: true }), async],
      ['cowchain img commit (process)', () => run('node', [CLI, 'img', 'commit', '-d', 'top.qcow2'], { cwd: work }), sync],
      ['qemu-img commit (process)', () => run('qemu-img', ['commit', '-q', '-d', 'top.qcow2'], { cwd: work }), sync],
    ];
    // Rounds, each contender once per round in an order that rotates, the samples pooled: a slow
    // stretch of the machine (the shared disk's bursts, the kernel reclaiming memory: single runs
    // of (c) took 2-3x their median even on tmpfs, in the kernel) then falls on all four alike,
    // not on whichever one tinybench was running all of its iterations of.
    const pooled = new Map<string, number[]>();
    for (let round = 0; round < ITERATIONS; round++) {
      const bench = new Bench({ iterations: 1, time: 0, warmupIterations: round === 0 ? 1 : 0, warmupTime: 0, retainSamples: true });
      for (let k = 0; k < contenders.length; k++) bench.add(...contenders[(k + round) % contenders.length]);
      await bench.run();
      for (const task of bench.tasks) pooled.set(task.name, [...(pooled.get(task.name) ?? []), ...taskSamples(task)]);
    }
    const ms = (name: string) => median(pooled.get(name)!);
    const row = {
      workload: w.name,
      mib: bytes / 2 ** 20,
      cowchainMs: ms('cowchain (in-process)'),
      workerMs: ms('cowchain (worker)'),
      cliMs: ms('cowchain img commit (process)'),
      qemuMs: ms('qemu-img commit (process)'),
    };
    rows.push(row);
    fs.rmSync(work, { recursive: true, force: true });
    console.error(`done: ${w.name}`);
  }
  await pool.close();
  return rows;
}

async function benchCreate(): Promise<{ inProcessMs: number; qemuMs: number }> {
  const dir = path.join(ROOT, 'create');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  run('qemu-img', ['create', '-q', '-f', 'raw', 'base.raw', '1G'], { cwd: dir });
  const bench = new Bench({ iterations: 50, time: 0 });
  bench
    .add('createImage (in-process)', () => createImage(path.join(dir, 'ov1.qcow2'), { format: 'qcow2', backingFile: 'base.raw', backingFormat: 'raw' }), { async: false })
    .add('qemu-img create (process)', () => run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', 'ov2.qcow2'], { cwd: dir }), { async: false });
  await bench.run();
  fs.rmSync(dir, { recursive: true, force: true });
  return { inProcessMs: taskMedian(bench.getTask('createImage (in-process)')), qemuMs: taskMedian(bench.getTask('qemu-img create (process)')) };
}

const fmt = (n: number, d = 0) => n.toFixed(d);

async function main(): Promise<void> {
  if (spawnSync('qemu-img', ['--version']).status !== 0) throw new Error('the benchmark needs qemu-img and qemu-io (apt-get install qemu-utils)');
  fs.mkdirSync(ROOT, { recursive: true });
  const version = spawnSync('qemu-img', ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0];
  console.log(`cowchain commit vs ${version}; median of ${ITERATIONS} runs each, files under ${ROOT}; ${os.cpus().length} CPUs`);
  // COWCHAIN_BENCH_PART=workers: only the worker tables (parallel commits, event-loop lag);
  // =compress: only convert -c against qemu-img convert -c; =encrypted: only the commit on an
  // encrypted chain against qemu-img commit with the secret; =startup: only the start-up table;
  // =commit: only the single-commit table (in-process, worker, CLI, qemu-img); =deep: only the
  // deep-chain table (open, map, read through 200- and 1000-deep chains against qemu-img/qemu-io).
  const part = process.env.COWCHAIN_BENCH_PART ?? 'all';
  if (part === 'deep') {
    printDeep(await benchDeep(ROOT, ITERATIONS, CLI), ITERATIONS);
    return;
  }
  if (part === 'compress') {
    printCompress(await benchCompress(ROOT, ITERATIONS, CLI), ITERATIONS);
    return;
  }
  if (part === 'encrypted') {
    printEncryptedCommit(await benchEncryptedCommit(ROOT, ITERATIONS, CLI), ITERATIONS);
    return;
  }
  if (part === 'all' || part === 'startup') {
    const s = await benchStartup(ROOT, CLI);
    // Node reads NODE_EXTRA_CA_CERTS's certificates at every start, before any code runs: some
    // 30 ms more for every process, node -e 0 included, which shrinks every ratio below.
    if (process.env.NODE_EXTRA_CA_CERTS) console.log('\nNODE_EXTRA_CA_CERTS is set: every Node start (node -e 0 too) reads those certificates first; `env -u NODE_EXTRA_CA_CERTS` measures without');
    console.log(`\n| command (whole process, median) | cowchain | ratio to node -e 0 (${fmt(s.nodeMs, 1)} ms) | target | qemu-img |`);
    console.log('|---|---:|---:|---:|---:|');
    for (const r of s.rows) {
      console.log(`| ${r.command} | ${fmt(r.ms, 1)} ms | ${r.ratio.toFixed(2)}× | ≤ ${r.target}× | ${r.qemuMs === undefined ? '' : `${fmt(r.qemuMs, 1)} ms`} |`);
    }
    if (part === 'startup') return;
  }
  const rows = part === 'workers' ? [] : await benchCommit();
  if (rows.length) console.log('\n| workload | data | cowchain in-process | cowchain worker | cowchain CLI | qemu-img commit | ratio (in-process) | ratio (worker) | worker / in-process | ratio (CLI) |');
  if (rows.length) console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    const mbps = (ms: number) => `${fmt(r.mib / (ms / 1000))} MiB/s (${fmt(ms)} ms)`;
    console.log(
      `| ${r.workload} | ${fmt(r.mib)} MiB | ${mbps(r.cowchainMs)} | ${mbps(r.workerMs)} | ${mbps(r.cliMs)} | ${mbps(r.qemuMs)} | ` +
        `${(r.qemuMs / r.cowchainMs).toFixed(2)}× | ${(r.qemuMs / r.workerMs).toFixed(2)}× | ${(r.workerMs / r.cowchainMs).toFixed(2)} | ${(r.qemuMs / r.cliMs).toFixed(2)}× |`,
    );
  }

  if (part === 'commit') return;

  // Two commits at once overlap only as far as the file system lets two flushing writers overlap:
  // the same pair runs on the bench directory, on a tmpfs (the engine's own parallelism), and
  // qemu-img's ratio for the same pair and the device's two-writer ratio are printed beside them.
  const places: { name: string; dir: string }[] = [{ name: ROOT, dir: ROOT }];
  if (fs.existsSync(SHM)) places.push({ name: `${SHM} (tmpfs)`, dir: path.join(SHM, 'cowchain-bench-par') });
  const parallel = [];
  for (const p of places) {
    fs.mkdirSync(p.dir, { recursive: true });
    const r = await benchParallel(template(ROOT, WORKLOADS[0], 0), p.dir, ITERATIONS);
    const q = await benchParallelQemu(template(ROOT, WORKLOADS[0], 0), p.dir, ITERATIONS);
    const device = await benchDevice(p.dir, 256, Math.min(ITERATIONS, 3));
    if (p.dir !== ROOT) fs.rmSync(p.dir, { recursive: true, force: true });
    parallel.push({
      ...p,
      seq: median(r.sequentialMs),
      both: median(r.parallelMs),
      qemu: median(q.parallelMs) / median(q.sequentialMs),
      device: median(device.parallelMs) / median(device.sequentialMs),
    });
  }
  console.log(`\n| two commits of ${WORKLOADS[0].name} on two volumes (median of ${ITERATIONS}) | ${parallel.map((p) => p.name).join(' | ')} | target |`);
  console.log(`|---|${parallel.map(() => '---:|').join('')}---:|`);
  console.log(`| one after the other | ${parallel.map((p) => `${fmt(p.seq)} ms`).join(' | ')} | |`);
  console.log(`| both at once (pool of 2) | ${parallel.map((p) => `${fmt(p.both)} ms`).join(' | ')} | |`);
  console.log(`| at once / one after the other | ${parallel.map((p) => (p.both / p.seq).toFixed(2)).join(' | ')} | ≤ 0.60 |`);
  console.log(`| qemu-img commit, the same pair: at once / one after the other | ${parallel.map((p) => p.qemu.toFixed(2)).join(' | ')} | |`);
  console.log(`| the file system alone: two 256 MiB writes + fdatasync (dd), at once / one after the other | ${parallel.map((p) => p.device.toFixed(2)).join(' | ')} | |`);

  const pc = await benchParallelCompress(ROOT, ITERATIONS);
  console.log(`\n| two convert -c (deflate) of a 128 MiB source into two images (median of ${ITERATIONS}): CPU-bound | cowchain (pool of 2) | qemu-img convert -c | target |`);
  console.log('|---|---:|---:|---:|');
  console.log(`| one after the other | ${fmt(median(pc.sequentialMs))} ms | ${fmt(median(pc.qemuSequentialMs))} ms | |`);
  console.log(`| both at once | ${fmt(median(pc.parallelMs))} ms | ${fmt(median(pc.qemuParallelMs))} ms | |`);
  console.log(`| at once / one after the other | ${(median(pc.parallelMs) / median(pc.sequentialMs)).toFixed(2)} | ${(median(pc.qemuParallelMs) / median(pc.qemuSequentialMs)).toFixed(2)} | ≤ 0.60 |`);

  const lag = await benchLag(ROOT, Math.max(3, Math.min(ITERATIONS, 5)));
  const worst = (k: 'maxLagMs' | 'maxTimerLateMs' | 'deleteMs') => Math.max(...lag.worker.map((r) => r[k]));
  console.log(`\n| event loop while the driver deletes a snapshot holding 1 GiB | engine in a worker (worst of ${lag.worker.length}) | engine in-process | no job (as long) | target |`);
  console.log('|---|---:|---:|---:|---:|');
  console.log(`| max event-loop delay (monitorEventLoopDelay) | ${fmt(worst('maxLagMs'), 1)} ms | ${fmt(lag.inline.maxLagMs, 1)} ms | ${fmt(lag.idle.maxLagMs, 1)} ms | ≤ 20 ms |`);
  console.log(`| max lateness of a 5 ms interval timer | ${fmt(worst('maxTimerLateMs'), 1)} ms | ${fmt(lag.inline.maxTimerLateMs, 1)} ms | ${fmt(lag.idle.maxTimerLateMs, 1)} ms | |`);
  console.log(`| delete duration | ${fmt(worst('deleteMs'))} ms | ${fmt(lag.inline.deleteMs)} ms | | |`);
  if (part === 'workers') return;
  printCompress(await benchCompress(ROOT, ITERATIONS, CLI), ITERATIONS);
  printEncryptedCommit(await benchEncryptedCommit(ROOT, ITERATIONS, CLI), ITERATIONS);
  printDeep(await benchDeep(ROOT, ITERATIONS, CLI), ITERATIONS);
  const c = await benchCreate();
  console.log(`\noverlay create: in-process ${c.inProcessMs.toFixed(2)} ms, qemu-img create ${c.qemuMs.toFixed(2)} ms (${(c.qemuMs / c.inProcessMs).toFixed(1)}×)`);
  console.log(`engine memory (wasm linear memory after all runs): ${(engineMemoryBytes() / 2 ** 20).toFixed(1)} MiB`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
