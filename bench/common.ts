// What every table of the bench needs: run a command to completion, the median of a timed task or
// of samples, and the bytes a commit moves.
import { spawnSync } from 'node:child_process';
import type { Task } from 'tinybench';
import { openImage } from 'cowchain';

/** Run `cmd` to completion (its output captured); a non-zero exit throws with its stderr. */
export function run(cmd: string, args: string[], opts: { cwd?: string; input?: string } = {}): void {
  const r = spawnSync(cmd, args, { cwd: opts.cwd, input: opts.input, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
}

/** A tinybench task's median time (ms); a task that did not complete throws. */
export function taskMedian(task: Task | undefined): number {
  const r = task?.result;
  if (!r || r.state !== 'completed') throw new Error(`task ${task?.name} did not complete: ${JSON.stringify(r)}`);
  return r.latency.p50;
}

/** A tinybench task's samples (ms; the Bench needs `retainSamples: true`). */
export function taskSamples(task: Task | undefined): number[] {
  const r = task?.result;
  if (!r || r.state !== 'completed' || !r.latency.samples) throw new Error(`task ${task?.name} did not complete: ${JSON.stringify(r)}`);
  return [...r.latency.samples];
}

/** The median of samples (the mean of the middle two for an even count). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** Guest bytes the top allocates itself: what a commit has to move (`secret`: an encrypted top's). */
export function committedBytes(top: string, secret?: Uint8Array): number {
  const img = openImage(top, secret ? { keySecrets: () => secret } : {});
  try {
    return img.map().filter((e) => e.depth === 0 && e.present).reduce((s, e) => s + e.length, 0);
  } finally {
    img.close();
  }
}
