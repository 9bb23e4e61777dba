// The AES-XTS-plain64 that the key slots use (src/engine/luks.ts SectorCipher.run, built on
// AES-ECB because Deno's node:crypto has no aes-xts) must equal Node's own aes-xts, sector by
// sector, for both key sizes, any first sector number (the plain64 IV) and buffers anywhere in
// memory.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { SectorCipher, parseLuksHeader, unlockLuks } from '../../src/engine/luks.js';
import { createImage, openImage } from '../../src/index.js';

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

  it('one cipher object across many calls (its ECB contexts are reused): sizes up and down, both directions', () => {
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

// The engine's own XTS (assembly/cipher.ts: whitening on v128, the host's AES-ECB through the
// `ecb` import): what it writes into an encrypted image's data clusters is the aes-xts-plain64 of
// the guest bytes at their host sectors, whatever the write's alignment and length (ragged first
// and last sectors, more than the 1 MiB it handles per pass), and it reads it back.
describe('the engine\'s XTS on an encrypted image', () => {
  it('writes aes-xts-plain64 of the guest data at its host sectors and reads it back', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cowchain-xts-'));
    try {
      const file = path.join(dir, 'enc.qcow2');
      const secret = Buffer.from('xts test secret');
      createImage(file, { format: 'qcow2', size: 8 * 2 ** 20, encrypt: { format: 'luks', keySecret: secret, iterTimeMs: 5 } });
      const model = Buffer.alloc(8 * 2 ** 20);
      const img = openImage(file, { writable: true, keySecrets: () => secret });
      try {
        for (const [off, len] of [[0, 3 * 2 ** 20 + 512], [5 * 2 ** 20 + 7, 1000], [65536 - 3, 6], [4 * 2 ** 20 + 100, 2 ** 20 + 1], [7 * 2 ** 20 - 511, 511]]) {
          const data = crypto.randomBytes(len);
          img.write(off, data);
          data.copy(model, off);
        }
        img.flush();
        expect(Buffer.from(img.read(0, model.length)).equals(model)).toBe(true);
        const h = img.headerInfo();
        const region = fs.readFileSync(file).subarray(h.cryptoOffset!, h.cryptoOffset! + h.cryptoLength!);
        const cipher = unlockLuks(parseLuksHeader(region, region.length), region, secret);
        const raw = fs.readFileSync(file);
        // qemu's map gives no file offset for encrypted data (and so neither does ours): the L2
        // entries say where each cluster is.
        const extents = dataClusters(raw, img.virtualSize);
        expect(extents.reduce((n, e) => n + e.length, 0)).toBeGreaterThan(4 * 2 ** 20);
        for (const e of extents) {
          const plain = Uint8Array.from(raw.subarray(e.offset!, e.offset! + e.length));
          cipher.run(false, plain, e.offset! / 512);
          expect(Buffer.from(plain).equals(model.subarray(e.start, e.start + e.length)), `guest ${e.start}+${e.length} at host ${e.offset}`).toBe(true);
        }
      } finally {
        img.close();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** The allocated clusters of a qcow2 image (normal L2 entries), from its L1 and L2 tables. */
function dataClusters(file: Buffer, size: number): { start: number; length: number; offset: number }[] {
  const OFFSET_MASK = 0x00fffffffffffe00n;
  const clusterBits = file.readUInt32BE(20);
  const cluster = 2 ** clusterBits;
  const l1 = Number(file.readBigUInt64BE(40));
  const perL2 = cluster / 8;
  const out: { start: number; length: number; offset: number }[] = [];
  for (let i = 0; i * cluster < size; i++) {
    const l2 = Number(file.readBigUInt64BE(l1 + Math.floor(i / perL2) * 8) & OFFSET_MASK);
    if (l2 === 0) continue;
    const host = Number(file.readBigUInt64BE(l2 + (i % perL2) * 8) & OFFSET_MASK);
    if (host !== 0) out.push({ start: i * cluster, length: Math.min(cluster, size - i * cluster), offset: host });
  }
  return out;
}
