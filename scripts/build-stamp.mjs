// Whether the build is that of this tree, so that `npm test`, `npm start` and the bench build only
// when something changed. `npm ci` and `npm install` already ran `npm run build` (prepare); on a
// two-core machine building again costs 25 s of CPU for nothing.
//
//   node scripts/build-stamp.mjs write   last step of `npm run build`: records build/inputs.stamp
//   node scripts/build-stamp.mjs check   exits 0 when the stamp matches this tree, 1 otherwise
//
// The stamp holds a SHA-256 of every input of the build (the sources, the build scripts, the
// configurations and the lock file, by path and content, so a checkout that only touches mtimes
// does not count), the Node version (the CLI's V8 code caches are valid for one Node), and each
// output with its size and mtime (an output rebuilt, changed or removed by hand makes the stamp
// stale). A stale or missing stamp means a full `npm run build`, never a partial one.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const STAMP = path.join(root, 'build/inputs.stamp');
const INPUT_DIRS = ['assembly', 'src', 'native', 'scripts'];
const INPUT_FILES = ['package.json', 'package-lock.json', 'asconfig.json', 'tsconfig.build.json'];
const OUTPUTS = [
  'build/cowchain.wasm',
  'build/zstd-decoder.wasm',
  'build/zstd-encoder.wasm',
  'build/zstd-encoder.json',
  'dist/index.js',
  'dist/cli/main.js',
  'dist/cli/cli.js',
];
// Besides: every file of dist/cli/ (the code caches, one per command group, whatever their names).
const OUTPUT_DIRS = ['dist/cli'];
// Optional outputs (a machine without a C compiler builds without them): recorded when present.
const OPTIONAL_OUTPUTS = ['build/ofd-lock.node', 'build/file-extents.node'];

function inputsHash() {
  const files = [...INPUT_FILES];
  for (const dir of INPUT_DIRS) {
    for (const e of fs.readdirSync(path.join(root, dir), { withFileTypes: true, recursive: true })) {
      if (!e.isFile()) continue;
      const rel = path.relative(root, path.join(e.parentPath, e.name)).split(path.sep).join('/');
      if (!rel.includes('/node_modules/')) files.push(rel);
    }
  }
  const hash = createHash('sha256');
  for (const rel of files.sort()) {
    hash.update(`${rel}\0`);
    hash.update(fs.readFileSync(path.join(root, rel)));
    hash.update('\0');
  }
  return hash.digest('hex');
}

function outputs() {
  const out = {};
  const listed = OUTPUT_DIRS.flatMap((dir) => (fs.existsSync(path.join(root, dir)) ? fs.readdirSync(path.join(root, dir)).map((n) => `${dir}/${n}`) : []));
  for (const rel of [...new Set([...OUTPUTS, ...OPTIONAL_OUTPUTS, ...listed])].sort()) {
    const file = path.join(root, rel);
    if (!fs.existsSync(file)) {
      if (OUTPUTS.includes(rel)) return null;
      continue;
    }
    const st = fs.statSync(file);
    out[rel] = `${st.size}:${st.mtimeMs}`;
  }
  return out;
}

const current = () => ({ node: process.version, inputs: inputsHash(), outputs: outputs() });

const mode = process.argv[2];
if (mode === 'write') {
  const now = current();
  if (!now.outputs) throw new Error('build-stamp: an output of the build is missing; not stamping');
  fs.writeFileSync(STAMP, `${JSON.stringify(now, null, 1)}\n`);
} else if (mode === 'check') {
  let stamped = null;
  try {
    stamped = JSON.parse(fs.readFileSync(STAMP, 'utf8'));
  } catch {
    // no stamp: build
  }
  const now = current();
  const fresh = stamped !== null && now.outputs !== null && JSON.stringify(stamped) === JSON.stringify(now);
  if (fresh) console.log('build: up to date with this tree (build/inputs.stamp); not rebuilt');
  process.exit(fresh ? 0 : 1);
} else {
  console.error('usage: node scripts/build-stamp.mjs write|check');
  process.exit(2);
}
