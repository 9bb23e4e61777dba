// The bin compiles the engine's wasm asynchronously from its start (src/cli/bin.cjs), and the
// engine takes that module (offerCompiledEngine) instead of compiling build/cowchain.wasm on the
// main thread when a command first needs it.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI_MAIN } from '../support/cli.js';
import { ROOT } from '../support/bundle.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cowchain-engine-early-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A preload that counts synchronous wasm compiles (new WebAssembly.Module) and reports them at exit, on stderr. */
const preload = path.join(dir, 'count-compiles.cjs');
fs.writeFileSync(
  preload,
  `let n = 0;
const Module = WebAssembly.Module;
WebAssembly.Module = new Proxy(Module, { construct(target, args) { n++; return Reflect.construct(target, args); } });
process.on('exit', () => process.stderr.write('sync-compiles=' + n + '\\n'));`,
);

describe('the engine compiled early', () => {
  it('the bin compiles no wasm on its main thread for a command that uses the engine, and a usage error still reads as before', () => {
    const image = path.join(dir, 'a.qcow2');
    const run = (...args: string[]) => spawnSync(process.execPath, ['-r', preload, CLI_MAIN, ...args], { encoding: 'utf8' });
    const create = run('img', 'create', '-q', '-f', 'qcow2', image, '1M');
    expect({ status: create.status, stderr: create.stderr }).toEqual({ status: 0, stderr: 'sync-compiles=0\n' });
    const info = run('img', 'info', '--output', 'json', image);
    expect(info.status).toBe(0);
    expect(JSON.parse(info.stdout)).toMatchObject({ format: 'qcow2', 'virtual-size': 1 << 20 });
    expect(info.stderr).toBe('sync-compiles=0\n');
    const usage = run('img', 'info');
    expect(usage.status).toBe(2);
    expect(usage.stderr).toMatch(/^cowchain: ECOW_USAGE: .*\nsync-compiles=0\n$/);
  });

  it('offerCompiledEngine: the engine takes the module offered before it compiled one, and keeps the first', () => {
    const script = `
      const fs = require('node:fs');
      const { offerCompiledEngine, engineModule } = await import(${JSON.stringify(path.join(ROOT, 'dist/engine/engine.js'))});
      const bytes = fs.readFileSync(${JSON.stringify(path.join(ROOT, 'build/cowchain.wasm'))});
      const first = await WebAssembly.compile(bytes);
      offerCompiledEngine(first);
      const taken = engineModule() === first;
      offerCompiledEngine(await WebAssembly.compile(bytes));
      process.stdout.write(JSON.stringify({ taken, kept: engineModule() === first }));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', `const require = (await import('node:module')).createRequire(import.meta.url);${script}`], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({ taken: true, kept: true });
  });
});
