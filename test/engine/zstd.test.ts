// zstd clusters as qemu's qcow2_zstd_decompress takes them (src/engine/zstd.ts). The frames are
// built by hand from raw and RLE blocks (RFC 8878), so every case says exactly what it holds.
import { describe, expect, it } from 'vitest';
import { inflateCluster } from '../../src/engine/decompress.js';

const ZSTD = 1;
const CLUSTER = 4096;

/** One zstd frame holding `blocks` (raw bytes, or {rle, n}), with the content size when given. */
function frame(blocks: (Uint8Array | { rle: number; n: number })[], contentSize?: number): Uint8Array {
  const out: number[] = [0x28, 0xb5, 0x2f, 0xfd];
  if (contentSize === undefined) {
    out.push(0x00, 0x50); // no content size, window 2^(10+10) = 1 MiB
  } else {
    out.push(0xa0, contentSize & 0xff, (contentSize >> 8) & 0xff, (contentSize >> 16) & 0xff, contentSize >>> 24); // single segment, 4-byte size
  }
  blocks.forEach((b, i) => {
    const last = i === blocks.length - 1 ? 1 : 0;
    if (b instanceof Uint8Array) {
      const h = last | (0 << 1) | (b.length << 3);
      out.push(h & 0xff, (h >> 8) & 0xff, (h >> 16) & 0xff, ...b);
    } else {
      const h = last | (1 << 1) | (b.n << 3);
      out.push(h & 0xff, (h >> 8) & 0xff, (h >> 16) & 0xff, b.rle);
    }
  });
  return Uint8Array.from(out);
}

const concat = (...parts: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

const pattern = (n: number, seed: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);

describe('zstd clusters, decoded as qemu decodes them', () => {
  it('one frame of one cluster, followed by padding and the start of the next cluster, reads the cluster', () => {
    const data = pattern(CLUSTER, 7);
    const src = concat(frame([data], CLUSTER), frame([{ rle: 9, n: CLUSTER }], CLUSTER).subarray(0, 7), new Uint8Array(100));
    expect(inflateCluster(ZSTD, src, CLUSTER)).toEqual(data);
  });

  it('two frames that add up to one cluster read as that cluster (qemu loops over frames)', () => {
    const a = pattern(1000, 1);
    const src = concat(frame([a], 1000), frame([{ rle: 0xee, n: CLUSTER - 1000 }]), new Uint8Array(3));
    const out = inflateCluster(ZSTD, src, CLUSTER);
    expect(out?.subarray(0, 1000)).toEqual(a);
    expect(out?.subarray(1000).every((b) => b === 0xee)).toBe(true);
  });

  it('a frame without a content size, of exactly one cluster, reads', () => {
    const data = pattern(CLUSTER, 3);
    expect(inflateCluster(ZSTD, frame([data.subarray(0, 100), data.subarray(100)]), CLUSTER)).toEqual(data);
  });

  it('a frame that goes on past one cluster fails (qemu: the frame must end where the cluster does)', () => {
    expect(inflateCluster(ZSTD, frame([pattern(CLUSTER, 1), { rle: 1, n: 10 }]), CLUSTER)).toBeNull();
  });

  it('a frame shorter than a cluster with nothing after it fails', () => {
    expect(inflateCluster(ZSTD, concat(frame([pattern(CLUSTER - 1, 1)], CLUSTER - 1), new Uint8Array(64)), CLUSTER)).toBeNull();
  });

  it('a frame cut off by the end of the sectors read fails', () => {
    const f = frame([pattern(CLUSTER, 5)], CLUSTER);
    expect(inflateCluster(ZSTD, f.subarray(0, f.length - 10), CLUSTER)).toBeNull();
  });

  it('a frame whose declared content size disagrees with its blocks fails', () => {
    expect(inflateCluster(ZSTD, frame([pattern(CLUSTER, 5)], CLUSTER + 1), CLUSTER)).toBeNull();
  });

  it('a huge declared window (no content size) is allocated by libzstd as in qemu, and the next cluster still decodes', () => {
    // Window descriptor 0x88: 2^(10+17) = 128 MiB, zstd's default limit.
    const f = frame([pattern(CLUSTER, 2)]);
    f[5] = 0x88;
    expect(inflateCluster(ZSTD, f, CLUSTER)).toEqual(pattern(CLUSTER, 2));
    // A second cluster still decodes (a fresh decoder instance if the memory grew).
    expect(inflateCluster(ZSTD, frame([pattern(CLUSTER, 4)], CLUSTER), CLUSTER)).toEqual(pattern(CLUSTER, 4));
  });

  it('garbage is null, never a throw', () => {
    expect(inflateCluster(ZSTD, pattern(600, 0), CLUSTER)).toBeNull();
    expect(inflateCluster(ZSTD, new Uint8Array(0), CLUSTER)).toBeNull();
  });
});
