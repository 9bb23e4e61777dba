import { CowError } from '../errors.js';
import { readBuildFile } from './build-file.js';

/**
 * zstd clusters for compressed output, encoded by zstd's reference encoder (libzstd compiled to
 * wasm by the @bokuweb/zstd-wasm package; scripts/extract-zstd.mjs copies the module to
 * build/zstd-encoder.wasm with the map of its minified export names). Driven as qemu's
 * qcow2_zstd_compress drives libzstd: one frame per cluster at libzstd's default level (3), no
 * checksum, into a buffer of at most `capacity` bytes; a cluster whose frame does not fit is not
 * compressed (qemu then writes it as a normal cluster).
 */

/** libzstd's default level (ZSTD_CLEVEL_DEFAULT), the one qemu leaves in place. */
const ZSTD_DEFAULT_LEVEL = 3;

/** After a call leaves the module's memory larger than this, the next cluster gets a fresh instance. */
const MEMORY_KEEP_BYTES = 32 << 20;

interface EncoderExports {
  memory: WebAssembly.Memory;
  malloc(size: number): number;
  free(ptr: number): void;
  ZSTD_compress(dst: number, dstCap: number, src: number, srcSize: number, level: number): number;
  ZSTD_isError(code: number): number;
}

interface NameMap {
  exports: Record<string, string>;
  imports: Record<string, string>;
}

let compiled: { module: WebAssembly.Module; names: NameMap } | undefined;
let instance: EncoderExports | undefined;

function load(): { module: WebAssembly.Module; names: NameMap } {
  if (compiled) return compiled;
  const bytes = readBuildFile('zstd-encoder.wasm', 'zstd encoder');
  const names = JSON.parse(readBuildFile('zstd-encoder.json', 'zstd encoder export map').toString('utf8')) as NameMap;
  compiled = { module: new WebAssembly.Module(bytes), names };
  return compiled;
}

function encoder(): EncoderExports {
  if (instance) return instance;
  const { module, names } = load();
  let memory: WebAssembly.Memory | undefined;
  const fatal = (what: string) => () => {
    throw new CowError('ECOW_INTERNAL', `zstd encoder: ${what}`);
  };
  // The emscripten runtime's imports: only heap growth matters to a synchronous encoder.
  const env: Record<string, (...args: number[]) => number | void> = {
    __abort_js: fatal('abort'),
    _proc_exit: fatal('exit'),
    __emscripten_runtime_keepalive_clear: () => {},
    __setitimer_js: () => 0,
    _emscripten_resize_heap: (requested: number) => {
      const buffer = memory!.buffer;
      const pages = Math.ceil(((requested >>> 0) - buffer.byteLength) / 65536);
      try {
        memory!.grow(Math.max(pages, 0));
        return 1;
      } catch {
        return 0;
      }
    },
  };
  const imports: Record<string, (...args: number[]) => number | void> = {};
  for (const [name, minified] of Object.entries(names.imports)) {
    const fn = env[name];
    if (!fn) throw new CowError('ECOW_ENGINE_LOAD', `zstd encoder imports ${name}, which this host does not provide`);
    imports[minified] = fn;
  }
  const raw = new WebAssembly.Instance(module, { a: imports }).exports as Record<string, unknown>;
  const pick = (name: string) => raw[names.exports[name] ?? ''];
  memory = pick('memory') as WebAssembly.Memory;
  (pick('init') as () => void)();
  instance = {
    memory,
    malloc: pick('malloc') as EncoderExports['malloc'],
    free: pick('free') as EncoderExports['free'],
    ZSTD_compress: pick('ZSTD_compress') as EncoderExports['ZSTD_compress'],
    ZSTD_isError: pick('ZSTD_isError') as EncoderExports['ZSTD_isError'],
  };
  return instance;
}

/** One cluster as a zstd frame of at most `capacity` bytes, or null when it does not fit. */
export function zstdCompressCluster(src: Uint8Array, capacity: number): Uint8Array | null {
  const z = encoder();
  const inPtr = z.malloc(src.length);
  const outPtr = z.malloc(capacity);
  try {
    if (!inPtr || !outPtr) throw new CowError('ECOW_INTERNAL', `zstd encoder: out of memory for a ${src.length}-byte cluster`);
    new Uint8Array(z.memory.buffer).set(src, inPtr);
    const n = z.ZSTD_compress(outPtr, capacity, inPtr, src.length, ZSTD_DEFAULT_LEVEL) >>> 0;
    // An error here is "destination too small" (the frame does not fit), as for qemu's -ENOMEM.
    if (z.ZSTD_isError(n)) return null;
    return new Uint8Array(z.memory.buffer, outPtr, n).slice();
  } finally {
    if (inPtr) z.free(inPtr);
    if (outPtr) z.free(outPtr);
    if (z.memory.buffer.byteLength > MEMORY_KEEP_BYTES) instance = undefined;
  }
}
