// Engine jobs in worker threads (issue 13): event-loop lag while the driver deletes a snapshot
// holding 1 GiB, and two commits on two volumes at once against the same two one after the other.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { EnginePool, VolumeDriver, commit, convert } from 'cowchain';
import { writeSource } from './compress.js';
import { freshCopy } from './workloads.js';
import { run } from './common.js';

const VOL = '12341234-1234-4234-8234-123412341234';
const SNAP_A = 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa';
const SNAP_B = 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb';
const GiB = 2 ** 30;

/** A raw 2 GiB volume whose snapshot A holds 1 GiB of its own (written by qemu-io), B above it. */
async function lagTemplate(root: string): Promise<string> {
  const dir = path.join(root, 'lag-template');
  if (fs.existsSync(path.join(dir, '.done'))) return dir;
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const driver = new VolumeDriver({ dir });
  await driver.createVolume(VOL, 2 * GiB, { format: 'raw' });
  const a = await driver.createSnapshot(VOL, SNAP_A, { status: 'available' });
  run('qemu-io', ['-c', `write -P 0x5a 0 ${GiB}`, a.file], { cwd: dir });
  await driver.createSnapshot(VOL, SNAP_B, { status: 'available' });
  fs.writeFileSync(path.join(dir, '.done'), '');
  return dir;
}

export interface LagResult {
  /** Largest event-loop delay seen (monitorEventLoopDelay, 1 ms resolution), ms. */
  maxLagMs: number;
  /** Largest gap between two ticks of a 5 ms interval timer, beyond its 5 ms, ms. */
  maxTimerLateMs: number;
  deleteMs: number;
}

/** Watches the event loop (a delay histogram and a 5 ms timer's lateness) until stop() is called. */
function watchEventLoop(): { stop(): { maxLagMs: number; maxTimerLateMs: number } } {
  const histogram = monitorEventLoopDelay({ resolution: 1 });
  let last = performance.now();
  let late = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    late = Math.max(late, now - last - 5);
    last = now;
  }, 5);
  histogram.enable();
  return {
    stop() {
      histogram.disable();
      clearInterval(timer);
      return { maxLagMs: histogram.max / 1e6, maxTimerLateMs: late };
    },
  };
}

/** Delete snapshot A (commit of 1 GiB) through the driver, measuring the host's event loop. */
async function measureDelete(template: string, work: string, engine: 'worker' | 'inline', pool: EnginePool): Promise<LagResult> {
  freshCopy(template, work);
  const driver = new VolumeDriver({ dir: work, jobs: engine === 'worker' ? pool : undefined });
  const watch = watchEventLoop();
  const t0 = performance.now();
  const r = await driver.deleteSnapshot(VOL, SNAP_A, { status: 'available' });
  const deleteMs = performance.now() - t0;
  const lag = watch.stop();
  if (r.outcome !== 'deleted') throw new Error(`delete: ${r.outcome}`);
  return { ...lag, deleteMs };
}

/** The same measurement over `ms` with nothing running: what the machine itself adds. */
async function measureIdle(ms: number): Promise<LagResult> {
  const watch = watchEventLoop();
  await new Promise((resolve) => setTimeout(resolve, ms));
  return { ...watch.stop(), deleteMs: ms };
}

export async function benchLag(root: string, runs: number): Promise<{ worker: LagResult[]; inline: LagResult; idle: LagResult }> {
  const template = await lagTemplate(root);
  const work = path.join(root, 'lag-work');
  const pool = new EnginePool({ size: 1 });
  try {
    const worker: LagResult[] = [];
    await measureDelete(template, work, 'worker', pool); // warm-up: the worker thread starts
    for (let i = 0; i < runs; i++) worker.push(await measureDelete(template, work, 'worker', pool));
    const inline = await measureDelete(template, work, 'inline', pool);
    const idle = await measureIdle(Math.max(...worker.map((r) => r.deleteMs)));
    return { worker, inline, idle };
  } finally {
    await pool.close();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** Two commits of one workload on two copies: one after the other, then both at once (pool of 2). */
export async function benchParallel(template: string, root: string, runs: number): Promise<{ sequentialMs: number[]; parallelMs: number[] }> {
  const pool = new EnginePool({ size: 2 });
  const dirs = [path.join(root, 'par-1'), path.join(root, 'par-2')];
  const sequentialMs: number[] = [];
  const parallelMs: number[] = [];
  const fresh = async () => {
    for (const d of dirs) freshCopy(template, d);
    await new Promise((resolve) => setImmediate(resolve));
  };
  try {
    // Warm-up: both worker threads started.
    await fresh();
    await Promise.all(dirs.map((d) => commit(path.join(d, 'top.qcow2'), { pool, keepTop: true })));
    for (let i = 0; i < runs; i++) {
      await fresh();
      let t0 = performance.now();
      for (const d of dirs) await commit(path.join(d, 'top.qcow2'), { pool, keepTop: true });
      sequentialMs.push(performance.now() - t0);
      await fresh();
      t0 = performance.now();
      await Promise.all(dirs.map((d) => commit(path.join(d, 'top.qcow2'), { pool, keepTop: true })));
      parallelMs.push(performance.now() - t0);
    }
    return { sequentialMs, parallelMs };
  } finally {
    await pool.close();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  }
}

/** Run a command as a child process without holding the event loop. */
function spawnAsync(cmd: string, args: string[], cwd: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${stderr}`))));
  });
}

/**
 * The same pair with `qemu-img commit` as two processes: what qemu gets from two volumes at once
 * on the same file system, the reference for the engine's figure.
 */
export async function benchParallelQemu(template: string, root: string, runs: number): Promise<{ sequentialMs: number[]; parallelMs: number[] }> {
  const dirs = [path.join(root, 'qpar-1'), path.join(root, 'qpar-2')];
  const qemuCommit = (d: string) => spawnAsync('qemu-img', ['commit', '-q', '-d', 'top.qcow2'], d);
  const sequentialMs: number[] = [];
  const parallelMs: number[] = [];
  try {
    for (let i = 0; i < runs; i++) {
      for (const d of dirs) freshCopy(template, d);
      let t0 = performance.now();
      for (const d of dirs) await qemuCommit(d);
      sequentialMs.push(performance.now() - t0);
      for (const d of dirs) freshCopy(template, d);
      t0 = performance.now();
      await Promise.all(dirs.map(qemuCommit));
      parallelMs.push(performance.now() - t0);
    }
    return { sequentialMs, parallelMs };
  } finally {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  }
}

/**
 * A pair whose work is the CPU's, not the file system's: two `convert -c` (deflate) of the
 * convert bench's source into two new images, one after the other, then both at once (pool of
 * 2), and the same pair as two `qemu-img convert -c` processes. Shows what two workers give when
 * the device is not the bound.
 */
export async function benchParallelCompress(root: string, runs: number): Promise<{ sequentialMs: number[]; parallelMs: number[]; qemuSequentialMs: number[]; qemuParallelMs: number[] }> {
  const dir = path.join(root, 'par-compress');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const src = path.join(dir, 'source.raw');
  writeSource(src);
  const outs = [path.join(dir, 'out-1.qcow2'), path.join(dir, 'out-2.qcow2')];
  const clean = () => outs.forEach((f) => fs.rmSync(f, { force: true }));
  const pool = new EnginePool({ size: 2 });
  const ours = (dst: string) => convert(src, dst, { pool, srcFormat: 'raw', format: 'qcow2', compressed: true });
  const qemu = (dst: string) => spawnAsync('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', src, dst], dir);
  const r = { sequentialMs: [] as number[], parallelMs: [] as number[], qemuSequentialMs: [] as number[], qemuParallelMs: [] as number[] };
  const time = async (into: number[], body: () => Promise<unknown>) => {
    clean();
    const t0 = performance.now();
    await body();
    into.push(performance.now() - t0);
  };
  try {
    await Promise.all(outs.map(ours)); // warm-up: both worker threads started
    for (let i = 0; i < runs; i++) {
      await time(r.sequentialMs, async () => {
        for (const o of outs) await ours(o);
      });
      await time(r.parallelMs, () => Promise.all(outs.map(ours)));
      await time(r.qemuSequentialMs, async () => {
        for (const o of outs) await qemu(o);
      });
      await time(r.qemuParallelMs, () => Promise.all(outs.map(qemu)));
    }
    return r;
  } finally {
    await pool.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * What the device itself allows: two writers of `mib` MiB each (dd, then fdatasync) one after the
 * other, then both at once. A commit ends with a flush, so when two writers at once take as long
 * as one after the other, two commits cannot overlap on that file system either, however many
 * cores run the engine.
 */
export async function benchDevice(root: string, mib: number, runs: number): Promise<{ sequentialMs: number[]; parallelMs: number[] }> {
  const files = [path.join(root, 'device-1'), path.join(root, 'device-2')];
  const write = (file: string) => spawnAsync('dd', ['if=/dev/zero', `of=${file}`, 'bs=1M', `count=${mib}`, 'conv=fdatasync'], root);
  const sequentialMs: number[] = [];
  const parallelMs: number[] = [];
  const clean = () => {
    for (const f of files) fs.rmSync(f, { force: true });
  };
  try {
    for (let i = 0; i < runs; i++) {
      clean();
      let t0 = performance.now();
      for (const f of files) await write(f);
      sequentialMs.push(performance.now() - t0);
      clean();
      t0 = performance.now();
      await Promise.all(files.map(write));
      parallelMs.push(performance.now() - t0);
    }
    return { sequentialMs, parallelMs };
  } finally {
    clean();
  }
}
