// The AES-XTS-plain64 that encrypted images use (src/engine/luks.ts SectorCipher, built from
// AES-ECB for speed) must equal Node's own aes-xts, sector by sector, for both key sizes, any
// first sector number (the plain64 IV) and buffers at any 4-byte-aligned place in memory.
import * as crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { SectorCipher } from '../../src/engine/luks.js';

function reference(encrypt: boolean, key: Buffer, buf: Uint8Array, firstSector: number): Buffer {
  const algorithm = key.length === 64 ? 'aes-256-xts' : 'aes-128-xts';
  const out = Buffer.alloc(buf.length);
  for (let off = 0, s = firstSector; off < buf.length; off += 512, s++) {
    const iv = Buffer.alloc(16);
    iv.writeBigUInt64LE(BigInt(s));
    const c = encrypt ? crypto.createCipheriv(algorithm, key, iv) : crypto.createDecipheriv(algorithm, key, iv);
    Buffer.concat([c.update(Buffer.from(buf.subarray(off, off + 512))), c.final()]).copy(out, off);
  }
  return out;
}

describe('SectorCipher (AES-XTS-plain64)', () => {
  for (const keyBytes of [64, 32]) {
    for (const firstSector of [0, 1, 4095, 2 ** 33 + 7]) {
      it(`${keyBytes * 4}-bit XTS key, first sector ${firstSector}: equal to Node's aes-xts, and decrypts back`, () => {
        const key = crypto.randomBytes(keyBytes);
        const backing = new Uint8Array(8 * 512 + 4);
        const start = keyBytes === 64 ? 4 : 3; // not at the start of its ArrayBuffer (3: not even word-aligned)
        const plain = backing.subarray(start, start + 8 * 512);
        crypto.randomFillSync(plain);
        const want = reference(true, key, plain, firstSector);
        const buf = Uint8Array.from(plain);
        new SectorCipher(key).run(true, buf, firstSector);
        expect(Buffer.from(buf).equals(want)).toBe(true);
        new SectorCipher(key).run(false, buf, firstSector);
        expect(Buffer.from(buf).equals(Buffer.from(plain))).toBe(true);
        expect(reference(false, key, want, firstSector).equals(Buffer.from(plain))).toBe(true);
      });
    }
  }

  it('one cipher object across many calls (its ECB contexts and scratch are reused): sizes up and down, both directions', () => {
    const key = crypto.randomBytes(64);
    const cipher = new SectorCipher(key);
    const rand = (n: number) => Math.floor(Math.random() * n);
    for (const sectors of [128, 1, 8, 256, 3, 128, 2]) {
      const first = rand(2 ** 40);
      const plain = crypto.randomBytes(sectors * 512);
      const buf = Uint8Array.from(plain);
      cipher.run(true, buf, first);
      expect(Buffer.from(buf).equals(reference(true, key, plain, first)), `${sectors} sectors at ${first}`).toBe(true);
      cipher.run(false, buf, first);
      expect(Buffer.from(buf).equals(plain), `${sectors} sectors at ${first}, back`).toBe(true);
    }
  });
});
