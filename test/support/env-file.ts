/**
 * Read a `NAME=value` file that a suite's setup script writes (test/gluster/setup.sh,
 * test/etcd/setup.sh) into process.env, for the names matching `names` that are not set yet —
 * what a caller sets itself wins. Used by the suites' vitest configs.
 */
import * as fs from 'node:fs';

export function loadEnvFile(file: string, names: RegExp): void {
  if (!fs.existsSync(file)) return;
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const m = /^(?:export\s+)?([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (m && names.test(m[1]) && process.env[m[1]] === undefined) process.env[m[1]] = m[2].replace(/^'(.*)'$/, '$1');
  }
}
