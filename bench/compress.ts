// `convert -c` side by side with `qemu-img convert -c` (issue 18): output size and time, deflate
// and zstd, on one source image; every output is checked (qemu-img check, qemu-img compare). The source mixes what a disk holds: compressible runs (text-like
// repeated words), incompressible blocks (random bytes, as in already-compressed files) and zeros.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Bench } from 'tinybench';
import { convertImage, openImage } from 'cowchain';
import { rng } from './workloads.js';
import { run, taskMedian } from './common.js';

export interface CompressRow {
  type: 'zlib' | 'zstd';
  sourceBytes: number;
  oursBytes: number;
  qemuBytes: number;
  oursMs: number;
  cliMs: number;
  qemuMs: number;
}

const SOURCE_MIB = 128;
const WORDS = ['volume', 'snapshot', 'cluster', 'backing', 'qcow2', 'refcount', 'the', 'of', 'a', 'and', 'log', 'INFO', '2026-12-05', 'kernel:', 'eth0', 'nova'];

/** The source: per 64 KiB, 60 % text-like, 25 % random, 15 % zeros (a sparse raw file). */
export function writeSource(file: string): number {
  const next = rng(18);
  const fd = fs.openSync(file, 'w');
  const chunk = Buffer.alloc(64 << 10);
  try {
    for (let i = 0; i < SOURCE_MIB * 16; i++) {
      const kind = next();
      if (kind < 0.15) continue;
      if (kind < 0.4) {
        for (let j = 0; j < chunk.length; j += 4) chunk.writeUInt32LE((next() * 2 ** 32) >>> 0, j);
      } else {
        let s = '';
        while (s.length < chunk.length) s += WORDS[Math.floor(next() * WORDS.length)] + (next() < 0.1 ? '\n' : ' ');
        chunk.write(s.slice(0, chunk.length), 'latin1');
      }
      fs.writeSync(fd, chunk, 0, chunk.length, i * chunk.length);
    }
    fs.ftruncateSync(fd, SOURCE_MIB << 20);
  } finally {
    fs.closeSync(fd);
  }
  return SOURCE_MIB << 20;
}

export async function benchCompress(root: string, iterations: number, cli: string): Promise<CompressRow[]> {
  const dir = path.join(root, 'compress');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const src = path.join(dir, 'source.raw');
  const sourceBytes = writeSource(src);
  const rows: CompressRow[] = [];
  for (const type of ['zlib', 'zstd'] as const) {
    const ours = path.join(dir, `ours-${type}.qcow2`);
    const viaCli = path.join(dir, `cli-${type}.qcow2`);
    const theirs = path.join(dir, `qemu-${type}.qcow2`);
    const clean = (f: string) => ({ beforeEach: () => fs.rmSync(f, { force: true }) });
    const bench = new Bench({ iterations, time: 0, warmupIterations: 1, warmupTime: 0 });
    bench
      .add('cowchain convert -c (in-process)', () => {
        const img = openImage(src, { format: 'raw' });
        try {
          convertImage(img, ours, { format: 'qcow2', compressed: true, create: { compressionType: type } });
        } finally {
          img.close();
        }
      }, clean(ours))
      .add('cowchain img convert -c (process)', () => run('node', [cli, 'img', 'convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', `compression_type=${type}`, src, viaCli]), clean(viaCli))
      .add('qemu-img convert -c (process)', () => run('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', `compression_type=${type}`, src, theirs]), clean(theirs));
    await bench.run();
    // What was timed must be right: the images cowchain wrote (in-process and by the CLI) pass
    // qemu-img check and compare equal to the source, as qemu-img's own does.
    for (const f of [ours, viaCli, theirs]) {
      run('qemu-img', ['check', '-q', f]);
      run('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'qcow2', src, f]);
    }
    rows.push({
      type,
      sourceBytes,
      oursBytes: fs.statSync(ours).size,
      qemuBytes: fs.statSync(theirs).size,
      oursMs: taskMedian(bench.getTask('cowchain convert -c (in-process)')),
      cliMs: taskMedian(bench.getTask('cowchain img convert -c (process)')),
      qemuMs: taskMedian(bench.getTask('qemu-img convert -c (process)')),
    });
    console.error(`done: convert -c ${type}`);
  }
  fs.rmSync(dir, { recursive: true, force: true });
  return rows;
}

export function printCompress(rows: CompressRow[], iterations: number): void {
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  console.log(`\n| convert -c of a ${SOURCE_MIB} MiB source (median of ${iterations}; every output passed qemu-img check and compare) | cowchain size | qemu-img size | size ours / qemu | cowchain in-process | cowchain CLI | qemu-img | ratio (in-process) | ratio (CLI) |`);
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    console.log(
      `| ${r.type} | ${mib(r.oursBytes)} | ${mib(r.qemuBytes)} | ${(r.oursBytes / r.qemuBytes).toFixed(3)} | ${r.oursMs.toFixed(0)} ms | ${r.cliMs.toFixed(0)} ms | ${r.qemuMs.toFixed(0)} ms | ` +
        `${(r.qemuMs / r.oursMs).toFixed(2)}× | ${(r.qemuMs / r.cliMs).toFixed(2)}× |`,
    );
  }
}
