import * as path from 'node:path';
import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/**
 * The files that take longest, longest first (measured on an idle two-core machine). With timings
 * of its own (node_modules/.vite) vitest starts the longest files first; a fresh clone has none,
 * and vitest then starts the largest files first, which left several of these (small files with
 * long tests) to the end of the run, one worker busy and the other idle. Started first, they
 * leave short files to fill the end. A name missing here only runs in vitest's order.
 */
const LONGEST_FIRST = [
  // a tsc child: its worker waits while it computes, so it starts first, beside the longest file
  'test/package/typecheck.test.ts',
  'test/volume/crash.test.ts',
  'test/interop/check.test.ts',
  'test/interop/read-matrix.test.ts',
  'test/interop/create.test.ts',
  'test/hardening/concurrency.test.ts',
  'test/interop/commit.test.ts',
  'test/package/pack.test.ts',
  'test/interop/chain-cli.test.ts',
  'test/hardening/differential.test.ts',
  'test/engine/write-faults.test.ts',
  'test/engine/commit-faults.test.ts',
  'test/hardening/crash-sweeps.test.ts',
  'test/volume/encrypted.test.ts',
  'test/interop/luks.test.ts',
  'test/engine/malformed-header.test.ts',
  'test/volume/lock.test.ts',
  'test/interop/rebase-stream.test.ts',
  'test/interop/convert.test.ts',
  'test/interop/write-random.test.ts',
  'test/volume/driver-ops.test.ts',
  'test/package/docs.test.ts',
  'test/deno/deno.test.ts',
];

class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const rel = (f: TestSpecification) => path.relative(this.ctx.config.root, f.moduleId).split(path.sep).join('/');
    if (sorted.some((f) => this.ctx.cache.getFileTestResults(`${f.project.name}:${rel(f)}`))) return sorted;
    const rank = (f: TestSpecification) => {
      const i = LONGEST_FIRST.indexOf(rel(f));
      return i < 0 ? LONGEST_FIRST.length : i;
    };
    return sorted.map((f, i) => ({ f, i })).sort((a, b) => rank(a.f) - rank(b.f) || a.i - b.i).map(({ f }) => f);
  }
}

// `npm test` runs the quick tier, `npm run test:full` (COWCHAIN_TEST_TIER=full) the full one:
// test/README.md. The time-outs are generous on purpose: the suite must pass on a loaded machine,
// and speed is measured in bench/, never asserted here.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/gluster/**', 'test/etcd/**', 'node_modules/**'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 600_000,
    hookTimeout: 600_000,
    teardownTimeout: 120_000,
    pool: 'forks',
    // Test files share their worker processes (two of them, not one per file: starting node and
    // vitest's worker cost each file ~0.3 s of CPU); fresh-modules.ts gives each file fresh
    // modules, as a process of its own would.
    poolOptions: { forks: { isolate: false } },
    // The engine workers (src/worker) run from a bundle of the sources.
    setupFiles: ['test/support/fresh-modules.ts', 'test/support/engine-worker-setup.ts', 'test/support/event-loop-watch.ts'],
    // Two test files at a time (vitest's default on two cores is one): many tests wait on child
    // processes, qemu and timers rather than compute. (Three were no faster on an idle machine and
    // heavier on a shared one.)
    maxWorkers: 2,
    sequence: { sequencer: LongestFirst },
  },
});
