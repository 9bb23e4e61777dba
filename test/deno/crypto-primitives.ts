// The node:crypto primitives LUKS uses (src/engine/luks.ts), run on fixed inputs and folded into
// one digest: smoke.ts prints it under Deno, deno.test.ts computes it under Node, and the two must
// be equal. PBKDF2, hash and HMAC for each hash a LUKS header may name (sha1, sha256, sha512), and
// AES-ECB without padding both ways for both XTS key sizes, fed (as the engine feeds it) a view
// into a larger buffer at a non-zero offset, then a single block on the same context.
import * as crypto from 'node:crypto';

export function cryptoPrimitivesDigest(): string {
  const parts: string[] = [];
  for (const hash of ['sha1', 'sha256', 'sha512']) {
    parts.push(hash, crypto.pbkdf2Sync('pw', new Uint8Array(32).fill(1), 1000, 64, hash).toString('hex'));
    parts.push(crypto.createHash(hash).update('x').digest('hex'), crypto.createHmac(hash, 'k').update('x').digest('hex'));
  }
  for (const [algorithm, keyBytes] of [['aes-128-ecb', 16], ['aes-256-ecb', 32]] as const) {
    for (const encrypt of [true, false]) {
      const key = new Uint8Array(keyBytes).fill(7);
      const c = encrypt ? crypto.createCipheriv(algorithm, key, null) : crypto.createDecipheriv(algorithm, key, null);
      c.setAutoPadding(false);
      const data = new Uint8Array(new ArrayBuffer(8192), 4096, 4096);
      for (let i = 0; i < data.length; i++) data[i] = (i * 31 + 7) & 255;
      const a = c.update(data);
      const b = c.update(data.subarray(0, 16));
      parts.push(algorithm, String(encrypt), String(a.length), String(b.length), crypto.createHash('sha256').update(a).update(b).digest('hex'));
    }
  }
  return crypto.createHash('sha256').update(parts.join('|')).digest('hex');
}
