// The GlusterFS suite (npm run test:gluster): only test/gluster, on the two mounts that
// test/gluster/setup.sh makes. The mount points come from COWCHAIN_GLUSTER_A / _B, or, when
// those are unset, from the env file setup.sh writes (/run/cowchain-gluster/env). Without either
// the suite fails (test/gluster/support.ts), never skips. The etcd cluster of test/etcd/setup.sh,
// when it runs (/run/cowchain-etcd/env), adds the two-host race with the etcd lock.
import { defineConfig } from 'vitest/config';
import { loadEnvFile } from './test/support/env-file.js';

if (!process.env.COWCHAIN_GLUSTER_A && !process.env.COWCHAIN_GLUSTER_B) {
  loadEnvFile(process.env.COWCHAIN_GLUSTER_ENV ?? '/run/cowchain-gluster/env', /^COWCHAIN_GLUSTER_/);
}
loadEnvFile(process.env.COWCHAIN_ETCD_ENV ?? `${process.env.COWCHAIN_ETCD_STATE ?? '/run/cowchain-etcd'}/env`, /^COWCHAIN_ETCD_/);

export default defineConfig({
  test: {
    include: ['test/gluster/**/*.test.ts'],
    testTimeout: 180_000,
    hookTimeout: 120_000,
    pool: 'forks',
    setupFiles: ['test/support/engine-worker-setup.ts'],
    // One file at a time: the files share one GlusterFS volume (and its two client processes),
    // and the race and timing-sensitive tests should not compete with each other for it.
    fileParallelism: false,
  },
});
