import { readBuildFile } from './build-file.js';

/**
 * zstd clusters, decoded by zstd's own reference decoder (libzstd compiled to wasm, taken from the
 * zstddec package at build time: scripts/extract-zstd.mjs) and driven the way qemu's
 * qcow2_zstd_decompress drives libzstd, so that we accept and produce what qemu does:
 *
 *  - ZSTD_decompressStream into a one-cluster buffer, looping (the input may hold more than one
 *    frame) until the buffer is full, an error, or no progress;
 *  - success only when the buffer is full and the last call said its frame ended there (a frame
 *    that would yield more than a cluster is damage);
 *  - whatever follows in the input is never read: qemu reads whole sectors, so the bytes after a
 *    cluster's frame are padding or the next cluster's frame.
 *
 * A pure-JS decoder (fzstd) used to do this; it refuses streams libzstd decodes (its Huffman
 * checks differ), so images qemu reads failed here. docs/qemu-differences.md names the one
 * difference left: libzstd versions disagree with each other on some damaged streams.
 */

/** libzstd's error codes are the last ZSTD_error_maxCode values of size_t (here 32-bit). */
const ZSTD_ERROR_MAX_CODE = 120;

/**
 * After a call leaves the module's memory larger than this, the instance is dropped and the next
 * cluster gets a fresh one. A damaged frame without a content size may declare a 128 MiB window,
 * which libzstd allocates; wasm memory never shrinks, and one bad cluster should not pin it.
 * (The module starts with 16 MiB; a 2 MiB cluster with its frame needs a few more.)
 */
const MEMORY_KEEP_BYTES = 48 << 20;

interface ZstdExports {
  memory: WebAssembly.Memory;
  malloc(size: number): number;
  free(ptr: number): void;
  ZSTD_createDCtx(): number;
  ZSTD_freeDCtx(dctx: number): number;
  ZSTD_decompressStream(dctx: number, output: number, input: number): number;
}

let compiled: WebAssembly.Module | undefined;
let instance: ZstdExports | undefined;
/**
 * A decoding context kept between clusters: creating one allocates and clears ~160 KiB, which
 * cost more than decoding a cluster. It is kept only after a frame ended cleanly (then libzstd
 * expects a new frame); after an error it is freed.
 */
let kept = 0;

function decoder(): ZstdExports {
  if (instance) return instance;
  compiled ??= new WebAssembly.Module(readBuildFile('zstd-decoder.wasm', 'zstd decoder'));
  // The module tells its host when memory grows; views are re-made on every use instead.
  const wasm = new WebAssembly.Instance(compiled, { env: { emscripten_notify_memory_growth: () => {} } });
  instance = wasm.exports as unknown as ZstdExports;
  kept = 0;
  return instance;
}

/** One cluster from `src` as qemu decodes it, or null where qemu would fail the read (-EIO). */
export function zstdClusterAsQemu(src: Uint8Array, clusterSize: number): Uint8Array | null {
  const z = decoder();
  const inPtr = z.malloc(src.length);
  const outPtr = z.malloc(clusterSize);
  // ZSTD_inBuffer and ZSTD_outBuffer: { pointer, size, pos }, 32-bit fields in wasm32.
  const inBuf = z.malloc(12);
  const outBuf = z.malloc(12);
  const dctx = kept || z.ZSTD_createDCtx();
  kept = 0;
  let clean = false;
  try {
    if (!inPtr || !outPtr || !inBuf || !outBuf || !dctx) return null;
    new Uint8Array(z.memory.buffer).set(src, inPtr);
    let view = new DataView(z.memory.buffer);
    view.setUint32(inBuf, inPtr, true);
    view.setUint32(inBuf + 4, src.length, true);
    view.setUint32(inBuf + 8, 0, true);
    view.setUint32(outBuf, outPtr, true);
    view.setUint32(outBuf + 4, clusterSize, true);
    view.setUint32(outBuf + 8, 0, true);
    let ret = 0;
    for (;;) {
      view = new DataView(z.memory.buffer);
      const inBefore = view.getUint32(inBuf + 8, true);
      const outBefore = view.getUint32(outBuf + 8, true);
      ret = z.ZSTD_decompressStream(dctx, outBuf, inBuf) >>> 0;
      if (ret > 2 ** 32 - 1 - ZSTD_ERROR_MAX_CODE) return null;
      view = new DataView(z.memory.buffer);
      const inPos = view.getUint32(inBuf + 8, true);
      const outPos = view.getUint32(outBuf + 8, true);
      if (outPos === clusterSize) break;
      if (inPos <= inBefore && outPos <= outBefore) return null; // no progress: input ran out
    }
    // ret > 0: the frame goes on past a full cluster.
    clean = ret === 0;
    return clean ? new Uint8Array(z.memory.buffer, outPtr, clusterSize).slice() : null;
  } finally {
    for (const p of [inPtr, outPtr, inBuf, outBuf]) if (p) z.free(p);
    if (z.memory.buffer.byteLength > MEMORY_KEEP_BYTES) {
      instance = undefined; // the context goes with it
    } else if (clean) {
      kept = dctx;
    } else if (dctx) {
      z.ZSTD_freeDCtx(dctx);
    }
  }
}
