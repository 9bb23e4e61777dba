// A host-supplied engine (setEngineSource, EnginePool's `wasm`): wasm bytes or a compiled
// WebAssembly.Module, for hosts where the package's own build/cowchain.wasm cannot be read. Every
// load failure is a CowError ECOW_ENGINE_LOAD — bad bytes, a module that is not our engine, an
// unreadable package file, a missing worker script — never a bare ENOENT or CompileError.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { buildSync } from 'esbuild';
import { afterAll, describe, expect, it } from 'vitest';
import { CowError, EnginePool, commit, createImage, openImage, setEngineSource } from '../../src/index.js';
import { engineWorkerScript, setEngineWorkerScript } from '../../src/worker/worker-script.js';
import { REQUIRE_BANNER, ROOT } from '../support/engine-worker.js';
import { tmpDir } from '../support/qemu.js';

const WASM = fs.readFileSync(path.join(ROOT, 'build/cowchain.wasm'));
/** The smallest valid wasm module: compiles, exports nothing. */
const EMPTY_MODULE = Uint8Array.from([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]);
const dir = tmpDir('cowchain-engine-source-');
const pools: EnginePool[] = [];
afterAll(async () => {
  for (const p of pools) await p.close();
});

function loadError(fn: () => unknown): CowError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(CowError);
    return e as CowError;
  }
  throw new Error('expected ECOW_ENGINE_LOAD, nothing was thrown');
}

/** Works with the engine in use: create, write, read back. */
function roundTrip(name: string): void {
  const file = path.join(dir, name);
  createImage(file, { format: 'qcow2', size: 1 << 20 });
  const img = openImage(file, { writable: true });
  img.write(4096, Buffer.from('hello'));
  expect(Buffer.from(img.read(4096, 5)).toString()).toBe('hello');
  img.close();
}

describe('setEngineSource', () => {
  it('runs a host-supplied engine: wasm bytes, an ArrayBuffer or a compiled WebAssembly.Module', () => {
    setEngineSource(new Uint8Array(WASM));
    roundTrip('bytes.qcow2');
    setEngineSource(WASM.buffer.slice(WASM.byteOffset, WASM.byteOffset + WASM.byteLength));
    roundTrip('arraybuffer.qcow2');
    setEngineSource(new WebAssembly.Module(WASM));
    roundTrip('module.qcow2');
  });

  it('a bad source is ECOW_ENGINE_LOAD naming what is wrong, and changes nothing', () => {
    const garbage = loadError(() => setEngineSource(Buffer.from('not wasm at all')));
    expect(garbage.code).toBe('ECOW_ENGINE_LOAD');
    expect(garbage.message).toMatch(/does not compile/);
    const empty = loadError(() => setEngineSource(EMPTY_MODULE));
    expect(empty.code).toBe('ECOW_ENGINE_LOAD');
    expect(empty.message).toMatch(/lacks the export|does not instantiate/);
    const wrongType = loadError(() => setEngineSource({ not: 'a module' }));
    expect(wrongType.code).toBe('ECOW_ENGINE_LOAD');
    expect(wrongType.message).toContain('[object Object]');
    roundTrip('after-failures.qcow2'); // the engine in use is still the good one
  });
});

describe('EnginePool with a host-supplied engine', () => {
  it('runs jobs with the given module; bad bytes fail the job with ECOW_ENGINE_LOAD', async () => {
    const good = new EnginePool({ size: 1, wasm: new WebAssembly.Module(WASM) });
    pools.push(good);
    createImage(path.join(dir, 'b.qcow2'), { format: 'qcow2', size: 1 << 20 });
    createImage(path.join(dir, 't.qcow2'), { format: 'qcow2', backingFile: 'b.qcow2' });
    await commit(path.join(dir, 't.qcow2'), { pool: good });
    const bad = new EnginePool({ size: 1, wasm: Buffer.from('garbage') });
    pools.push(bad);
    const err = await commit(path.join(dir, 't.qcow2'), { pool: bad }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CowError);
    expect((err as CowError).code).toBe('ECOW_ENGINE_LOAD');
    // A module that compiles but is not the engine fails in the worker, as the same code.
    const empty = new EnginePool({ size: 1, wasm: EMPTY_MODULE });
    pools.push(empty);
    const err2 = await commit(path.join(dir, 't.qcow2'), { pool: empty }).catch((e: unknown) => e);
    expect((err2 as CowError).code).toBe('ECOW_ENGINE_LOAD');
  });

  it('a missing worker script is ECOW_ENGINE_LOAD', async () => {
    const pool = new EnginePool({ size: 1 });
    pools.push(pool);
    const previous = engineWorkerScript();
    setEngineWorkerScript(pathToFileURL(path.join(dir, 'no-such-worker.js')));
    try {
      const err = await commit(path.join(dir, 't.qcow2'), { pool }).catch((e: unknown) => e);
      expect((err as CowError).code).toBe('ECOW_ENGINE_LOAD');
      expect((err as CowError).message).toContain('no-such-worker.js');
    } finally {
      setEngineWorkerScript(previous);
    }
  });
});

describe('the package engine file unreadable', () => {
  it('opening an image is ECOW_ENGINE_LOAD (not ENOENT) and says how to supply the engine', () => {
    // A bundle of the library placed where ../../build/cowchain.wasm does not exist.
    const home = fs.mkdtempSync(path.join(dir, 'nowasm-'));
    const entry = path.join(home, 'entry.ts');
    fs.writeFileSync(
      entry,
      `import { createImage } from ${JSON.stringify(path.join(ROOT, 'src/index.ts'))};
try { createImage(${JSON.stringify(path.join(home, 'x.qcow2'))}, { format: 'qcow2', size: 65536 }); console.log('created'); }
catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`,
    );
    const out = path.join(home, 'a', 'b', 'nowasm.mjs');
    buildSync({ entryPoints: [entry], outfile: out, bundle: true, platform: 'node', format: 'esm', target: 'node20', logLevel: 'warning', banner: { js: REQUIRE_BANNER } });
    const r = spawnSync(process.execPath, [out], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const got = JSON.parse(r.stdout.trim()) as { code: string; message: string };
    expect(got.code).toBe('ECOW_ENGINE_LOAD');
    expect(got.message).toContain('cowchain.wasm');
    expect(got.message).toContain('setEngineSource');
  });
});
