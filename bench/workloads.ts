// The reference workloads of issue 4, built once with qemu-img/qemu-io into a cache directory and
// copied fresh (sparse-aware) before every timed run, so both contenders start from identical files.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { run } from './common.js';

export interface Workload {
  name: string;
  baseFile: string;
  baseFormat: 'raw' | 'qcow2';
  /** Commands that build the template (run in the template directory). */
  build: (dir: string) => void;
}

/** Deterministic pseudo-random numbers (mulberry32) so every run builds the same workload. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomWrites(count: number, slots: number, size: number, seed: number): string {
  const next = rng(seed);
  const chosen = new Set<number>();
  while (chosen.size < count) chosen.add(Math.floor(next() * slots));
  let i = 0;
  return [...chosen].map((s) => `write -P ${(i++ % 250) + 1} ${s * size} ${size}`).join('\n') + '\n';
}

function overlay(dir: string, base: string, fmt: string): void {
  run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', fmt, 'top.qcow2'], { cwd: dir });
}

export const WORKLOADS: Workload[] = [
  {
    name: '(a) 1 GiB raw base, 4096 random 64 KiB clusters',
    baseFile: 'base.raw',
    baseFormat: 'raw',
    build: (dir) => {
      run('qemu-img', ['create', '-q', '-f', 'raw', 'base.raw', '1G'], { cwd: dir });
      overlay(dir, 'base.raw', 'raw');
      run('qemu-io', ['top.qcow2'], { cwd: dir, input: randomWrites(4096, 16384, 65536, 1) });
    },
  },
  {
    name: '(a) 1 GiB qcow2 base, 4096 random 64 KiB clusters',
    baseFile: 'base.qcow2',
    baseFormat: 'qcow2',
    build: (dir) => {
      run('qemu-img', ['create', '-q', '-f', 'qcow2', 'base.qcow2', '1G'], { cwd: dir });
      overlay(dir, 'base.qcow2', 'qcow2');
      run('qemu-io', ['top.qcow2'], { cwd: dir, input: randomWrites(4096, 16384, 65536, 1) });
    },
  },
  {
    name: '(b) 4 GiB qcow2 base, 8192 random 4 KiB writes',
    baseFile: 'base.qcow2',
    baseFormat: 'qcow2',
    build: (dir) => {
      run('qemu-img', ['create', '-q', '-f', 'qcow2', 'base.qcow2', '4G'], { cwd: dir });
      run('qemu-io', ['-c', 'write -P 0x5a 0 512M', 'base.qcow2'], { cwd: dir });
      overlay(dir, 'base.qcow2', 'qcow2');
      run('qemu-io', ['top.qcow2'], { cwd: dir, input: randomWrites(8192, 1 << 20, 4096, 2) });
    },
  },
  {
    name: '(c) 2 GiB raw base, 1 GiB sequentially written overlay',
    baseFile: 'base.raw',
    baseFormat: 'raw',
    build: (dir) => {
      run('qemu-img', ['create', '-q', '-f', 'raw', 'base.raw', '2G'], { cwd: dir });
      overlay(dir, 'base.raw', 'raw');
      run('qemu-io', ['-c', 'write -P 0x77 0 1G', 'top.qcow2'], { cwd: dir });
    },
  },
];

/** The template directory of a workload, built on first use. */
export function template(root: string, w: Workload, index: number): string {
  const dir = path.join(root, `template-${index}`);
  if (!fs.existsSync(path.join(dir, '.done'))) {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
    w.build(dir);
    fs.writeFileSync(path.join(dir, '.done'), '');
  }
  return dir;
}

/** Fresh copies of a template (holes kept), flushed so their writeback does not land in a timing. */
export function freshCopy(templateDir: string, workDir: string): void {
  fs.rmSync(workDir, { recursive: true, force: true });
  fs.mkdirSync(workDir, { recursive: true });
  for (const f of fs.readdirSync(templateDir)) {
    if (f.startsWith('.')) continue;
    run('cp', ['--sparse=always', path.join(templateDir, f), path.join(workDir, f)], { cwd: workDir });
  }
  run('sync', [], { cwd: workDir });
}
