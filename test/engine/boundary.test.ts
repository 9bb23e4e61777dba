// What is copied by hand across the wasm boundary must not drift: the error codes the engine
// raises (assembly/errors.ts) against the host's list (src/errors.ts), the block-status flags
// (assembly/layout.ts ST_* against src/engine/block-status.ts), the AES-ECB selectors of the
// `ecb` import (assembly/io.ts ECB_* against src/engine/luks.ts), and the engine's exports
// (build/cowchain.wasm) against the host's typed view of them (RawExports in
// src/engine/engine.ts): the same names, and the same number of parameters.
import * as fs from 'node:fs';
import * as path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { BLOCK_STATUS } from '../../src/engine/block-status.js';
import { ECB_DECRYPT, ECB_ENCRYPT, ECB_TWEAK } from '../../src/engine/luks.js';
import { ERROR_CODES } from '../../src/errors.js';
import { ROOT } from '../support/bundle.js';

/** The parts of the WebAssembly JS API used here (not declared by Node 20's types). */
interface WasmApi {
  Module: { new (bytes: Uint8Array): object; exports(m: object): { name: string; kind: string }[] };
  Instance: new (m: object, imports: object) => { exports: Record<string, unknown> };
}
const Wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

const read = (rel: string) => fs.readFileSync(path.join(ROOT, rel), 'utf8');

/** `export const NAME[: type] = value;` declarations of an AssemblyScript file whose name matches. */
function engineConstants(rel: string, name: RegExp): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of read(rel).matchAll(/^export const (\w+)(?::\s*\w+)?\s*=\s*([^;]+);/gm)) if (name.test(m[1])) out.set(m[1], m[2].trim());
  return out;
}

/** Every .ts file under assembly/. */
function engineSources(): string[] {
  return fs.readdirSync(path.join(ROOT, 'assembly'), { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts')).map((f) => path.join('assembly', f));
}

/** The members of RawExports in src/engine/engine.ts, with their parameter counts (-1: not a method). */
function hostView(): Map<string, number> {
  const file = 'src/engine/engine.ts';
  const src = ts.createSourceFile(file, read(file), ts.ScriptTarget.ES2022, true);
  const members = new Map<string, number>();
  const visit = (node: ts.Node) => {
    if (ts.isInterfaceDeclaration(node) && node.name.text === 'RawExports') {
      for (const m of node.members) {
        if (ts.isMethodSignature(m)) members.set(m.name.getText(src), m.parameters.length);
        else if (ts.isPropertySignature(m)) members.set(m.name.getText(src), -1);
      }
    }
    ts.forEachChild(node, visit);
  };
  visit(src);
  return members;
}

describe('the wasm boundary', () => {
  it('every error code the engine raises is one the host knows (src/errors.ts ERROR_CODES)', () => {
    const declared = engineConstants('assembly/errors.ts', /^E_/);
    expect(declared.size, 'E_* codes found in assembly/errors.ts').toBeGreaterThan(10);
    for (const [name, value] of declared) {
      const code = /^"(ECOW_[A-Z0-9_]+)"$/.exec(value)?.[1];
      expect(code, `${name} = ${value}`).toBeDefined();
      expect(Object.keys(ERROR_CODES), `${name} = ${value}`).toContain(code);
    }
    // No code spelled out elsewhere in the engine, past the list.
    for (const file of engineSources()) {
      if (file === path.join('assembly', 'errors.ts')) continue;
      expect(read(file).match(/"ECOW_[A-Z0-9_]*"/g) ?? [], file).toEqual([]);
    }
  });

  it('the block-status flags are the same on both sides', () => {
    const engine = engineConstants('assembly/layout.ts', /^ST_/);
    const fromEngine = Object.fromEntries([...engine].map(([k, v]) => [k.slice(3), Number(v)]));
    expect(fromEngine).toEqual({ ...BLOCK_STATUS });
  });

  it("the ecb import's key and direction selectors are the same on both sides", () => {
    const engine = Object.fromEntries([...engineConstants('assembly/io.ts', /^ECB_/)].map(([k, v]) => [k, Number(v)]));
    expect(engine).toEqual({ ECB_TWEAK, ECB_DECRYPT, ECB_ENCRYPT });
  });

  it('the engine exports exactly what the host declares, with the same number of parameters', () => {
    const module = new Wasm.Module(fs.readFileSync(path.join(ROOT, 'build/cowchain.wasm')));
    const exported = new Map(Wasm.Module.exports(module).map((e) => [e.name, e.kind]));
    const declared = hostView();
    // Added by @assemblyscript/loader on top of the wasm exports.
    for (const loader of ['__getString', '__newString']) declared.delete(loader);
    expect(declared.size, 'RawExports members found').toBeGreaterThan(20);
    // The AssemblyScript runtime's own exports the host does not use.
    const runtime = new Set(['__new', '__pin', '__unpin', '__rtti_base']);
    const unused = [...exported.keys()].filter((n) => !declared.has(n) && !runtime.has(n));
    expect(unused, 'exported by the engine but missing from RawExports').toEqual([]);
    const missing = [...declared.keys()].filter((n) => !exported.has(n));
    expect(missing, 'declared in RawExports but not exported by the engine').toEqual([]);

    // Arity: an exported wasm function's length is its parameter count. Strings cross as one
    // pointer, so the counts agree one to one.
    const instance = new Wasm.Instance(module, {
      host: { read: () => 0, write: () => 0, size: () => 0, extent: () => 0, allocated: () => -1, truncate: () => 0, flush: () => 0, decompress: () => -1, compress: () => -1, ecb: () => undefined },
      env: { abort: () => undefined },
    });
    for (const [name, params] of declared) {
      const value = instance.exports[name];
      if (params < 0) {
        expect(typeof value, `${name}: a property`).not.toBe('function');
        continue;
      }
      expect(typeof value, name).toBe('function');
      expect((value as (...a: unknown[]) => unknown).length, `${name}: parameters`).toBe(params);
    }
  });
});
