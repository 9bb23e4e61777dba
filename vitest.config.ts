import { defineConfig } from 'vitest/config';

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
    // The engine workers (src/worker) run from a bundle of the sources.
    setupFiles: ['test/support/engine-worker-setup.ts', 'test/support/event-loop-watch.ts'],
    // Two test files at a time (vitest's default on two cores is one): many tests wait on child
    // processes, qemu and timers rather than compute. (Three were no faster on an idle machine and
    // heavier on a shared one.)
    maxWorkers: 2,
  },
});
