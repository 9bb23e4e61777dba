// Commit on an encrypted chain (issue 18) side by side with `qemu-img commit --object secret,…
// --image-opts …`: both images LUKS qcow2 (aes-256-xts-plain64, as qemu-img creates them), built
// by qemu-img and qemu-io. Every byte moved is decrypted from the top and encrypted into the base.
// PBKDF2 is set short (encrypt.iter-time=10) on both images, so that a key slot's unlock (2 s by
// default, paid by every process that opens an image) does not hide the data path.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Bench } from 'tinybench';
import { commitImage } from 'cowchain';
import { freshCopy, rng } from './workloads.js';
import { committedBytes, run, taskMedian } from './common.js';

const SECRET = 'bench secret for the encrypted chain';

interface EncryptedWorkload {
  name: string;
  /** qemu-io commands that write the top (through --image-opts, with the key). */
  writes: () => string[];
}

const WORKLOADS: EncryptedWorkload[] = [
  {
    name: '1 GiB LUKS base, 2048 random 64 KiB clusters in a LUKS top',
    writes: () => {
      const next = rng(18);
      const seen = new Set<number>();
      const out: string[] = [];
      while (out.length < 2048) {
        const c = Math.floor(next() * 16384);
        if (seen.has(c)) continue;
        seen.add(c);
        out.push(`write -P ${1 + (c % 250)} ${c * 65536} 64k`);
      }
      return out;
    },
  },
  { name: '1 GiB LUKS base, 256 MiB written sequentially in a LUKS top', writes: () => ['write -P 0x77 0 256M'] },
];

export interface EncryptedCommitRow {
  workload: string;
  mib: number;
  oursMs: number;
  cliMs: number;
  qemuMs: number;
}

/** qemu's way to name the key and the chain (top and its backing file, both keyed by sec0). */
function keyed(keyFile: string, top: string): string[] {
  return ['--object', `secret,id=sec0,file=${keyFile}`, '--image-opts', `driver=qcow2,file.filename=${top},encrypt.key-secret=sec0,backing.encrypt.key-secret=sec0`];
}

/**
 * qemu-img create of a LUKS image. qemu times PBKDF2 with getrusage and, on a busy machine, now
 * and then fails with "Unable to get accurate CPU usage": that failure is retried.
 */
function qemuCreate(dir: string, keyFile: string, args: string[]): void {
  const all = ['create', '-q', '-f', 'qcow2', '--object', `secret,id=sec0,file=${keyFile}`, '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10', ...args];
  for (let attempt = 1; ; attempt++) {
    const r = spawnSync('qemu-img', all, { cwd: dir, encoding: 'utf8' });
    if (r.status === 0) return;
    if (attempt >= 30 || !r.stderr.includes('Unable to get accurate CPU usage')) throw new Error(`qemu-img ${all.join(' ')}: ${r.stderr}`);
  }
}

export async function benchEncryptedCommit(root: string, iterations: number, cli: string): Promise<EncryptedCommitRow[]> {
  const dir = path.join(root, 'encrypted');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const keyFile = path.join(dir, 'key');
  fs.writeFileSync(keyFile, SECRET);
  const secret = Buffer.from(SECRET);
  const rows: EncryptedCommitRow[] = [];
  for (const [i, w] of WORKLOADS.entries()) {
    const tpl = path.join(dir, `template-${i}`);
    fs.mkdirSync(tpl);
    qemuCreate(tpl, keyFile, ['base.qcow2', '1G']);
    qemuCreate(tpl, keyFile, ['-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2']);
    run('qemu-io', ['--object', `secret,id=sec0,file=${keyFile}`, '--image-opts', keyed(keyFile, 'top.qcow2')[3]], { cwd: tpl, input: w.writes().join('\n') + '\n' });
    const mib = committedBytes(path.join(tpl, 'top.qcow2'), secret) / 2 ** 20;
    const work = path.join(dir, `work-${i}`);
    const fresh = { beforeEach: () => freshCopy(tpl, work) };
    const bench = new Bench({ iterations, time: 0, warmupIterations: 1, warmupTime: 0 });
    bench
      .add('cowchain (in-process)', () => commitImage(path.join(work, 'top.qcow2'), { keepTop: true, keySecrets: () => secret }), { ...fresh, async: false })
      .add('cowchain img commit (process)', () => run('node', [cli, 'img', 'commit', '-q', '-d', ...keyed(keyFile, 'top.qcow2')], { cwd: work }), { ...fresh, async: false })
      .add('qemu-img commit (process)', () => run('qemu-img', ['commit', '-q', '-d', ...keyed(keyFile, 'top.qcow2')], { cwd: work }), { ...fresh, async: false });
    await bench.run();
    rows.push({
      workload: w.name,
      mib,
      oursMs: taskMedian(bench.getTask('cowchain (in-process)')),
      cliMs: taskMedian(bench.getTask('cowchain img commit (process)')),
      qemuMs: taskMedian(bench.getTask('qemu-img commit (process)')),
    });
    fs.rmSync(work, { recursive: true, force: true });
    fs.rmSync(tpl, { recursive: true, force: true });
    console.error(`done: encrypted commit, ${w.name}`);
  }
  fs.rmSync(dir, { recursive: true, force: true });
  return rows;
}

export function printEncryptedCommit(rows: EncryptedCommitRow[], iterations: number): void {
  console.log(`\n| commit on an encrypted chain (LUKS, median of ${iterations}) | data | cowchain in-process | cowchain CLI | qemu-img commit | ratio (in-process) | ratio (CLI) |`);
  console.log('|---|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    const mbps = (ms: number) => `${(r.mib / (ms / 1000)).toFixed(0)} MiB/s (${ms.toFixed(0)} ms)`;
    console.log(`| ${r.workload} | ${r.mib.toFixed(0)} MiB | ${mbps(r.oursMs)} | ${mbps(r.cliMs)} | ${mbps(r.qemuMs)} | ${(r.qemuMs / r.oursMs).toFixed(2)}× | ${(r.qemuMs / r.cliMs).toFixed(2)}× |`);
  }
}
