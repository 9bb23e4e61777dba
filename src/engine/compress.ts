import { nodeZlib } from '../load-on-use.js';
import { zstdCompressCluster } from './zstd-encode.js';

/**
 * Compression for `convert -c`, a host import the engine calls once per cluster (the mirror of
 * decompress.ts). Each cluster is compressed alone, as qemu's qcow2_co_compress does:
 *
 *  - deflate (type 0): raw deflate (no zlib header), window 2^12, memLevel 9, the default level —
 *    qemu's deflateInit2 parameters; Node's zlib is native;
 *  - zstd (type 1): one frame from libzstd (zstd-encode.ts).
 *
 * The result must fit in `capacity` bytes (the engine passes cluster size - 1, qemu's bound);
 * null means it does not, and the engine writes the cluster uncompressed.
 */
export function compressCluster(type: number, src: Uint8Array, capacity: number): Uint8Array | null {
  if (type === 0) {
    const zlib = nodeZlib();
    const out = zlib.deflateRawSync(src, { windowBits: 12, memLevel: 9, level: zlib.constants.Z_DEFAULT_COMPRESSION });
    return out.length <= capacity ? out : null;
  }
  if (type === 1) return zstdCompressCluster(src, capacity);
  return null;
}
