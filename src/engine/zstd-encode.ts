import { CowError } from '../errors.js';
import { readBuildFile } from './build-file.js';

/**
 * zstd clusters for compressed output, encoded by zstd's reference encoder (libzstd compiled to
 * wasm by the @bokuweb/zstd-wasm package; scripts/extract-zstd.mjs copies the module to
 * build/zstd-encoder.wasm with the map of its minified export names). Driven as qemu's
 * qcow2_zstd_compress drives libzstd: one frame per cluster at libzstd's default level (3), no
 * checksum; a cluster whose frame is longer than `capacity` bytes is not compressed (qemu then
 * writes it as a normal cluster). qemu's streaming call compresses into libzstd's own buffer and
 * fails only when the finished frame does not fit; a one-shot call into exactly `capacity`
 * bytes fails a few bytes earlier (the entropy coders want slack), so the frame is made in a
 * buffer of ZSTD_compressBound bytes and then measured against `capacity`.
 *
 * One compression context and one pair of buffers serve every cluster (ZSTD_compress_usingDict
 * without a dictionary is ZSTD_compressCCtx: the same parameters and frame as ZSTD_compress).
 * ZSTD_compress makes a context per call, and in this wasm build (no bulk memory) allocating
 * and zeroing its match tables (hundreds of KiB at level 3) was a third of the CPU
 * time of a cluster; a reused context keeps its tables and only moves their window on.
 */

/** libzstd's default level (ZSTD_CLEVEL_DEFAULT), the one qemu leaves in place. */
const ZSTD_DEFAULT_LEVEL = 3;

/** After a call leaves the module's memory larger than this, the next cluster gets a fresh instance. */
const MEMORY_KEEP_BYTES = 32 << 20;

interface EncoderExports {
  memory: WebAssembly.Memory;
  malloc(size: number): number;
  free(ptr: number): void;
  ZSTD_createCCtx(): number;
  ZSTD_compress_usingDict(cctx: number, dst: number, dstCap: number, src: number, srcSize: number, dict: number, dictSize: number, level: number): number;
  ZSTD_isError(code: number): number;
  ZSTD_compressBound(srcSize: number): number;
}

/** An instance with its one context and its input and output buffers (`bytes` each). */
interface Encoder extends EncoderExports {
  cctx: number;
  inPtr: number;
  outPtr: number;
  bytes: number;
}

interface NameMap {
  exports: Record<string, string>;
  imports: Record<string, string>;
}

let compiled: { module: WebAssembly.Module; names: NameMap } | undefined;
let instance: Encoder | undefined;

function load(): { module: WebAssembly.Module; names: NameMap } {
  if (compiled) return compiled;
  const bytes = readBuildFile('zstd-encoder.wasm', 'zstd encoder');
  const names = JSON.parse(readBuildFile('zstd-encoder.json', 'zstd encoder export map').toString('utf8')) as NameMap;
  compiled = { module: new WebAssembly.Module(bytes), names };
  return compiled;
}

function encoder(): Encoder {
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
  const z: EncoderExports = {
    memory,
    malloc: pick('malloc') as EncoderExports['malloc'],
    free: pick('free') as EncoderExports['free'],
    ZSTD_createCCtx: pick('ZSTD_createCCtx') as EncoderExports['ZSTD_createCCtx'],
    ZSTD_compress_usingDict: pick('ZSTD_compress_usingDict') as EncoderExports['ZSTD_compress_usingDict'],
    ZSTD_isError: pick('ZSTD_isError') as EncoderExports['ZSTD_isError'],
    ZSTD_compressBound: pick('ZSTD_compressBound') as EncoderExports['ZSTD_compressBound'],
  };
  const cctx = z.ZSTD_createCCtx();
  if (!cctx) throw new CowError('ECOW_INTERNAL', 'zstd encoder: out of memory for a compression context');
  instance = { ...z, cctx, inPtr: 0, outPtr: 0, bytes: 0 };
  return instance;
}

/** One cluster as a zstd frame of at most `capacity` bytes, or null when it does not fit. */
export function zstdCompressCluster(src: Uint8Array, capacity: number): Uint8Array | null {
  const z = encoder();
  try {
    const bound = z.ZSTD_compressBound(src.length) >>> 0;
    const need = Math.max(src.length, bound);
    if (z.bytes < need) {
      if (z.inPtr) z.free(z.inPtr);
      if (z.outPtr) z.free(z.outPtr);
      z.inPtr = z.malloc(need);
      z.outPtr = z.malloc(need);
      z.bytes = z.inPtr && z.outPtr ? need : 0;
      if (!z.bytes) throw new CowError('ECOW_INTERNAL', `zstd encoder: out of memory for a ${src.length}-byte cluster`);
    }
    new Uint8Array(z.memory.buffer).set(src, z.inPtr);
    const n = z.ZSTD_compress_usingDict(z.cctx, z.outPtr, bound, z.inPtr, src.length, 0, 0, ZSTD_DEFAULT_LEVEL) >>> 0;
    if (z.ZSTD_isError(n)) throw new CowError('ECOW_INTERNAL', `zstd encoder: error ${n} on a ${src.length}-byte cluster`);
    // A frame that does not fit is qemu's -ENOMEM: the cluster is written uncompressed.
    if (n > capacity) return null;
    return new Uint8Array(z.memory.buffer, z.outPtr, n).slice();
  } catch (e) {
    instance = undefined; // a trap may leave the module's heap in any state
    throw e;
  } finally {
    if (z.memory.buffer.byteLength > MEMORY_KEEP_BYTES) instance = undefined;
  }
}
