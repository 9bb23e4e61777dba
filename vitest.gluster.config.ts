// The GlusterFS suite (npm run test:gluster): only test/gluster, on the two mounts that
// test/gluster/setup.sh makes. The mount points come from COWCHAIN_GLUSTER_A / _B, or, when
// those are unset, from the env file setup.sh writes (/run/cowchain-gluster/env). Without either
// the suite fails (test/gluster/support.ts), never skips.
import * as fs from 'node:fs';
import { defineConfig } from 'vitest/config';

const ENV_FILE = process.env.COWCHAIN_GLUSTER_ENV ?? '/run/cowchain-gluster/env';
if (!process.env.COWCHAIN_GLUSTER_A && !process.env.COWCHAIN_GLUSTER_B && fs.existsSync(ENV_FILE)) {
  for (const line of fs.readFileSync(ENV_FILE, 'utf8').split('\n')) {
    const m = /^(?:export\s+)?(COWCHAIN_GLUSTER_[A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) process.env[m[1]] = m[2].replace(/^'(.*)'$/, '$1');
  }
}

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
