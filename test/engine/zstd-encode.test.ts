// The zstd encoder for `convert -c` (src/engine/zstd-encode.ts) keeps one libzstd compression
// context for every cluster. What it gives for a cluster must not depend on what it compressed
// before (other sizes, a cluster that did not fit), and every frame must decode, as qemu decodes
// it, to the cluster it came from. The interop tests (test/interop/convert-compressed.test.ts)
// referee whole images with qemu-img.
import * as crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { zstdCompressCluster } from '../../src/engine/zstd-encode.js';
import { inflateCluster } from '../../src/engine/decompress.js';

const ZSTD = 1;

/** Text-like bytes (compressible, as most of a disk is). */
function textLike(n: number, seed: number): Uint8Array {
  const words = ['volume', 'snapshot', 'cluster', 'backing', 'the', 'of', String(seed)];
  let s = '';
  for (let i = 0; s.length < n; i++) s += words[(i * 7 + seed + (i >> 3)) % words.length] + (i % 11 === 0 ? '\n' : ' ');
  return Buffer.from(s.slice(0, n), 'latin1');
}

describe('zstd encoder (one context for every cluster)', () => {
  it('each frame fits, decodes to its cluster, and is the same whatever was compressed before', () => {
    const clusters = [65536, 512, 2 << 20, 4096, 65536, 512].map((n, i) => textLike(n, i));
    const first = clusters.map((c) => zstdCompressCluster(c, c.length - 1));
    for (const [i, c] of clusters.entries()) {
      const frame = first[i];
      expect(frame, `cluster ${i} (${c.length} bytes) compresses`).not.toBeNull();
      expect(frame!.length).toBeLessThan(c.length);
      expect(Buffer.from(inflateCluster(ZSTD, frame!, c.length)!).equals(Buffer.from(c)), `cluster ${i} decodes`).toBe(true);
    }
    // The same clusters in the opposite order, with one that does not fit in between each.
    for (let i = clusters.length - 1; i >= 0; i--) {
      expect(zstdCompressCluster(crypto.randomBytes(4096), 4095), 'random bytes do not fit').toBeNull();
      const again = zstdCompressCluster(clusters[i], clusters[i].length - 1);
      expect(Buffer.from(again!).equals(Buffer.from(first[i]!)), `cluster ${i}: the same frame the second time`).toBe(true);
    }
  });

  it('a frame that does not fit in the capacity is null, and a larger capacity takes it', () => {
    const c = textLike(65536, 9);
    const frame = zstdCompressCluster(c, 65535)!;
    expect(zstdCompressCluster(c, frame.length - 1)).toBeNull();
    expect(Buffer.from(zstdCompressCluster(c, frame.length)!).equals(Buffer.from(frame))).toBe(true);
  });
});
