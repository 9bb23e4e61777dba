import type { ProgressCallback } from '../image/job.js';
import { writeStdout } from './write.js';

/** qemu's min_skip: a new line once the job moved by at least 1 %. */
const MIN_STEP_PERCENT = 1;

/**
 * `-p` as qemu-img prints it: `    (x.xx/100%)` and a carriage return, the first at 0 %, then at
 * every step of 1 % or more, `(100.00/100%)` and a newline at the end; on a terminal or not (a
 * log shows the lines). The img commands print it on stdout as qemu-img does; the volume commands
 * on stderr, since their stdout is the result. `stop(true)` after success, `stop(false)` after a
 * failure (a newline only, so the error starts a line of its own).
 */
export function progressPrinter(enabled: boolean, write: (text: string) => void = writeStdout): { onProgress?: ProgressCallback; stop(ok: boolean): void } {
  if (!enabled) return { stop() {} };
  let last = -Infinity;
  const print = (percent: number) => {
    last = percent;
    write(`    (${percent.toFixed(2)}/100%)\r`);
  };
  print(0);
  return {
    onProgress: (done, total) => {
      const percent = total > 0 ? Math.min(100, (done / total) * 100) : 100;
      if (percent - last >= MIN_STEP_PERCENT && percent < 100) print(percent);
    },
    stop: (ok) => {
      if (ok) print(100);
      write('\n');
    },
  };
}

/** Run `fn` with a qemu-img `-p` printer on stdout (when `enabled`), ended as `fn` ends. */
export function withProgress<T>(enabled: boolean, fn: (onProgress?: ProgressCallback) => T): T {
  const progress = progressPrinter(enabled);
  let ok = false;
  try {
    const result = fn(progress.onProgress);
    ok = true;
    return result;
  } finally {
    progress.stop(ok);
  }
}
