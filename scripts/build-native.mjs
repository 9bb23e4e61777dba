// `npm run build:native`: compile native/ofd-lock.c into build/ofd-lock.node with one `cc` call
// against the running Node's headers. Optional: without a compiler or headers the package still
// works (image locks are then detected through /proc/locks but not taken; see the README), so a
// failure is a warning unless COWCHAIN_REQUIRE_NATIVE=1.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'build/ofd-lock.node');
const candidates = [path.join(path.dirname(process.execPath), '../include/node'), '/usr/include/node', '/usr/local/include/node'];
const include = candidates.find((d) => fs.existsSync(path.join(d, 'node_api.h')));

function give(reason) {
  const message = `build:native: ${reason}; image locks will be detected, not taken`;
  if (process.env.COWCHAIN_REQUIRE_NATIVE === '1') {
    console.error(message);
    process.exit(1);
  }
  console.warn(`warning: ${message}`);
  process.exit(0);
}

if (process.platform !== 'linux') give(`OFD locks are Linux-only (${process.platform})`);
if (!include) give(`no node_api.h in ${candidates.join(', ')}`);
fs.mkdirSync(path.dirname(out), { recursive: true });
const r = spawnSync(process.env.CC || 'cc', ['-shared', '-fPIC', '-O2', '-Wall', '-I', include, path.join(root, 'native/ofd-lock.c'), '-o', out], { stdio: 'inherit' });
if (r.error || r.status !== 0) give(`cc failed (${r.error?.message ?? `exit ${r.status}`})`);
