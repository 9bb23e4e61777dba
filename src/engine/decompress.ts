import * as zlib from 'node:zlib';
import { Decompress as ZstdDecompress } from 'fzstd';
import { ZStream, Z_BUF_ERROR, Z_FINISH, Z_STREAM_END, zlibInflate, zlibInflateEnd, zlibInflateInit2 } from 'pako';

/**
 * Decompression is a host import rather than wasm code: Node's zlib is native (faster than any
 * inflate we would compile to wasm) and Deno provides the same `node:zlib`, with pako (pure JS)
 * where qemu's acceptance differs from Node's (see deflateCluster); zstd comes from
 * fzstd, a pure-JS decoder that runs anywhere the engine does. Compressed clusters are rare on
 * the commit path (only in bases made by `convert -c`), so the boundary crossing is cheap.
 *
 * Both decoders must yield exactly one cluster; the input may carry padding past the end of the
 * compressed stream (it is read in whole 512-byte sectors).
 */
export function inflateCluster(type: number, src: Uint8Array, clusterSize: number): Uint8Array | null {
  try {
    if (type === 0) return deflateCluster(src, clusterSize);
    if (type === 1) return zstdCluster(src, clusterSize);
  } catch {
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
    const out = zlib.inflateRawSync(src, { finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: clusterSize });
    if (out.length === clusterSize) return out;
  } catch {
    // fall through to the exact decoder
  }
  return deflateClusterAsQemu(src, clusterSize);
}

/** qemu's qcow2_zlib_decompress: raw deflate, window 2^12, one call, success when the output is full. */
export function deflateClusterAsQemu(src: Uint8Array, clusterSize: number): Uint8Array | null {
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

/** Largest zstd window we accept (fzstd allocates the window, and moves it after every block). */
const MAX_ZSTD_WINDOW = 32 << 20;

/**
 * Where the zstd frame at the start of `src` ends, from its headers alone (RFC 8878 3.1.1), or -1
 * when they are invalid, it does not fit in `src`, or it is not one cluster: a frame content size
 * other than `clusterSize`, or a window the decoder would have to allocate beyond
 * MAX_ZSTD_WINDOW (a damaged header can ask for ~2 GiB, which fzstd allocates and then moves
 * after every block: seconds of CPU and gigabytes of memory for one cluster).
 */
function zstdFrameLength(src: Uint8Array, clusterSize: number): number {
  if (src.length < 6 || src[0] !== 0x28 || src[1] !== 0xb5 || src[2] !== 0x2f || src[3] !== 0xfd) return -1;
  const fhd = src[4];
  if (fhd & 0x08) return -1; // reserved bit
  const single = (fhd >> 5) & 1;
  const fcsFlag = fhd >> 6;
  const fcsBytes = fcsFlag === 0 ? single : 1 << fcsFlag;
  let p = 5;
  let window = 0;
  if (!single) {
    const wb = 2 ** (10 + (src[5] >> 3));
    window = wb + (wb / 8) * (src[5] & 7);
    p++;
  }
  p += [0, 1, 2, 4][fhd & 3]; // dictionary id
  if (p + fcsBytes > src.length) return -1;
  if (fcsBytes > 0) {
    let fcs = 0;
    for (let i = fcsBytes - 1; i >= 0; i--) fcs = fcs * 256 + src[p + i];
    if (fcsBytes === 2) fcs += 256;
    if (fcs !== clusterSize) return -1;
    if (single) window = fcs;
  }
  if (window > MAX_ZSTD_WINDOW) return -1;
  p += fcsBytes;
  for (;;) {
    if (p + 3 > src.length) return -1;
    const h = src[p] | (src[p + 1] << 8) | (src[p + 2] << 16);
    p += 3;
    const type = (h >> 1) & 3;
    const size = h >>> 3;
    if (type === 3 || size > 128 << 10) return -1;
    p += type === 1 ? 1 : size;
    if (h & 1) break;
  }
  if (fhd & 0x04) p += 4; // content checksum
  return p <= src.length ? p : -1;
}

/**
 * Decode one cluster from the zstd frame at the start of `src`. qemu packs compressed clusters
 * back to back, so the sectors read for this cluster may also hold the start of the next
 * cluster's frame (or padding): only the first frame is handed to the decoder, whose length the
 * frame's headers give (decoding on into the next frame cost time, and a damaged one, a lot).
 */
function zstdCluster(src: Uint8Array, clusterSize: number): Uint8Array | null {
  const n = zstdFrameLength(src, clusterSize);
  if (n < 0) return null;
  const out = new Uint8Array(clusterSize);
  let produced = 0;
  const d = new ZstdDecompress((chunk) => {
    if (produced < clusterSize) out.set(chunk.subarray(0, clusterSize - produced), produced);
    produced += chunk.length;
  });
  d.push(src.subarray(0, n), true);
  return produced === clusterSize ? out : null;
}
