import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/gluster/**', 'node_modules/**'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // The engine workers (src/worker) run from a bundle of the sources.
    setupFiles: ['test/support/engine-worker-setup.ts'],
  },
});
