// `npm run build:native`: compile the native bindings, each with one `cc` call against the running
// Node's headers: native/ofd-lock.c into build/ofd-lock.node (qemu's image locks) and
// native/file-extents.c into build/file-extents.node (a raw file's holes). Optional: without a
// compiler or headers the package still works (image locks are then detected through /proc/locks
// but not taken, and a raw file's holes are read as data; see the README), so a failure is a
// warning unless COWCHAIN_REQUIRE_NATIVE=1.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const BINDINGS = ['ofd-lock', 'file-extents'];
const candidates = [path.join(path.dirname(process.execPath), '../include/node'), '/usr/include/node', '/usr/local/include/node'];
const include = candidates.find((d) => fs.existsSync(path.join(d, 'node_api.h')));

function give(reason) {
  const message = `build:native: ${reason}; image locks will be detected, not taken, and raw files' holes read as data`;
  if (process.env.COWCHAIN_REQUIRE_NATIVE === '1') {
    console.error(message);
    process.exit(1);
  }
  console.warn(`warning: ${message}`);
  process.exit(0);
}

if (process.platform !== 'linux') give(`the bindings are Linux-only (${process.platform})`);
if (!include) give(`no node_api.h in ${candidates.join(', ')}`);
fs.mkdirSync(path.join(root, 'build'), { recursive: true });
for (const name of BINDINGS) {
  const r = spawnSync(process.env.CC || 'cc', ['-shared', '-fPIC', '-O2', '-Wall', '-I', include, path.join(root, `native/${name}.c`), '-o', path.join(root, `build/${name}.node`)], { stdio: 'inherit' });
  if (r.error || r.status !== 0) give(`cc failed on native/${name}.c (${r.error?.message ?? `exit ${r.status}`})`);
}
