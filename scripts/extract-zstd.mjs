// `npm run build:zstd`: write build/zstd-decoder.wasm, the zstd reference decoder (libzstd,
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
