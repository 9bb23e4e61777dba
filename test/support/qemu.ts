// qemu-img / qemu-io as the referee. Interop tests never skip: when the tools are missing the
// tests fail with a message saying how to install them (under CI=true and locally alike).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll } from 'vitest';
import { runProcess } from './child.js';

export interface Run {
  status: number;
  stdout: string;
  stderr: string;
}

function which(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

const HAVE_QEMU = which('qemu-img') && which('qemu-io');

export function requireQemu(): void {
  if (!HAVE_QEMU) {
    throw new Error('qemu-img and qemu-io are required as the test referee: apt-get install -y qemu-utils');
  }
}

function run(cmd: string, args: string[], cwd?: string): Run {
  requireQemu();
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', maxBuffer: 256 << 20 });
  if (r.error) throw r.error;
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Run qemu-img; throws unless it exits with one of `ok` (default 0). */
export function qemuImg(args: string[], opts: { cwd?: string; ok?: number[] } = {}): Run {
  const r = run('qemu-img', args, opts.cwd);
  if (!(opts.ok ?? [0]).includes(r.status)) {
    throw new Error(`qemu-img ${args.join(' ')} exited ${r.status}: ${r.stderr || r.stdout}`);
  }
  return r;
}

/** Run qemu-io commands on an image; throws on a non-zero exit or an error line. */
export function qemuIo(file: string, cmds: string[], format?: string): Run {
  const args = [...(format ? ['-f', format] : []), ...cmds.flatMap((c) => ['-c', c]), file];
  const r = run('qemu-io', args);
  if (r.status !== 0 || /(error|fail|Pattern verification failed)/i.test(r.stdout + r.stderr)) {
    throw new Error(`qemu-io ${args.join(' ')} failed (${r.status}): ${r.stdout}${r.stderr}`);
  }
  return r;
}

export function qemuInfo(file: string, backingChain = false): any {
  return JSON.parse(qemuImg(['info', '--output=json', ...(backingChain ? ['--backing-chain'] : []), file]).stdout);
}

export function qemuMap(file: string): any[] {
  return JSON.parse(qemuImg(['map', '--output=json', file]).stdout);
}

/** qemu-img check as JSON plus its exit code (0 clean, 1 failed, 2 corrupt, 3 leaks). */
export function qemuCheck(file: string): { status: number; result: any } {
  const r = qemuImg(['check', '--output=json', file], { ok: [0, 1, 2, 3] });
  let result: any = null;
  try {
    result = JSON.parse(r.stdout);
  } catch {
    result = { raw: r.stdout + r.stderr };
  }
  return { status: r.status, result };
}

/** Assert-style helper: the image passes qemu-img check with no error and no leak. */
export function expectClean(file: string): void {
  const { status, result } = qemuCheck(file);
  if (status !== 0) throw new Error(`qemu-img check ${file}: exit ${status}: ${JSON.stringify(result)}`);
}

/** The guest view of an image (its whole chain) as raw bytes, by qemu. */
export function qemuRaw(file: string, dir: string): Buffer {
  const out = path.join(dir, `qemu-raw-${Math.random().toString(36).slice(2)}.raw`);
  qemuImg(['convert', '-O', 'raw', file, out]);
  const data = fs.readFileSync(out);
  fs.rmSync(out);
  return data;
}

/**
 * qemu-img create of a LUKS-encrypted qcow2 keyed by `--object secret,id=sec0,file=<keyFile>`
 * (encrypt.iter-time=10 unless `opts` says otherwise; `opts` are more -o options, `extra` more
 * arguments such as -b/-F), run without holding the event loop (it takes seconds on a busy
 * machine). qemu times PBKDF2 by the user CPU time getrusage reports, which can stay at zero over
 * its first short run; it then fails with "Unable to get accurate CPU usage" within milliseconds,
 * at times several runs in a row: that one failure is retried.
 */
export async function qemuCreateLuks(file: string, size: number, keyFile: string, opts = '', extra: string[] = []): Promise<void> {
  requireQemu();
  const o = ['encrypt.format=luks', 'encrypt.key-secret=sec0', ...(/encrypt\.iter-time=/.test(opts) ? [] : ['encrypt.iter-time=10']), ...(opts ? [opts] : [])].join(',');
  const args = ['create', '-q', '-f', 'qcow2', '--object', `secret,id=sec0,file=${keyFile}`, '-o', o, ...extra, file, String(size)];
  for (let attempt = 1; ; attempt++) {
    const r = await runProcess('qemu-img', args);
    if (r.status === 0) return;
    if (attempt >= 30 || !r.stderr.includes('Unable to get accurate CPU usage')) throw new Error(`qemu-img ${args.join(' ')}: exit ${r.status}: ${r.error ?? ''}${r.stderr}`);
  }
}

/**
 * Whether two images (with their chains) show the guest the same bytes, by `qemu-img compare`:
 * one child, nothing written, where converting both to raw and reading them writes and reads
 * the whole virtual size twice. Stricter than compare alone: the virtual sizes must be equal too
 * (as two raw copies' lengths would). A difference fails with qemu's first differing offset.
 */
export function expectSameGuest(a: string, b: string, label: string, formats: { a?: string; b?: string } = {}): void {
  const r = qemuImg(['compare', ...(formats.a ? ['-f', formats.a] : []), ...(formats.b ? ['-F', formats.b] : []), a, b], { ok: [0, 1] });
  const out = (r.stdout + r.stderr).trim();
  if (r.status !== 0 || /size mismatch/i.test(out)) throw new Error(`${label}: qemu-img compare ${a} ${b}: ${out}`);
}

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/**
 * A fresh temporary directory, removed after the test file. `memory`: in memory (tmpfs,
 * /dev/shm) when it has room (1 GiB free), where a flush costs nothing — for files whose tests
 * observe neither durability nor how the file system lays out a file, such as byte-identical
 * headers and check results: there the engine's and qemu-img's fdatasync calls on a disk are I/O
 * wait and journal work that make a file slower, not better tested. (qemu-img map and convert
 * look at the file's holes, which differ between file systems: test/interop/read-matrix's maps
 * and convert's sizes are not qemu's on tmpfs, so those stay on disk, as users' images are.)
 */
export function tmpDir(prefix = 'cowchain-test-', options: { memory?: boolean } = {}): string {
  const d = fs.mkdtempSync(path.join(options.memory ? memoryRoot() : os.tmpdir(), prefix));
  dirs.push(d);
  return d;
}

/** /dev/shm when it is there with 1 GiB free (a container's default is 64 MiB), else os.tmpdir(). */
export function memoryRoot(): string {
  try {
    const s = fs.statfsSync('/dev/shm');
    if (s.bavail * s.bsize >= 2 ** 30) return '/dev/shm';
  } catch {
    // no /dev/shm
  }
  return os.tmpdir();
}
