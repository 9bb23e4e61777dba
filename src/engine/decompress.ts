import { nodeZlib, pako } from '../load-on-use.js';
import { CowError } from '../errors.js';
import { zstdClusterAsQemu } from './zstd.js';

/**
 * Decompression is a host import rather than wasm code: Node's zlib is native (faster than any
 * inflate we would compile to wasm) and Deno provides the same `node:zlib`, with pako (pure JS)
 * where qemu's acceptance differs from Node's (see deflateCluster); zstd is zstd's
 * reference decoder compiled to wasm (zstd.ts). Compressed clusters are rare on
 * the commit path (only in bases made by `convert -c`), so the boundary crossing is cheap.
 *
 * Both decoders must yield exactly one cluster; the input may carry padding past the end of the
 * compressed stream (it is read in whole 512-byte sectors).
 */
export function inflateCluster(type: number, src: Uint8Array, clusterSize: number): Uint8Array | null {
  try {
    if (type === 0) return deflateCluster(src, clusterSize);
    if (type === 1) return zstdClusterAsQemu(src, clusterSize);
  } catch (e) {
    if (e instanceof CowError) throw e; // the decoder itself is missing: not the cluster's fault
    return null;
  }
  return null;
}

/**
 * Decode one deflate cluster. qemu runs a single inflate(Z_FINISH) into a one-cluster buffer and
 * accepts the result once that buffer is full, whatever follows in the stream: more output, or
 * damage past the cluster's worth. Node's inflate (native, fast) throws in both cases, so when it
 * fails, the cluster is decoded again with pako, a port of zlib driven exactly as qemu drives it.
 */
function deflateCluster(src: Uint8Array, clusterSize: number): Uint8Array | null {
  try {
    // qemu writes raw deflate (no zlib header) with a 4 KiB window; a larger window decodes it too.
    const zlib = nodeZlib();
    const out = zlib.inflateRawSync(src, { finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: clusterSize });
    if (out.length === clusterSize) return out;
  } catch {
    // fall through to the exact decoder
  }
  return deflateClusterAsQemu(src, clusterSize);
}

/** qemu's qcow2_zlib_decompress: raw deflate, window 2^12, one call, success when the output is full. */
export function deflateClusterAsQemu(src: Uint8Array, clusterSize: number): Uint8Array | null {
  const { ZStream, Z_BUF_ERROR, Z_FINISH, Z_STREAM_END, zlibInflate, zlibInflateEnd, zlibInflateInit2 } = pako();
  const strm = new ZStream();
  strm.input = src;
  strm.next_in = 0;
  strm.avail_in = src.length;
  strm.output = new Uint8Array(clusterSize);
  strm.next_out = 0;
  strm.avail_out = clusterSize;
  if (zlibInflateInit2(strm, -12) !== 0) return null;
  const ret = zlibInflate(strm, Z_FINISH);
  zlibInflateEnd(strm);
  return (ret === Z_STREAM_END || ret === Z_BUF_ERROR) && strm.avail_out === 0 ? strm.output : null;
}
