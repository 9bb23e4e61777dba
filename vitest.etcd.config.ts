// The etcd suite (npm run test:etcd): only test/etcd, against the 3-member cluster that
// test/etcd/setup.sh starts. The endpoints come from COWCHAIN_ETCD_ENDPOINTS, or, when unset,
// from the env file setup.sh writes (/run/cowchain-etcd/env). Without either the suite fails
// (test/etcd/support.ts), never skips.
import * as fs from 'node:fs';
import { defineConfig } from 'vitest/config';

const ENV_FILE = process.env.COWCHAIN_ETCD_ENV ?? `${process.env.COWCHAIN_ETCD_STATE ?? '/run/cowchain-etcd'}/env`;
if (!process.env.COWCHAIN_ETCD_ENDPOINTS && fs.existsSync(ENV_FILE)) {
  for (const line of fs.readFileSync(ENV_FILE, 'utf8').split('\n')) {
    const m = /^(COWCHAIN_ETCD_[A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) process.env[m[1]] = m[2];
  }
}

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
