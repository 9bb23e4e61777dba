// `npm run build:cli`: the `cowchain` bin in dist/cli/ (src/cli/bin.cjs says how it loads):
//  - cli.js: src/cli/main.ts and everything it imports as one CommonJS bundle (esbuild), wrapped
//    as a function expression. A command's implementation (the engine, zod, the volume driver, the
//    Nova client) still runs its module code only when that command runs: esbuild turns the
//    actions' import() into a lazy initialisation inside the bundle.
//  - *.cache: V8's code caches of cli.js, each made by running short commands once in a process
//    of its own (a temporary directory, the CLI's own commands), so that it holds the bytecode of
//    what they run: cli-volume-info.cache volume info's, cli-volume.cache the other volume and
//    snapshot commands', cli.cache the others' (img, io). A start deserializes the one for its
//    command instead of parsing and compiling it; a cache holding more commands' bytecode costs
//    each start more to deserialize and more page faults (WARM_UP says how much).
//  - main.js (from src/cli/bin.cjs) and package.json ({"type": "commonjs"}) for it.
// The bundle sits in dist/cli/ itself, so `../../build/…` from it still finds the engine's wasm
// and the lock binding. The cache is valid for the Node that ran this build (V8 checks its
// version and flags, and the source's length, and refuses it otherwise; the bin then compiles the
// source), so npm run build makes it again for the Node it runs on.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

/**
 * commander requires node:child_process at load for executable subcommands (`cowchain-img` files),
 * which cowchain does not have; loading it (with net, dgram, streams) cost a few ms per start.
 */
const noChildProcess = {
  name: 'no-child-process',
  setup(b) {
    b.onResolve({ filter: /^(node:)?child_process$/ }, (args) => (/[\\/]commander[\\/]/.test(args.importer) ? { path: 'child_process', namespace: 'cowchain-stub' } : undefined));
    b.onLoad({ filter: /^child_process$/, namespace: 'cowchain-stub' }, () => ({
      contents: "module.exports = { spawn() { throw new Error('cowchain has no executable subcommands'); } };",
      loader: 'js',
    }));
  },
};

/**
 * esbuild's CommonJS output turns each `import * as fs from 'node:fs'` into its own
 * `__toESM(require('node:fs'))`, a copy of the module's properties as getters: some 40 copies of
 * fs, path and fs/promises at every start. As in ES modules, where every importer sees the one
 * namespace object, each module object gets one (a WeakMap beside esbuild's helper).
 */
function memoizeToESM(code) {
  const helper = /var __toESM ?= ?\(mod, ?isNodeMode, ?target\) ?=>/;
  if (!helper.test(code)) throw new Error(`build:cli: esbuild's __toESM helper is not ${helper} any more: update memoizeToESM`);
  return code.replace(
    helper,
    'var __toESM=(mod,isNodeMode)=>{if(isNodeMode!==1||mod===null||typeof mod!="object"&&typeof mod!="function")return __toESMNew(mod,isNodeMode);let ns=__toESMs.get(mod);return ns||__toESMs.set(mod,ns=__toESMNew(mod,isNodeMode)),ns},__toESMs=new WeakMap,__toESMNew=(mod,isNodeMode,target)=>',
  );
}

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

/**
 * zod initialises when a command first uses it, not when a module importing it does (esbuild
 * initialises a module's imports with it): loading zod costs a start some 5M instructions, and
 * the volume commands read and write well-formed files without it (info-file.ts, journal.ts…).
 * Each `import * as z from 'zod'` of src/ becomes `z` of cowchain-lazy-zod, whose first property
 * read requires cowchain-zod-used: that module reads off zod's namespace the names src/ reads
 * off `z` (so the bundle keeps only what the schemas use, as before), and esbuild turns the
 * require() into a call of its initialiser.
 */
function lazyZod(zodExports) {
  const zodImport = /^import \* as z from 'zod';$/m;
  const used = new Set();
  for (const file of fs.readdirSync(path.join(root, 'src'), { recursive: true })) {
    if (!file.endsWith('.ts')) continue;
    const source = fs.readFileSync(path.join(root, 'src', file), 'utf8');
    if (!zodImport.test(source)) continue;
    for (const [, name] of source.matchAll(/\bz\.([A-Za-z_$][\w$]*)/g)) if (zodExports.has(name)) used.add(name); // type names (z.infer) are not exports
  }
  const members = [...used].sort().map((name) => `${name}: zod.${name}`).join(', ');
  return {
    name: 'lazy-zod',
    setup(b) {
      b.onLoad({ filter: /[\\/]src[\\/].*\.ts$/ }, async (args) => {
        const source = await fs.promises.readFile(args.path, 'utf8');
        if (!/from 'zod'/.test(source)) return undefined;
        const contents = source.replace(zodImport, "import { z } from 'cowchain-lazy-zod';");
        // only type imports may remain (esbuild drops them): any other form would load zod at start
        for (const line of contents.split('\n')) {
          if (/from 'zod'/.test(line) && !/^import type /.test(line)) throw new Error(`build:cli: ${args.path} imports zod as \`${line}\`: only \`import * as z from 'zod'\` is made lazy`);
        }
        return { contents, loader: 'ts' };
      });
      b.onResolve({ filter: /^cowchain-(lazy-zod|zod-used)$/ }, (args) => ({ path: args.path, namespace: 'cowchain-stub' }));
      b.onLoad({ filter: /^cowchain-zod-used$/, namespace: 'cowchain-stub' }, () => ({
        contents: `import * as zod from 'zod';\nexport const z = { ${members} };`,
        loader: 'js',
        resolveDir: root,
      }));
      b.onLoad({ filter: /^cowchain-lazy-zod$/, namespace: 'cowchain-stub' }, () => ({
        contents: `let zod;
export const z = new Proxy({}, {
  get(_, name) {
    zod ??= require('cowchain-zod-used').z;
    if (typeof name === 'string' && !(name in zod)) throw new Error(\`build:cli kept no z.\${name} (it keeps the names src/ reads off z)\`);
    return zod[name];
  },
});`,
        loader: 'js',
        resolveDir: root,
      }));
    },
  };
}
const outdir = path.join(root, 'dist/cli');

const WARM_VOLUME = '00000000-0000-4000-8000-00000000c0c0';
const WARM_SNAPSHOT = '00000000-0000-4000-8000-00000000c0c1';

/**
 * The short commands an operator runs most, by code cache (src/cli/bin.cjs picks one by the
 * command's words). A step `['--child', …argv]` runs in a process of its own (the bin, with no
 * cache in place yet): it prepares what the cache's own commands need without its bytecode
 * landing in that cache. volume info, the shortest volume command, has a cache of only what it
 * runs: 80-119 fewer page faults (~11 us each on this VM) and some 4M fewer instructions per
 * start than with the group's cli-volume.cache. A cache of its own for img info, img create and
 * snapshot create/delete measured 58, 22 and 13-42 fewer faults, but the four would grow the
 * package by 560 KB compressed, past its 1 MiB bound (test/package/pack.test.ts).
 */
const WARM_UP = {
  'cli.cache': (dir) => [
    ['img', 'create', '-q', '-f', 'raw', path.join(dir, 'base.raw'), '64M'],
    ['img', 'create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', path.join(dir, 'overlay.qcow2')],
    ['img', 'info', path.join(dir, 'overlay.qcow2')],
    ['img', 'info', '--output', 'json', path.join(dir, 'overlay.qcow2')],
    ['io', '-q', '-c', 'write -P 0x5a 0 1M', path.join(dir, 'overlay.qcow2')],
  ],
  'cli-volume.cache': (dir) => {
    const vol = ['--dir', dir, '--volume', WARM_VOLUME];
    return [
      ['volume', 'create', ...vol, '--size', '64M', '--format', 'qcow2'],
      ['volume', 'info', ...vol],
      ['snapshot', 'create', ...vol, '--snapshot', WARM_SNAPSHOT],
      ['io', '-q', '-c', 'write -P 0x5a 0 1M', path.join(dir, `volume-${WARM_VOLUME}.${WARM_SNAPSHOT}`)],
      ['snapshot', 'delete', ...vol, '--snapshot', WARM_SNAPSHOT],
    ];
  },
  'cli-volume-info.cache': (dir) => {
    const vol = ['--dir', dir, '--volume', WARM_VOLUME];
    return [['--child', 'volume', 'create', ...vol, '--size', '64M', '--format', 'qcow2'], ['volume', 'info', ...vol]];
  },
};

// `node scripts/build-cli.mjs --warm-up CACHE`: a process of the build that makes one code cache.
if (process.argv[2] === '--warm-up') {
  const cache = process.argv[3];
  const bin = createRequire(import.meta.url)(path.join(outdir, 'main.js'));
  if (bin.codeCacheRejected !== undefined) throw new Error('build:cli: a warm-up started from a code cache: it would hold every command of that one too');
  await warmUp(bin.main, WARM_UP[cache]);
  fs.writeFileSync(path.join(outdir, `${cache}.tmp`), bin.createCodeCache());
  process.exit(0);
}

fs.rmSync(outdir, { recursive: true, force: true });
const result = await build({
  entryPoints: [path.join(root, 'src/cli/main.ts')],
  outfile: path.join(outdir, 'cli.js'),
  write: false,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  charset: 'ascii',
  logLevel: 'warning',
  // Less source for V8 to scan when there is no usable cache (some 30 %); names are kept, so a
  // stack trace still names its functions. COWCHAIN_CLI_READABLE=1 keeps the bundle as esbuild
  // lays it out, a module after a `// path` line: what a CPU profile of the bin can be read against.
  minifyWhitespace: !process.env.COWCHAIN_CLI_READABLE,
  minifySyntax: !process.env.COWCHAIN_CLI_READABLE,
  plugins: [noChildProcess, lazyZod(new Set(Object.keys(await import('zod'))))],
  // import() of what is not bundled (etcd3, node:os) as require(): a vm.Script has no ESM loader.
  supported: { 'dynamic-import': false },
  // The modules locate build/ and package.json from import.meta.url: here, the bundle's own URL.
  // COWCHAIN_CLI_BUNDLE: main.ts does not ask whether it is the process's script (the bin runs it).
  define: { 'import.meta.url': '__cowchainUrl', COWCHAIN_CLI_BUNDLE: 'true' },
  // etcd3 (with grpc) reads its .proto files from beside its own modules: loaded from
  // node_modules, and only by a command given --coordination etcd://….
  external: ['etcd3'],
});
let code = memoizeToESM(result.outputFiles[0].text.replace(/^#!.*\n/, ''));
// runAsBin (src/cli/main.ts) turns zod's JIT off through the global zod keeps its settings in.
if (!code.includes('globalThis.__zod_globalConfig')) throw new Error('build:cli: the bundled zod no longer keeps its settings in globalThis.__zod_globalConfig: update runAsBin in src/cli/main.ts');
fs.mkdirSync(outdir, { recursive: true });
const bundleFile = path.join(outdir, 'cli.js');
fs.writeFileSync(
  bundleFile,
  `(function (exports, require, module, __filename, __dirname) {'use strict';const __cowchainUrl = require('node:url').pathToFileURL(__filename).href;\n${code}})\n`,
);
fs.writeFileSync(path.join(outdir, 'package.json'), '{ "type": "commonjs" }\n');
fs.copyFileSync(path.join(root, 'src/cli/bin.cjs'), path.join(outdir, 'main.js'));
fs.chmodSync(path.join(outdir, 'main.js'), 0o755);

/** `cowchain argv` in a process of its own; its stderr goes to the warm-up's `said` (process.stderr.write is replaced meanwhile). */
function childStatus(argv) {
  const r = spawnSync(process.execPath, [path.join(outdir, 'main.js'), ...argv], { encoding: 'utf8' });
  if (r.status !== 0) process.stderr.write(r.stderr);
  return r.status;
}

/** Run `commands(dir)` once each, in a temporary directory, with their output dropped. */
async function warmUp(main, commands) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cowchain-build-cli-'));
  const runs = commands(dir);
  const { write: out } = process.stdout;
  const { write: err } = process.stderr;
  let said = '';
  // as runAsBin (src/cli/main.ts) sets it in the bin's process
  const zodConfig = (globalThis.__zod_globalConfig ??= {});
  zodConfig.jitless = true;
  try {
    process.stdout.write = process.stderr.write = (chunk) => ((said += String(chunk)), true);
    for (const step of runs) {
      said = '';
      const child = step[0] === '--child';
      const argv = child ? step.slice(1) : step;
      const status = child ? childStatus(argv) : await main(argv);
      if (status !== 0) throw new Error(`build:cli: warming the code cache, \`cowchain ${argv.join(' ')}\` exited ${status}: ${said}`);
    }
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// Each cache in a process of its own, started with no cache (none is in place until all are made),
// so that it holds the bytecode of its own commands only.
for (const cache of Object.keys(WARM_UP)) {
  const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--warm-up', cache], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`build:cli: the warm-up of ${cache} exited ${r.status ?? r.signal}`);
}
for (const cache of Object.keys(WARM_UP)) fs.renameSync(path.join(outdir, `${cache}.tmp`), path.join(outdir, cache));
