// `npm run build:zstd`: write build/zstd-decoder.wasm (and, at the end, the encoder), the zstd reference decoder (libzstd,
// BSD-3-Clause) that the zstddec package ships as base64 inside its JavaScript. We drive that
// module's streaming API ourselves, the way qemu drives libzstd (src/engine/zstd.ts), which the
// package's own wrapper does not allow; the bytes come from the version package-lock.json pins.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const file = fileURLToPath(import.meta.resolve('zstddec/stream'));
const source = fs.readFileSync(file, 'utf8');
const literal = source.match(/"([A-Za-z0-9+/=]{10000,})"/);
if (!literal) throw new Error(`build:zstd: no embedded wasm found in ${file}`);
const bytes = Buffer.from(literal[1], 'base64');
const wanted = ['memory', 'malloc', 'free', 'ZSTD_createDCtx', 'ZSTD_freeDCtx', 'ZSTD_decompressStream'];
const exported = WebAssembly.Module.exports(new WebAssembly.Module(bytes)).map((e) => e.name);
const missing = wanted.filter((n) => !exported.includes(n));
if (missing.length) throw new Error(`build:zstd: the zstddec wasm lacks ${missing.join(', ')}`);
fs.mkdirSync(path.join(root, 'build'), { recursive: true });
fs.writeFileSync(path.join(root, 'build/zstd-decoder.wasm'), bytes);

// build/zstd-encoder.wasm: zstd's reference encoder (libzstd, BSD-3-Clause) as the
// @bokuweb/zstd-wasm package compiles it, for `convert -c -o compression_type=zstd`. Its
// emscripten build minifies export and import names; the package's glue code names them, so the
// names are read from there and written beside the module (build/zstd-encoder.json), and the
// module is driven synchronously by src/engine/zstd-encode.ts.
const encDir = path.dirname(fileURLToPath(import.meta.resolve('@bokuweb/zstd-wasm')));
const encBytes = fs.readFileSync(path.join(encDir, 'zstd.wasm'));
const glue = fs.readFileSync(path.join(encDir, 'zstd.js'), 'utf8');
const names = {};
for (const m of glue.matchAll(/var (_\w+) = \(Module\['\1'\] = \([^)]*\) => \(\1 = Module\['\1'\] = wasmExports\['(\w+)'\]\)/g)) names[m[1].slice(1)] = m[2];
const mem = glue.match(/wasmMemory = wasmExports\['(\w+)'\]/);
const ctors = glue.match(/___wasm_call_ctors = \(\) => \(___wasm_call_ctors = wasmExports\['(\w+)'\]\)/);
const importBlock = glue.match(/var wasmImports = \{([^}]*)\}/);
if (!mem || !ctors || !importBlock) throw new Error(`build:zstd: cannot read the export names from ${encDir}/zstd.js`);
names.memory = mem[1];
names.init = ctors[1];
const imports = {};
for (const m of importBlock[1].matchAll(/(\w+): (\w+)/g)) imports[m[2]] = m[1];
const wantedEnc = ['memory', 'init', 'malloc', 'free', 'ZSTD_createCCtx', 'ZSTD_compress_usingDict', 'ZSTD_compressBound', 'ZSTD_isError'];
const encExports = WebAssembly.Module.exports(new WebAssembly.Module(encBytes)).map((e) => e.name);
const missingEnc = wantedEnc.filter((n) => !names[n] || !encExports.includes(names[n]));
if (missingEnc.length) throw new Error(`build:zstd: the @bokuweb/zstd-wasm module lacks ${missingEnc.join(', ')}`);
if (!imports._emscripten_resize_heap) throw new Error('build:zstd: the @bokuweb/zstd-wasm module imports no heap resize');
fs.writeFileSync(path.join(root, 'build/zstd-encoder.wasm'), encBytes);
fs.writeFileSync(path.join(root, 'build/zstd-encoder.json'), JSON.stringify({ exports: names, imports }, null, 1) + '\n');
