// `npm run build:cli`: the `cowchain` bin as a bundle (esbuild) in dist/cli/. A process start
// costs what Node has to load: one file for the command line (commander, the declarations of every
// command) instead of some 180 modules, and each command's implementation as a chunk beside it,
// loaded by the action that needs it (see src/cli/main.ts). The chunks sit in dist/cli/ itself,
// so `../../build/…` from a chunk still finds the engine's wasm and the lock binding.
import * as fs from 'node:fs';
import * as path from 'node:path';
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
    b.onLoad({ filter: /.*/, namespace: 'cowchain-stub' }, () => ({
      contents: "module.exports = { spawn() { throw new Error('cowchain has no executable subcommands'); } };",
      loader: 'js',
    }));
  },
};

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const outdir = path.join(root, 'dist/cli');
fs.rmSync(outdir, { recursive: true, force: true });
await build({
  entryPoints: { main: path.join(root, 'src/cli/main.ts') },
  outdir,
  bundle: true,
  splitting: true,
  chunkNames: '[name]-[hash]',
  platform: 'node',
  format: 'esm',
  target: 'node20',
  logLevel: 'warning',
  // Less source for V8 to scan at every start (some 30 %); names are kept, so a stack trace
  // still names its functions.
  minifyWhitespace: true,
  minifySyntax: true,
  plugins: [noChildProcess],
  // etcd3 (with grpc) reads its .proto files from beside its own modules: loaded from
  // node_modules, and only by a command given --coordination etcd://….
  external: ['etcd3'],
});

// CommonJS dependencies (commander) call require() for Node's built-ins, through esbuild's
// require helper; ESM has no require, so the chunk holding that helper gets one. (esbuild's
// banner would make one in every chunk, some 15 per command.)
const REQUIRE = "import { createRequire as __cowchainRequire } from 'node:module'; const require = __cowchainRequire(import.meta.url);\n";
for (const name of fs.readdirSync(outdir)) {
  const file = path.join(outdir, name);
  const code = fs.readFileSync(file, 'utf8');
  if (!code.includes('Dynamic require of')) continue;
  const shebang = code.startsWith('#!') ? code.slice(0, code.indexOf('\n') + 1) : '';
  fs.writeFileSync(file, shebang + REQUIRE + code.slice(shebang.length));
}
