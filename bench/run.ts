// `npm run bench`: cowchain against qemu-img in the same run, on identical copies of the reference
// workloads. Prints medians, MB/s and ratios (a ratio > 1 means cowchain is faster).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Bench, type Task } from 'tinybench';
import { commitImage, createImage, openImage, engineMemoryBytes } from 'cowchain';
import { WORKLOADS, template, freshCopy } from './workloads.js';

const ROOT = process.env.COWCHAIN_BENCH_DIR ?? path.join(os.tmpdir(), 'cowchain-bench');
const ITERATIONS = Number(process.env.COWCHAIN_BENCH_ITERATIONS ?? 5);
const CLI = path.resolve('dist/cli/main.js');

function run(cmd: string, args: string[], cwd: string): void {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
}

function median(task: Task | undefined): number {
  const r = task?.result;
  if (!r || r.state !== 'completed') throw new Error(`task ${task?.name} did not complete: ${JSON.stringify(r)}`);
  return r.latency.p50;
}

/** Guest bytes the top allocates itself: what a commit has to move. */
function committedBytes(dir: string): number {
  const img = openImage(path.join(dir, 'top.qcow2'));
  try {
    return img.map().filter((e) => e.depth === 0 && e.present).reduce((s, e) => s + e.length, 0);
  } finally {
    img.close();
  }
}

interface Row {
  workload: string;
  mib: number;
  cowchainMs: number;
  cliMs: number;
  qemuMs: number;
}

async function benchCommit(): Promise<Row[]> {
  const rows: Row[] = [];
  for (const [i, w] of WORKLOADS.entries()) {
    const tpl = template(ROOT, w, i);
    const work = path.join(ROOT, `work-${i}`);
    const bytes = committedBytes(tpl);
    const bench = new Bench({ iterations: ITERATIONS, time: 0, warmupIterations: 1, warmupTime: 0 });
    // Fresh copies for every run, then one turn of the event loop, as an embedding service has
    // between operations (the file backend's background write-backs complete there).
    const prepare = {
      beforeEach: async () => {
        freshCopy(tpl, work);
        await new Promise((resolve) => setImmediate(resolve));
      },
    };
    bench
      .add('cowchain (in-process)', () => commitImage(path.join(work, 'top.qcow2'), { drop: true }), prepare)
      .add('cowchain img commit (process)', () => run('node', [CLI, 'img', 'commit', '-d', 'top.qcow2'], work), prepare)
      .add('qemu-img commit (process)', () => run('qemu-img', ['commit', '-q', '-d', 'top.qcow2'], work), prepare);
    await bench.run();
    const row = {
      workload: w.name,
      mib: bytes / 2 ** 20,
      cowchainMs: median(bench.getTask('cowchain (in-process)')),
      cliMs: median(bench.getTask('cowchain img commit (process)')),
      qemuMs: median(bench.getTask('qemu-img commit (process)')),
    };
    rows.push(row);
    fs.rmSync(work, { recursive: true, force: true });
    console.error(`done: ${w.name}`);
  }
  return rows;
}

async function benchCreate(): Promise<{ inProcessMs: number; qemuMs: number }> {
  const dir = path.join(ROOT, 'create');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  run('qemu-img', ['create', '-q', '-f', 'raw', 'base.raw', '1G'], dir);
  const bench = new Bench({ iterations: 50, time: 0 });
  bench
    .add('createImage (in-process)', () => createImage(path.join(dir, 'ov1.qcow2'), { backingFile: 'base.raw', backingFormat: 'raw' }))
    .add('qemu-img create (process)', () => run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', 'ov2.qcow2'], dir));
  await bench.run();
  fs.rmSync(dir, { recursive: true, force: true });
  return { inProcessMs: median(bench.getTask('createImage (in-process)')), qemuMs: median(bench.getTask('qemu-img create (process)')) };
}

const fmt = (n: number, d = 0) => n.toFixed(d);

async function main(): Promise<void> {
  if (spawnSync('qemu-img', ['--version']).status !== 0) throw new Error('the benchmark needs qemu-img and qemu-io (apt-get install qemu-utils)');
  fs.mkdirSync(ROOT, { recursive: true });
  const version = spawnSync('qemu-img', ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0];
  console.log(`cowchain commit vs ${version}; median of ${ITERATIONS} runs each, files under ${ROOT}; ${os.cpus().length} CPUs`);
  const rows = await benchCommit();
  console.log('\n| workload | data | cowchain in-process | cowchain CLI | qemu-img commit | ratio (in-process) | ratio (CLI) |');
  console.log('|---|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    const mbps = (ms: number) => `${fmt(r.mib / (ms / 1000))} MiB/s (${fmt(ms)} ms)`;
    console.log(`| ${r.workload} | ${fmt(r.mib)} MiB | ${mbps(r.cowchainMs)} | ${mbps(r.cliMs)} | ${mbps(r.qemuMs)} | ${(r.qemuMs / r.cowchainMs).toFixed(2)}× | ${(r.qemuMs / r.cliMs).toFixed(2)}× |`);
  }
  const c = await benchCreate();
  console.log(`\noverlay create: in-process ${c.inProcessMs.toFixed(2)} ms, qemu-img create ${c.qemuMs.toFixed(2)} ms (${(c.qemuMs / c.inProcessMs).toFixed(1)}×)`);
  console.log(`engine memory (wasm linear memory after all runs): ${(engineMemoryBytes() / 2 ** 20).toFixed(1)} MiB`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
