import * as zlib from 'node:zlib';
import { Decompress as ZstdDecompress } from 'fzstd';

/**
 * Decompression is a host import rather than wasm code: Node's zlib is native (faster than any
 * inflate we would compile to wasm) and Deno provides the same `node:zlib`; zstd comes from
 * fzstd, a pure-JS decoder that runs anywhere the engine does. Compressed clusters are rare on
 * the commit path (only in bases made by `convert -c`), so the boundary crossing is cheap.
 *
 * Both decoders must yield exactly one cluster; the input may carry padding past the end of the
 * compressed stream (it is read in whole 512-byte sectors).
 */
export function inflateCluster(type: number, src: Uint8Array, clusterSize: number): Uint8Array | null {
  try {
    if (type === 0) {
      // qemu writes raw deflate (no zlib header) with a 4 KiB window; a larger window decodes it too.
      const out = zlib.inflateRawSync(src, { finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: clusterSize });
      return out.length === clusterSize ? out : null;
    }
    if (type === 1) return zstdCluster(src, clusterSize);
  } catch {
    return null;
  }
  return null;
}

/**
 * Decode zstd until one cluster is produced. qemu packs compressed clusters back to back, so the
 * sectors read for this cluster may also hold the start of the next cluster's frame (or padding):
 * whatever decodes past the first cluster-size bytes, or fails to decode after them, is ignored.
 */
function zstdCluster(src: Uint8Array, clusterSize: number): Uint8Array | null {
  const out = new Uint8Array(clusterSize);
  let produced = 0;
  const d = new ZstdDecompress((chunk) => {
    if (produced < clusterSize) out.set(chunk.subarray(0, clusterSize - produced), produced);
    produced += chunk.length;
  });
  const step = 512;
  for (let i = 0; i < src.length && produced < clusterSize; i += step) {
    try {
      d.push(src.subarray(i, Math.min(src.length, i + step)));
    } catch (e) {
      if (produced < clusterSize) throw e;
    }
  }
  return produced >= clusterSize ? out : null;
}
