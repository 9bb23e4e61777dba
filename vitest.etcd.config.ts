// The etcd suite (npm run test:etcd): only test/etcd, against the 3-member cluster that
// test/etcd/setup.sh starts. The endpoints come from COWCHAIN_ETCD_ENDPOINTS, or, when unset,
// from the env file setup.sh writes (/run/cowchain-etcd/env). Without either the suite fails
// (test/etcd/support.ts), never skips.
import { defineConfig } from 'vitest/config';
import { loadEnvFile } from './test/support/env-file.js';

loadEnvFile(process.env.COWCHAIN_ETCD_ENV ?? `${process.env.COWCHAIN_ETCD_STATE ?? '/run/cowchain-etcd'}/env`, /^COWCHAIN_ETCD_/);

export default defineConfig({
  test: {
    include: ['test/etcd/**/*.test.ts'],
    testTimeout: 180_000,
    hookTimeout: 120_000,
    pool: 'forks',
    setupFiles: ['test/support/engine-worker-setup.ts'],
    // One file at a time: the files stop and restart members of the one cluster.
    fileParallelism: false,
  },
});
