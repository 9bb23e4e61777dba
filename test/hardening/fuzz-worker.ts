/**
 * Worker thread of test/hardening/fuzz.test.ts (bundled by the test, run by plain node): runs
 * `numRuns` cases of the structured image fuzz from `seed` and posts the outcome. Progress goes
 * through a shared counter so that the parent's watchdog can tell a hang (no case finishing for
 * a long time) from slow progress, and terminate the thread.
 */
import { parentPort, workerData } from 'node:worker_threads';
import fc from 'fast-check';
import { engineMemoryBytes } from '../../src/index.js';
import { caseArb, describeCase, runCase, type BaseImage } from '../support/qcow2-fuzz.js';

interface Input {
  bases: BaseImage[];
  seed: number;
  numRuns: number;
  /** Stop (successfully) after this long even if numRuns are not done; 0: no limit. */
  timeLimitMs: number;
  /** Int32Array view: [0] cases started, [1] cases finished. */
  progress: SharedArrayBuffer;
}

const { bases, seed, numRuns, timeLimitMs, progress } = workerData as Input;
const counter = new Int32Array(progress);
const tally: Record<string, number> = {};
let slowest = 0;
let slowestCase = '';
/** Cases after which the engine's memory had grown (it never shrinks): [case index, MiB, case]. */
const growth: [number, number, string][] = [];
let memory = engineMemoryBytes();
let index = 0;
const result = fc.check(
  fc.property(caseArb(bases.length), (c) => {
    Atomics.add(counter, 0, 1);
    const t0 = performance.now();
    const s = runCase(bases, c);
    const ms = performance.now() - t0;
    if (ms > slowest) {
      slowest = ms;
      slowestCase = describeCase(bases, c);
    }
    const key = s.open !== 'opened' ? `open refused: ${s.open}` : `opened, ${s.cleanBefore ? 'clean' : 'corrupt'}, op: ${s.op}`;
    tally[key] = (tally[key] ?? 0) + 1;
    const m = engineMemoryBytes();
    if (m > memory) {
      memory = m;
      growth.push([index, Math.round(m / 2 ** 20), describeCase(bases, c).slice(0, 300)]);
    }
    index++;
    Atomics.add(counter, 1, 1);
  }),
  { seed, numRuns, ...(timeLimitMs > 0 ? { interruptAfterTimeLimit: timeLimitMs, markInterruptAsFailure: false } : {}) },
);
parentPort!.postMessage({
  failed: result.failed,
  numRuns: result.numRuns,
  interrupted: result.interrupted,
  seed: result.seed,
  path: result.counterexamplePath,
  counterexample: result.counterexample ? describeCase(bases, result.counterexample[0]) : null,
  error: result.errorInstance instanceof Error ? (result.errorInstance.stack ?? result.errorInstance.message) : result.errorInstance ? String(result.errorInstance) : null,
  tally,
  slowest,
  slowestCase,
  growth,
});
