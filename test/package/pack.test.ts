// Package hygiene: what `npm pack` publishes, and that the tarball works for a consumer — installed
// into a scratch project, imported from plain ESM, type-checked with the published .d.ts under
// strict settings (skipLibCheck off for its own declarations), and its bin run through npx.
//
// Decisions asserted here:
//   * published: package.json, README.md, CHANGELOG.md, build/cowchain.wasm, dist/**/*.js,
//     dist/**/*.d.ts (and LICENSE*, which npm adds by itself);
//   * not published: src/, test/, bench/, assembly/, docs/, build/*.wat, build/bench/,
//     node_modules, tsconfig/vitest/asconfig files, and source maps (dist/**/*.map point at
//     src/*.ts, which is not published, so they would only be broken links);
//   * every dist/*.js has its src/*.ts (no stale output of a deleted source), and every src/*.ts
//     its dist .js and .d.ts (the build is complete); src/cli is the exception: the bin is
//     dist/cli/main.js, which loads one bundle, dist/cli/cli.js, with one of its V8 code caches
//     (dist/cli/*.cache, scripts/build-cli.mjs), and dist/cli/package.json making main.js CommonJS; no .d.ts.
//
// Scripts never run here (`--ignore-scripts`: `npm pack` would otherwise run `prepare`, a full
// rebuild, under the other tests' feet); `npm test` builds first. npm is spawned without the
// npm_* variables of an enclosing `npm test` (npm_config_local_prefix would point the scratch
// install at this repo).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runProcess, type ProcessResult } from '../support/child.js';
import { findDeno } from '../support/deno.js';
import { IMAGE_PRIVATE_MEMBERS, INTERNAL_NAMES, INTERNAL_PATHS, PUBLIC_TYPES, PUBLIC_VALUES } from './public-api.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const PKG = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
  name: string;
  version: string;
  main: string;
  types: string;
  bin: Record<string, string>;
  exports: Record<string, string | Record<string, string>>;
  dependencies: Record<string, string>;
};
/** The bin's V8 code caches (scripts/build-cli.mjs), one of which a start reads. */
const CLI_CACHES = ['cli-volume-info', 'cli-volume', 'cli'].map((name) => `dist/cli/${name}.cache`).sort();
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const NPX = process.platform === 'win32' ? 'npx.cmd' : 'npx';
/**
 * tsc's check of a consumer project with skipLibCheck off for its own files and the package's
 * declarations, not for @types/node's and the dependencies' (check-consumer.mjs): 2.8 s of CPU
 * where tsc with skipLibCheck off for everything took 8.
 */
const CHECK_CONSUMER = path.join(ROOT, 'test/package/check-consumer.mjs');

/** The environment without an enclosing npm's npm_* variables (and NODE_ENV, which steers installs). */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k) && k !== 'NODE_ENV') env[k] = v;
  return env;
}

/** Run to the end without holding the event loop (npm and tsc take long on a loaded machine). */
async function run(cmd: string, args: string[], cwd: string, timeoutMs = 600_000): Promise<ProcessResult> {
  const r = await runProcess(cmd, args, { cwd, env: cleanEnv(), timeoutMs });
  if (r.error) throw r.error;
  return r;
}

function ok(r: ProcessResult, what: string): string {
  if (r.status !== 0) throw new Error(`${what} exited ${r.status}${r.signal ? ` (${r.signal})` : ''}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`);
  return r.stdout;
}

function srcModules(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
      const rel = `${dir}/${e.name}`;
      if (e.isDirectory()) walk(rel);
      else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(rel);
    }
  };
  walk('src');
  return out.sort();
}

interface PackResult {
  filename: string;
  size: number;
  unpackedSize: number;
  files: { path: string; size: number }[];
}

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'cowchain-pack-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

/**
 * One `npm pack` into the scratch directory for both groups below: what it lists is what
 * `npm pack --dry-run` lists (npm starts in about a second of CPU; once is enough).
 */
let packed: Promise<{ pack: PackResult; tarball: string }> | undefined;
function packOnce(): Promise<{ pack: PackResult; tarball: string }> {
  return (packed ??= (async () => {
    const out = ok(await run(NPM, ['pack', '--json', '--ignore-scripts', '--pack-destination', scratch], ROOT), 'npm pack');
    const pack = (JSON.parse(out) as PackResult[])[0];
    return { pack, tarball: path.join(scratch, pack.filename) };
  })());
}

describe('npm pack', () => {
  let pack: PackResult;
  let files: Map<string, number>;

  beforeAll(async () => {
    pack = (await packOnce()).pack;
    files = new Map(pack.files.map((f) => [f.path, f.size]));
  });

  it('publishes the wasm (engine, zstd decoder and encoder), the JS, the .d.ts, README and package.json', () => {
    for (const f of ['package.json', 'README.md', 'CHANGELOG.md', 'build/cowchain.wasm', 'build/zstd-decoder.wasm', 'build/zstd-encoder.wasm', 'build/zstd-encoder.json', 'dist/index.js', 'dist/index.d.ts', 'dist/cli/main.js', 'dist/engine/engine.js']) {
      expect(files.has(f), `${f} is not in the package`).toBe(true);
    }
    expect(files.get('build/cowchain.wasm')).toBe(fs.statSync(path.join(ROOT, 'build/cowchain.wasm')).size);
  });

  it('publishes nothing else: no sources, tests, maps, .wat, node_modules', () => {
    const allowed = [/^package\.json$/, /^README\.md$/, /^(LICENSE|LICENCE|NOTICE|CHANGELOG)(\.\w+)?$/i, /^build\/cowchain\.wasm$/, /^build\/zstd-(decoder\.wasm|encoder\.wasm|encoder\.json)$/, /^build\/(ofd-lock|file-extents)\.node$/, /^dist\/.+\.js$/, /^dist\/.+\.d\.ts$/, /^dist\/cli\/(cli\.cache|cli-volume\.cache|cli-volume-info\.cache|package\.json)$/];
    const unexpected = [...files.keys()].filter((f) => !allowed.some((re) => re.test(f)));
    expect(unexpected, 'files outside the published set').toEqual([]);
    for (const f of files.keys()) {
      expect(f).not.toMatch(/^(src|test|bench|assembly|docs|node_modules)\/|\/node_modules\/|\.map$|\.wat$|^build\/bench\//);
    }
  });

  it('dist matches src one to one (complete build, no stale outputs), the CLI as its bundle', () => {
    const expected = new Set<string>();
    for (const src of srcModules().filter((f) => !f.startsWith('src/cli/'))) {
      const base = src.replace(/^src\//, 'dist/').replace(/\.ts$/, '');
      expected.add(`${base}.js`);
      expect(files.has(`${base}.js`), `${base}.js (from ${src}) is not packed: run npm run build`).toBe(true);
      expect(files.has(`${base}.d.ts`), `${base}.d.ts (from ${src}) is not packed`).toBe(true);
    }
    // The bin: its loader, the bundle, the bundle's code caches and the package.json making the loader CommonJS.
    for (const f of ['dist/cli/main.js', 'dist/cli/cli.js', ...CLI_CACHES, 'dist/cli/package.json']) {
      expected.add(f);
      expect(files.has(f), `${f} (the CLI bundle) is not packed`).toBe(true);
    }
    const stale = [...files.keys()].filter((f) => f.endsWith('.js') && !expected.has(f));
    expect(stale, 'dist/*.js without a src/*.ts (stale build output: rm -rf dist && npm run build)').toEqual([]);
  });

  it('is small', () => {
    expect(files.get('build/cowchain.wasm')!).toBeLessThan(1 << 20);
    // The bin's V8 code caches (scripts/build-cli.mjs) are bytecode for the commands' code, bounded
    // on their own: each start reads one instead of compiling.
    const caches = [...files.keys()].filter((f) => f.endsWith('.cache'));
    expect(caches.sort()).toEqual(CLI_CACHES);
    for (const f of caches) expect(files.get(f)!, f).toBeLessThan(1 << 20);
    for (const [f, size] of files) if (!caches.includes(f)) expect(size, f).toBeLessThan(512 << 10);
    expect(pack.unpackedSize - caches.reduce((sum, f) => sum + files.get(f)!, 0)).toBeLessThan(2 << 20);
    expect(pack.size).toBeLessThan(1 << 20);
  });

  it('every entry point of package.json is packed', () => {
    const strip = (p: string) => p.replace(/^\.\//, '');
    const targets = [PKG.main, PKG.types, ...Object.values(PKG.bin)];
    for (const v of Object.values(PKG.exports)) targets.push(...(typeof v === 'string' ? [v] : Object.values(v)));
    for (const t of targets) expect(files.has(strip(t)), `${t} (named in package.json) is not packed`).toBe(true);
    for (const bin of Object.values(PKG.bin)) {
      expect(fs.readFileSync(path.join(ROOT, bin), 'utf8').startsWith('#!/usr/bin/env node\n'), `${bin} lacks its shebang`).toBe(true);
    }
  });
});

/** The surface check: every public name imports, no internal one does. */
function surfaceSource(): string {
  const lines: string[] = [];
  let n = 0;
  for (const [spec, values] of Object.entries(PUBLIC_VALUES)) {
    const types = PUBLIC_TYPES[spec];
    const alias = (name: string) => `${name} as p${n++}_${name}`;
    lines.push(`import { ${[...values.map(alias), ...types.map((t) => `type ${alias(t)}`)].join(', ')} } from '${spec}';`);
    const first = n - values.length - types.length;
    lines.push(`void [${values.map((v, i) => `p${first + i}_${v}`).join(', ')}];`);
    // A generic type with required parameters would not compile bare; none is public today.
    lines.push(`export type Uses${n} = [${types.map((t, i) => `p${first + values.length + i}_${t}`).join(', ')}];`);
    for (const name of INTERNAL_NAMES.filter((i) => !values.includes(i))) {
      lines.push(`// @ts-expect-error ${name} is internal`, `import { ${name} as i${n++} } from '${spec}';`);
    }
  }
  for (const p of INTERNAL_PATHS) lines.push(`// @ts-expect-error ${p} is not exported`, `import * as i${n++} from '${p}';`);
  lines.push(`import { openImage, type Image } from 'cowchain';`, `const img: Image = openImage('x.qcow2');`);
  for (const m of IMAGE_PRIVATE_MEMBERS) lines.push(`// @ts-expect-error Image.${m} is private`, `void img.${m};`);
  lines.push(`// @ts-expect-error Image has no public constructor`, `void new (openImage('x.qcow2').constructor as typeof Image)();`);
  lines.push(`{ using scoped = openImage('x.qcow2'); void scoped.virtualSize; }`, `img[Symbol.dispose]();`);
  return lines.join('\n') + '\n';
}

/** A strict consumer of the published types: every public function and type, used. */
const CONSUMER_SOURCE = `import {
  createImage, openImage, openImageOn, createQcow2On, commitImage, rebaseImage, streamImage, convertImage,
  qemuStyleInfo, MemoryBackend, FileBackend, CowError, isCowError, ERROR_CODES, engineMemoryBytes,
  type Image, type CowErrorCode, type CreateOptions, type OpenOptions, type Backend, type HeaderInfo,
  type MapEntry, type QemuStyleInfo, type CommitOptions, type ProgressCallback,
  commit as commitAsync, check, EnginePool, setEngineSource, type AsyncCommitOptions, type CheckOutcome,
} from 'cowchain';

const options: CreateOptions = { format: 'qcow2', size: 1 << 20, clusterSize: 65536 };
createImage('a.qcow2', options);
const open: OpenOptions = { writable: true };
const img: Image = openImage('a.qcow2', open);
const size: number = img.virtualSize;
const bytes: Uint8Array = img.read(0, 512);
const header: HeaderInfo = img.headerInfo();
const map: MapEntry[] = img.map();
const info: QemuStyleInfo = qemuStyleInfo(img);
img.close();
const onProgress: ProgressCallback = (done, total) => void [done, total];
const commit: CommitOptions = { keepTop: true, onProgress };
commitImage('b.qcow2', commit);
void [rebaseImage, streamImage, convertImage, FileBackend, engineMemoryBytes, ERROR_CODES];
// The async API: jobs in worker threads.
const pool = new EnginePool({ size: 2, wasm: new Uint8Array(0) });
const asyncCommit: AsyncCommitOptions = { keepTop: true, pool, signal: new AbortController().signal, onProgress };
const done: Promise<void> = commitAsync('b.qcow2', asyncCommit);
const outcome: Promise<CheckOutcome> = check('b.qcow2', { pool });
void [done, outcome, setEngineSource];
const backend: Backend = new MemoryBackend();
createQcow2On(backend, { size: 1 << 20 });
openImageOn(backend, { writable: true }).close();
try {
  openImage('missing');
} catch (e) {
  if (isCowError(e)) {
    const code: CowErrorCode = e.code;
    const err: CowError = e;
    void [code, err];
  }
}
// @ts-expect-error virtualSize is a number: fails to compile if the types were missing (any)
const wrong: string = img.virtualSize;
void [size, bytes, header, map, info, wrong];
`;

describe('the tarball, installed into a scratch project', () => {
  const project = path.join(scratch, 'consumer');
  const installed = path.join(project, 'node_modules', PKG.name);

  beforeAll(async () => {
    const { tarball } = await packOnce();
    expect(fs.existsSync(tarball)).toBe(true);
    fs.mkdirSync(project);
    fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'cowchain-consumer', version: '0.0.0', private: true, type: 'module' }, null, 2));
    // Dependencies come from npm's cache when it has them, else from the registry.
    ok(await run(NPM, ['install', '--no-audit', '--no-fund', '--ignore-scripts', '--prefer-offline', '--no-package-lock', tarball], project, 600_000), 'npm install <tarball>');
  }, 180_000);

  /** A strict NodeNext consumer's tsconfig (skipLibCheck off) checking `files`. */
  function writeTsconfig(files: string[], lib: string[]): void {
    const compilerOptions = {
      target: 'ES2022',
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      lib,
      strict: true,
      noEmit: true,
      skipLibCheck: false,
      // a Node consumer has @types/node; borrow ours rather than install it
      typeRoots: [path.join(ROOT, 'node_modules/@types')],
      types: ['node'],
    };
    fs.writeFileSync(path.join(project, 'tsconfig.json'), JSON.stringify({ compilerOptions, files }, null, 2));
  }

  it('installs the package with its runtime dependencies', () => {
    expect(fs.existsSync(path.join(installed, 'build/cowchain.wasm'))).toBe(true);
    expect(fs.existsSync(path.join(installed, 'src')), 'src/ was installed').toBe(false);
    for (const dep of Object.keys(PKG.dependencies)) {
      expect(fs.existsSync(path.join(project, 'node_modules', dep, 'package.json')), `dependency ${dep} not installed`).toBe(true);
    }
  });

  it("plain ESM: import { createImage, openImage } from 'cowchain' creates an image and reads it back", async () => {
    fs.writeFileSync(
      path.join(project, 'use.mjs'),
      `import { createImage, openImage, openImageOn, createQcow2On, MemoryBackend, isCowError } from 'cowchain';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
const file = 'made-by-consumer.qcow2';
createImage(file, { format: 'qcow2', size: 4 << 20 });
const data = new Uint8Array(70000).map((_, i) => 1 + (i % 251));
const w = openImage(file, { writable: true });
w.write(123457, data);
w.close();
const r = openImage(file);
const back = r.read(123457, data.length);
const size = r.virtualSize;
r.close();
if (size !== 4 << 20 || !back.every((b, i) => b === data[i])) throw new Error('file image did not read back');
const mem = new MemoryBackend();
createQcow2On(mem, { size: 1 << 20 });
const m = openImageOn(mem, { writable: true });
m.write(0, data.subarray(0, 1000));
if (!m.read(0, 1000).every((b, i) => b === data[i])) throw new Error('memory image did not read back');
m.close();
let deep = 'importable';
try { await import('cowchain/dist/engine/engine.js'); } catch (e) { deep = e.code; }
try { openImage('missing.qcow2'); } catch (e) { if (!isCowError(e)) throw e; }
const version = createRequire(import.meta.url)('cowchain/package.json').version;
console.log(JSON.stringify({ ok: true, bytes: fs.statSync(file).size, deep, version }));
`,
    );
    const out = JSON.parse(ok(await run(process.execPath, ['use.mjs'], project), 'node use.mjs').trim()) as { ok: boolean; bytes: number; deep: string; version: string };
    expect(out.ok).toBe(true);
    expect(out.bytes).toBeGreaterThan(0);
    expect(out.deep, 'internals must not be reachable by deep imports').toBe('ERR_PACKAGE_PATH_NOT_EXPORTED');
    expect(out.version).toBe(PKG.version);
  });

  it('each entry point exports exactly its listed values (test/package/public-api.ts), and no internal path is reachable', async () => {
    fs.writeFileSync(
      path.join(project, 'surface.mjs'),
      `const out = {};
for (const spec of ${JSON.stringify(Object.keys(PUBLIC_VALUES))}) out[spec] = Object.keys(await import(spec)).sort();
const paths = {};
for (const p of ${JSON.stringify(INTERNAL_PATHS)}) {
  try { await import(p); paths[p] = 'importable'; } catch (e) { paths[p] = e.code; }
}
console.log(JSON.stringify({ out, paths }));
`,
    );
    const got = JSON.parse(ok(await run(process.execPath, ['surface.mjs'], project), 'node surface.mjs').trim()) as { out: Record<string, string[]>; paths: Record<string, string> };
    for (const [spec, names] of Object.entries(PUBLIC_VALUES)) {
      expect(got.out[spec], `the values ${spec} exports`).toEqual([...names].sort());
      const leaked = INTERNAL_NAMES.filter((n) => !names.includes(n) && got.out[spec].includes(n));
      expect(leaked, `internals exported by ${spec}`).toEqual([]);
    }
    for (const p of INTERNAL_PATHS) expect(got.paths[p], `${p} must not be importable`).toBe('ERR_PACKAGE_PATH_NOT_EXPORTED');
  });

  // Node's require of ES modules: unflagged from 20.19 (and 22.12); the README says so.
  const [major, minor] = process.versions.node.split('.').map(Number);
  if ((major === 20 && minor >= 19) || (major === 22 && minor >= 12) || major >= 23) {
    it('CommonJS: require() of every entry point gives the same values as import', async () => {
      fs.writeFileSync(
        path.join(project, 'surface.cjs'),
        `const out = {};
for (const spec of ${JSON.stringify(Object.keys(PUBLIC_VALUES))}) out[spec] = Object.keys(require(spec)).sort();
console.log(JSON.stringify(out));
`,
      );
      const r = await run(process.execPath, ['surface.cjs'], project);
      const got = JSON.parse(ok(r, 'node surface.cjs').trim().split('\n').pop()!) as Record<string, string[]>;
      for (const [spec, names] of Object.entries(PUBLIC_VALUES)) expect(got[spec], spec).toEqual([...names].sort());
    });
  }

  /**
   * surface.ts and consumer.ts, type-checked in one program (each program parses @types/node and
   * the dependencies' types again, seconds of CPU): lib ES2022 only, @types/node supplying
   * Symbol.dispose and Disposable as it does for a Node consumer. Each test reads its own file's
   * errors, and the errors of no file (the published .d.ts).
   */
  let checked: Promise<ProcessResult> | undefined;
  function typecheckConsumers(): Promise<ProcessResult> {
    return (checked ??= (async () => {
      fs.writeFileSync(path.join(project, 'surface.ts'), surfaceSource());
      fs.writeFileSync(path.join(project, 'consumer.ts'), CONSUMER_SOURCE);
      writeTsconfig(['surface.ts', 'consumer.ts'], ['ES2022']);
      return run(process.execPath, [CHECK_CONSUMER], project);
    })());
  }
  /** tsc's diagnostics (a line and its indented continuation) that are not about `other`. */
  function diagnosticsBut(r: ProcessResult, other: string): string {
    const blocks: string[] = [];
    for (const line of (r.stdout + r.stderr).split('\n')) {
      if (/^\S/.test(line)) blocks.push(line);
      else if (line.trim() && blocks.length) blocks[blocks.length - 1] += `\n${line}`;
    }
    return blocks.filter((b) => !b.startsWith(other)).join('\n');
  }

  it('tsc: every public name of every entry point imports; internals, deep paths and Image internals do not (strict consumer, skipLibCheck off)', async () => {
    const r = await typecheckConsumers();
    expect(diagnosticsBut(r, 'consumer.ts'), 'tsc --noEmit (surface.ts)').toBe('');
    expect(r.status === 0 || diagnosticsBut(r, 'surface.ts') !== '', `tsc failed without a diagnostic: ${r.stdout}${r.stderr}`).toBe(true);
  });

  it('the published types type-check in a strict NodeNext consumer (skipLibCheck off)', async () => {
    const r = await typecheckConsumers();
    expect(diagnosticsBut(r, 'surface.ts'), 'tsc --noEmit (consumer.ts)').toBe('');
    expect(r.status === 0 || diagnosticsBut(r, 'consumer.ts') !== '', `tsc failed without a diagnostic: ${r.stdout}${r.stderr}`).toBe(true);
  });

  it('Deno runs examples/deno.ts from the installed tarball: offline (empty DENO_DIR, --cached-only), no permissions', async () => {
    const deno = findDeno();
    expect(deno.cmd, `no Deno (tried ${deno.tried.join(', ')})`).not.toBeNull();
    fs.copyFileSync(path.join(ROOT, 'examples/deno.ts'), path.join(project, 'deno.ts'));
    const denoDir = fs.mkdtempSync(path.join(scratch, 'deno-dir-'));
    const r = await runProcess(deno.cmd!.file, [...deno.cmd!.prefix, 'run', '--no-prompt', '--no-lock', '--cached-only', 'deno.ts'], {
      cwd: project,
      env: { ...cleanEnv(), DENO_DIR: denoDir, NO_COLOR: '1' },
      stdinFile: path.join(installed, 'build/cowchain.wasm'),
      timeoutMs: 600_000,
    });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toContain('deno: written under Deno');
  });

  it('the bin runs through npx: cowchain img info', async () => {
    const file = path.join(project, 'for-cli.qcow2');
    ok(await run(NPX, ['--no-install', 'cowchain', 'img', 'create', '-f', 'qcow2', file, '2M'], project), 'npx cowchain img create');
    // npx runs node_modules/.bin/cowchain, the link npm install made; the other commands run that
    // link directly (npx's own start costs about a second of CPU each time).
    const bin = path.join(project, 'node_modules', '.bin', process.platform === 'win32' ? 'cowchain.cmd' : 'cowchain');
    const info = JSON.parse(ok(await run(bin, ['img', 'info', '--output=json', file], project), 'cowchain img info')) as Record<string, unknown>;
    expect(info['virtual-size']).toBe(2 << 20);
    expect(info.format).toBe('qcow2');
    expect(ok(await run(bin, ['--help'], project), 'cowchain --help')).toContain('Usage: cowchain');
  });
});
