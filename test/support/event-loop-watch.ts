/**
 * vitest setup file: reports where a test file held its event loop for long. A test process that
 * runs synchronous work for a minute cannot answer vitest's runner, and the run ends in
 * `Timeout calling "onTaskUpdate"` although every test passed (test/README.md). Blocks over
 * BLOCK_MS are printed, with the test (or hook) that was running, when the file ends; blocks after
 * a file's last hook, when the process exits.
 *
 * One watch per process, installed by the first file: a process that runs several files (vitest
 * without isolation) keeps one timer and one set of process listeners, and each file's hooks only
 * say where the process is.
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

interface Watch {
  /** The test or phase running now. */
  where: string;
  /** The test file running now. */
  file: string;
  /** Blocks seen and not yet reported. */
  blocks: { ms: number; where: string }[];
  /** When the loop last turned (a tick of the watch's timer). */
  turned: number;
  /** How long since the loop last turned; records a block over BLOCK_MS. */
  check(): void;
}

const KEY = Symbol.for('cowchain.test.event-loop-watch');
const holder = globalThis as { [KEY]?: Watch };

function install(): Watch {
  // A monotonic clock (tests mock Date.now).
  let last = performance.now();
  const watch: Watch = {
    where: '',
    file: '?',
    blocks: [],
    turned: last,
    check() {
      const now = performance.now();
      watch.turned = now;
      const held = now - last - TICK_MS;
      if (held > BLOCK_MS) watch.blocks.push({ ms: held, where: `${watch.where} (${watch.file})` });
      last = now;
    },
  };
  setInterval(() => watch.check(), TICK_MS).unref();
  // Which file and test a runner time-out hit (vitest's own report names neither).
  process.on('unhandledRejection', (e) => {
    if (String(e).includes('[vitest-worker]')) writeSync(2, `${String(e)} in a test process at: ${watch.where} (${watch.file})\n`);
  });
  // What holds the loop after the last hook (closing pools, children, handles) is past the
  // reporter: written straight to stderr as the process exits.
  process.on('exit', () => {
    watch.check();
    for (const b of watch.blocks) writeSync(2, `event loop held for ${(b.ms / 1000).toFixed(1)} s in: ${b.where}\n`);
  });
  return watch;
}

const watch = (holder[KEY] ??= install());

/**
 * How long the runner takes to answer this process's task updates: an answer later than vitest's
 * 60 s RPC time-out fails the run. Answers slower than SLOW_ANSWER_MS are written to stderr with
 * the time they were asked, so a run that failed that way shows when and where.
 */
const SLOW_ANSWER_MS = Number(process.env.COWCHAIN_RPC_REPORT_MS ?? 10_000);
// (vitest's rpc object answers every property with a function: which ones are wrapped is kept here)
const timedKey = Symbol.for('cowchain.test.timed-rpc');
const timed = ((globalThis as { [timedKey]?: WeakSet<object> })[timedKey] ??= new WeakSet());
const state = (globalThis as { __vitest_worker__?: { rpc?: object } }).__vitest_worker__;
if (state?.rpc && !timed.has(state.rpc)) {
  state.rpc = new Proxy(state.rpc, {
    get(target, key) {
      const value = Reflect.get(target, key) as unknown;
      if (key !== 'onTaskUpdate' || typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        const asked = new Date();
        const t0 = performance.now();
        const answered = (value as (...a: unknown[]) => Promise<unknown>)(...args);
        const report = () => {
          const ms = performance.now() - t0;
          if (ms > SLOW_ANSWER_MS) {
            const [packs, events] = args as [unknown[], unknown[]];
            const what = `${packs?.length ?? 0} tasks, ${events?.length ?? 0} events`;
            writeSync(2, `runner answered onTaskUpdate after ${(ms / 1000).toFixed(1)} s (asked ${asked.toISOString()} in ${watch.where} (${watch.file}), pid ${process.pid}; ${what}; loop turned ${((performance.now() - watch.turned) / 1000).toFixed(1)} s ago)\n`);
          }
        };
        answered.then(report, report);
        return answered;
      };
    },
  });
  timed.add(state.rpc);
}
watch.where = '(collection or a beforeAll hook)';
// vitest's worker state names the file being collected (before any test has a task to ask).
const workerState = (globalThis as { __vitest_worker__?: { filepath?: string } }).__vitest_worker__;
watch.file = workerState?.filepath?.replace(`${process.cwd()}/`, '') ?? '?';

// The hooks only say where the process is: the loop is measured by the timer alone. (Measured in
// the hooks too, a hold across many short synchronous tests showed as many short ones.)
// Destructured: vitest reads a hook's first parameter as a fixture list in files that use test.extend.
beforeEach(({ task }) => {
  watch.where = task.name;
  watch.file = task.file?.name ?? watch.file;
});

// One turn of the event loop after every test. vitest runs a file's tests back to back without
// one, so a file of synchronous tests (spawnSync of qemu, engine calls) never read the runner's
// answers until it ended: interop/check's were 10 s late on an idle machine, 30-48 s at a load
// of 9-15, and past 60 s vitest fails the run with every test passed.
afterEach(async () => {
  watch.where = '(between tests, or an afterAll hook)';
  await new Promise((resolve) => setImmediate(resolve));
});

afterAll(() => {
  watch.check();
  for (const b of watch.blocks.splice(0)) console.warn(`event loop held for ${(b.ms / 1000).toFixed(1)} s in: ${b.where}`);
  watch.where = '(after the last afterAll hook: the file is done)';
});
