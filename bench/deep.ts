// Deep backing chains (the volume layer allows 1000 images, MAX_CHAIN_DEPTH): opening a chain,
// mapping it and reading through it, side by side with qemu-img and qemu-io on the same files.
// Every layer holds one 64 KiB cluster at its own MiB (layer i at i MiB, 1 GiB virtual), so the
// map has two extents per layer and every hole lies in every layer: the case where a walk down
// the chain per extent costs the square of the depth. The tasks run in rounds, each task once per
// round in an order that rotates, the samples pooled (as bench/startup.ts).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Bench } from 'tinybench';
import { createImage, openImage } from 'cowchain';
import { median, run, taskSamples } from './common.js';

const MiB = 2 ** 20;
export const DEEP_DEPTHS = [200, 1000];
/** Layers whose cluster the read task reads, spread over the chain. */
const READS = 100;

export interface DeepRow {
  depth: number;
  op: string;
  /** Median wall ms: in-process (open, the operation, close), the cowchain CLI, qemu's process. */
  ms: number;
  cliMs: number;
  qemuMs: number;
  /** What qemu ran. */
  qemu: string;
}

/** A `depth`-deep chain in `dir`, l0.qcow2 … l<depth-1>.qcow2 (the top), checked by qemu-img. */
function buildChain(dir: string, depth: number): string {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const cluster = new Uint8Array(64 * 1024);
  for (let i = 0; i < depth; i++) {
    const file = path.join(dir, `l${i}.qcow2`);
    // unsafe: the backing chain is not opened for each new layer (that alone is depth² / 2 opens).
    const backing = i === 0 ? {} : { backingFile: `l${i - 1}.qcow2`, backingFormat: 'qcow2' as const, unsafe: true };
    createImage(file, { format: 'qcow2', size: 1024 * MiB, ...backing });
    const img = openImage(file, { writable: true, noBacking: true });
    try {
      img.write(i * MiB, cluster.fill((i % 250) + 1));
    } finally {
      img.close();
    }
  }
  const top = `l${depth - 1}.qcow2`;
  run('qemu-img', ['check', '-q', top], { cwd: dir });
  return top;
}

export async function benchDeep(root: string, iterations: number, cli: string): Promise<DeepRow[]> {
  const rows: DeepRow[] = [];
  for (const depth of DEEP_DEPTHS) {
    const dir = path.join(root, `deep-${depth}`);
    const top = buildChain(dir, depth);
    const file = path.join(dir, top);
    // 100 layers' clusters, spread over the chain: qemu-io took 124 s for all 1000 (load 12).
    const layers = Array.from({ length: READS }, (_, k) => Math.floor((k * depth) / READS));
    const reads = layers.map((i) => `read -P ${(i % 250) + 1} ${i * MiB} 4k`);
    const ops: { op: string; ours: () => void; cli: string[]; qemu: [string, string[], string?] }[] = [
      {
        op: 'open, every header, close (info --backing-chain)',
        ours: () => {
          const img = openImage(file);
          try {
            for (const l of img.chain()) l.headerInfo();
          } finally {
            img.close();
          }
        },
        cli: ['img', 'info', '--backing-chain', '--output', 'json', top],
        qemu: ['qemu-img', ['info', '--backing-chain', '--output', 'json', top]],
      },
      {
        op: 'map (map --output json)',
        ours: () => {
          const img = openImage(file);
          try {
            const m = img.map();
            if (m.length !== 2 * depth) throw new Error(`map of ${file}: ${m.length} extents, not ${2 * depth}`);
          } finally {
            img.close();
          }
        },
        cli: ['img', 'map', '--output', 'json', top],
        qemu: ['qemu-img', ['map', '--output', 'json', top]],
      },
      {
        op: `read 4 KiB of ${READS} layers' clusters (qemu-io read)`,
        ours: () => {
          const img = openImage(file);
          try {
            for (const i of layers) {
              if (img.read(i * MiB, 4096)[0] !== (i % 250) + 1) throw new Error(`read of layer ${i}: wrong data`);
            }
          } finally {
            img.close();
          }
        },
        cli: ['io', '-r', '-q', ...reads.flatMap((r) => ['-c', r]), top],
        qemu: ['qemu-io', ['-r', top], reads.join('\n') + '\n'],
      },
    ];
    for (const o of ops) {
      const contenders: [string, () => void][] = [
        ['in-process', o.ours],
        ['cli', () => run('node', [cli, ...o.cli], { cwd: dir })],
        ['qemu', () => run(o.qemu[0], o.qemu[1], { cwd: dir, input: o.qemu[2] })],
      ];
      const pooled = new Map<string, number[]>();
      for (let round = 0; round < iterations; round++) {
        const bench = new Bench({ iterations: 1, time: 0, warmupIterations: round === 0 ? 1 : 0, warmupTime: 0, retainSamples: true });
        for (let k = 0; k < contenders.length; k++) {
          bench.add(...contenders[(k + round) % contenders.length], { async: false });
        }
        await bench.run();
        for (const task of bench.tasks) pooled.set(task.name, [...(pooled.get(task.name) ?? []), ...taskSamples(task)]);
      }
      const ms = (name: string) => median(pooled.get(name)!);
      rows.push({ depth, op: o.op, ms: ms('in-process'), cliMs: ms('cli'), qemuMs: ms('qemu'), qemu: `${o.qemu[0]} ${o.qemu[1][0]}` });
      console.error(`done: deep chain ${depth}, ${o.op}`);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

export function printDeep(rows: DeepRow[], iterations: number): void {
  console.log(`\n| deep chain (one 64 KiB cluster per layer, median of ${iterations}) | depth | cowchain in-process | cowchain CLI | qemu (process) | ratio (in-process) | ratio (CLI) |`);
  console.log('|---|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    console.log(`| ${r.op} | ${r.depth} | ${r.ms.toFixed(1)} ms | ${r.cliMs.toFixed(0)} ms | ${r.qemuMs.toFixed(0)} ms (${r.qemu}) | ${(r.qemuMs / r.ms).toFixed(1)}× | ${(r.qemuMs / r.cliMs).toFixed(1)}× |`);
  }
}
