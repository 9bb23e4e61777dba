/**
 * vitest setup file: reports where a test file held its event loop for long. A test process that
 * runs synchronous work for a minute cannot answer vitest's runner, and the run ends in
 * `Timeout calling "onTaskUpdate"` although every test passed (test/README.md). Blocks over
 * BLOCK_MS are printed, with the test (or hook) that was running, when the file ends.
 */
import { writeSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { afterAll, afterEach, beforeEach } from 'vitest';

const TICK_MS = 250;
/**
 * A quarter of vitest's RPC time-out (60 s): worth knowing well before it bites.
 * COWCHAIN_LOOP_REPORT_MS lowers it to hunt for the stretches a heavier load would stretch past.
 */
const BLOCK_MS = Number(process.env.COWCHAIN_LOOP_REPORT_MS ?? 15_000);

let current = '(collection or a beforeAll hook)';
const blocks: { ms: number; where: string }[] = [];
// A monotonic clock (tests mock Date.now).
const clock = () => performance.now();
let last = clock();
/** Called on every tick and around every test: how long since the loop last turned. */
function check(): void {
  const now = clock();
  const held = now - last - TICK_MS;
  if (held > BLOCK_MS) blocks.push({ ms: held, where: current });
  last = now;
}
const timer = setInterval(check, TICK_MS);
timer.unref();

// Destructured: vitest reads a hook's first parameter as a fixture list in files that use test.extend.
let fileName = '?';
beforeEach(({ task }) => {
  check();
  current = task.name;
  fileName = task.file?.name ?? fileName;
});

afterEach(() => {
  check();
  current = '(between tests, or an afterAll hook)';
});

afterAll(() => {
  check();
  for (const b of blocks.splice(0)) console.warn(`event loop held for ${(b.ms / 1000).toFixed(1)} s in: ${b.where}`);
  current = '(after the last afterAll hook: the file is done, the test process winds down)';
});

// Which file and test a runner time-out hit (vitest's own report names neither).
process.on('unhandledRejection', (e) => {
  if (String(e).includes('[vitest-worker]')) writeSync(2, `${String(e)} in a test process at: ${current} (${fileName})\n`);
});

// What holds the loop after the last hook (closing pools, children, handles) is past the
// reporter: written straight to stderr as the process exits.
process.on('exit', () => {
  check();
  for (const b of blocks) writeSync(2, `event loop held for ${(b.ms / 1000).toFixed(1)} s in: ${b.where} (${process.env.VITEST_POOL_ID ?? '?'})\n`);
});
