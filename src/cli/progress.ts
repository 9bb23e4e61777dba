import { SingleBar, Presets } from 'cli-progress';
import type { ProgressCallback } from '../image/job.js';

/**
 * A progress bar on stderr for `-p`, drawn only when stderr is a terminal (qemu-img prints its
 * percentages regardless; a bar in a log file helps nobody). Returns the callback and a stop().
 */
export function progressBar(enabled: boolean, label: string): { onProgress?: ProgressCallback; stop(): void } {
  if (!enabled || !process.stderr.isTTY) return { stop() {} };
  const bar = new SingleBar({ format: `${label} [{bar}] {percentage}% | {value}/{total} MiB`, stream: process.stderr, hideCursor: true }, Presets.shades_classic);
  let started = false;
  return {
    onProgress: (done, total) => {
      const mib = (n: number) => Math.round(n / 2 ** 20);
      if (!started) {
        bar.start(mib(total), 0);
        started = true;
      }
      bar.update(mib(done));
    },
    stop: () => {
      if (started) bar.stop();
    },
  };
}
