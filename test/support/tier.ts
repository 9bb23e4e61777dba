/**
 * The two test tiers (test/README.md). `npm test` runs the quick tier: every behaviour, with
 * sweeps sampled and fuzz/soak as short smokes. `npm run test:full` (COWCHAIN_TEST_TIER=full)
 * runs every fault point and the long fuzz and soak.
 *
 * A sampled sweep draws its points from one seed per test process, printed once per process (the
 * run stays quiet) and named, with the point, in every failure:
 * `COWCHAIN_TEST_SEED=<seed> npx vitest run <file>` replays exactly that run.
 */
import { rng } from './images.js';

export const FULL = process.env.COWCHAIN_TEST_TIER === 'full';

/** The seed of this test process's samples: COWCHAIN_TEST_SEED, or a fresh one. */
export const TEST_SEED = Number(process.env.COWCHAIN_TEST_SEED ?? Math.floor(Math.random() * 0x7fffffff));

/**
 * A fuzz's seed: the environment variable `name`, else under CI=true the fixed `ciSeed`, else a
 * fresh one. CI is the landing gate: it replays the same mutants every run, so it fails only when
 * the code changed. Finding new inputs is what `npm run fuzz` and `npm run fuzz:diff` are for,
 * with fresh seeds; each divergence they find becomes a named regression.
 */
export function fuzzSeed(name: string, ciSeed: number): number {
  const given = process.env[name];
  if (given !== undefined && given !== '') return Number(given);
  return process.env.CI === 'true' ? ciSeed : Math.floor(Math.random() * 0x7fffffff);
}

/** `quick` in `npm test`, `full` in `npm run test:full`. */
export function byTier<T>(quick: T, full: T): T {
  return FULL ? full : quick;
}

let seedPrinted = false;

/**
 * The fault points 1..total a sweep visits: all of them in the full tier; in the quick tier the
 * first and last `edge` (where an operation starts and publishes) and `sample` more drawn from
 * TEST_SEED. Sorted. The seed is printed at the first sample of the process.
 *
 * One point at each edge: the first write is the one before which nothing of the operation is on
 * disk but what precedes it (a journal), the last the one that publishes (the header, the info
 * file, the top's emptying); the second and the second to last are interior points like the
 * drawn ones, which the full tier visits all of (and the quick tier draws, with another seed).
 * Each sampled point costs a crash and its recovery: in the crash tests about a second of CPU.
 */
export function faultPoints(total: number, label: string, { edge = 1, sample = 2 }: { edge?: number; sample?: number } = {}): number[] {
  const all = Array.from({ length: total }, (_, i) => i + 1);
  if (FULL || total <= 2 * edge + sample) return all;
  const picked = new Set([...all.slice(0, edge), ...all.slice(total - edge)]);
  // The seed is mixed with the label so that each sweep of a file draws its own points.
  let h = TEST_SEED >>> 0;
  for (const ch of label) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  const middle = all.slice(edge, total - edge);
  const r = rng(h);
  for (let k = 0; k < sample && middle.length > 0; k++) picked.add(middle.splice(Math.floor(r() * middle.length), 1)[0]);
  const points = [...picked].sort((a, b) => a - b);
  if (!seedPrinted) console.log(`sampled fault points: COWCHAIN_TEST_SEED=${TEST_SEED} replays them; npm run test:full runs all`);
  seedPrinted = true;
  return points;
}

/** How a failure at a sampled point names it, with what replays it. */
export function atPoint(n: number, total: number): string {
  return `fault point ${n} of ${total}${FULL ? '' : ` (COWCHAIN_TEST_SEED=${TEST_SEED})`}`;
}

/**
 * Let the test runner's messages through. A test process whose event loop is held for long
 * cannot answer the runner's RPC (vitest: `Timeout calling "onTaskUpdate"`): loops of synchronous
 * work await this between steps.
 */
export function yieldToRunner(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

/** Run `fn` at each point in turn, yielding to the runner between points; failures name the point. */
export async function sweep(points: number[], total: number, fn: (n: number) => unknown): Promise<void> {
  for (const n of points) {
    try {
      await fn(n);
    } catch (e) {
      throw new Error(`${atPoint(n, total)}: ${(e as Error).message}`, { cause: e });
    }
    await yieldToRunner();
  }
}
