import { nodeCrypto } from '../load-on-use.js';
import { CowError } from '../errors.js';

/**
 * LUKS version 1 headers as qemu stores them inside a qcow2 image (crypt_method 2, the crypto
 * header extension naming where): parse, unlock a key slot with a secret, and make new ones.
 * The format rules relied on are in docs/qcow2-rules.md ("Encryption"). Crypto is the host's
 * node:crypto (Node's, or Deno's): PBKDF2, hashes and HMAC, and AES-ECB under XTS (here for the
 * key slots, in the engine for data).
 *
 * Supported: cipher aes in mode xts-plain64 (qemu's default; 256- or 512-bit XTS keys), PBKDF2
 * with sha1, sha256 or sha512. Anything else is ECOW_BAD_LUKS_HEADER, naming what was found.
 */

const MAGIC = Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]);
const HEADER_BYTES = 592;
const SLOTS = 8;
const SLOT_ACTIVE = 0x00ac71f3;
const SLOT_INACTIVE = 0x0000dead;
const DIGEST_BYTES = 20;
const SALT_BYTES = 32;
const SECTOR = 512;
/** qemu's (and cryptsetup's) anti-forensic stripes, key-material alignment, and iteration floors. */
const STRIPES = 4000;
const ALIGN = 4096;
const MIN_SLOT_ITERS = 1000;
const MIN_DIGEST_ITERS = 1000;
/** qemu's default encrypt.iter-time: PBKDF2 runs this long (ms) to unlock a key slot. */
export const DEFAULT_ITER_TIME_MS = 2000;

const HASHES: Record<string, { node: string; bytes: number }> = {
  sha1: { node: 'sha1', bytes: 20 },
  sha256: { node: 'sha256', bytes: 32 },
  sha512: { node: 'sha512', bytes: 64 },
};

export interface LuksSlot {
  active: boolean;
  iterations: number;
  salt: Buffer;
  /** Offset of the key material from the start of the LUKS header, in bytes. */
  keyOffset: number;
  stripes: number;
}

export interface LuksHeader {
  cipherName: string;
  cipherMode: string;
  hashSpec: string;
  payloadOffset: number;
  keyBytes: number;
  mkDigest: Buffer;
  mkDigestSalt: Buffer;
  mkDigestIterations: number;
  uuid: string;
  slots: LuksSlot[];
}

function bad(message: string): CowError {
  return new CowError('ECOW_BAD_LUKS_HEADER', message);
}

function cstr(b: Buffer): string {
  const nul = b.indexOf(0);
  return b.subarray(0, nul < 0 ? b.length : nul).toString('latin1');
}

/** The LUKS header at the start of `bytes` (at least 592 bytes), checked for what we can unlock. */
export function parseLuksHeader(bytes: Uint8Array, regionBytes: number): LuksHeader {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.length < HEADER_BYTES || !b.subarray(0, 6).equals(MAGIC)) throw bad(`no LUKS magic at the start of the LUKS header area (found ${b.subarray(0, 6).toString('hex')})`);
  const version = b.readUInt16BE(6);
  if (version !== 1) throw bad(`LUKS version ${version} (only version 1, as qemu writes into qcow2)`);
  const h: LuksHeader = {
    cipherName: cstr(b.subarray(8, 40)),
    cipherMode: cstr(b.subarray(40, 72)),
    hashSpec: cstr(b.subarray(72, 104)),
    payloadOffset: b.readUInt32BE(104) * SECTOR,
    keyBytes: b.readUInt32BE(108),
    mkDigest: Buffer.from(b.subarray(112, 132)),
    mkDigestSalt: Buffer.from(b.subarray(132, 164)),
    mkDigestIterations: b.readUInt32BE(164),
    uuid: cstr(b.subarray(168, 208)),
    slots: [],
  };
  for (let i = 0; i < SLOTS; i++) {
    const o = 208 + i * 48;
    const state = b.readUInt32BE(o);
    if (state !== SLOT_ACTIVE && state !== SLOT_INACTIVE) throw bad(`key slot ${i} has state ${state.toString(16)} (neither active nor inactive)`);
    h.slots.push({ active: state === SLOT_ACTIVE, iterations: b.readUInt32BE(o + 4), salt: Buffer.from(b.subarray(o + 8, o + 40)), keyOffset: b.readUInt32BE(o + 40) * SECTOR, stripes: b.readUInt32BE(o + 44) });
  }
  if (h.cipherName !== 'aes' || h.cipherMode !== 'xts-plain64') throw bad(`cipher ${h.cipherName}-${h.cipherMode} is not supported (aes-xts-plain64 only)`);
  if (h.keyBytes !== 32 && h.keyBytes !== 64) throw bad(`master key of ${h.keyBytes} bytes (aes-xts takes 32 or 64)`);
  if (!HASHES[h.hashSpec]) throw bad(`hash ${h.hashSpec} is not supported (sha1, sha256, sha512)`);
  if (h.mkDigestIterations === 0) throw bad('master key digest with 0 iterations');
  for (const [i, s] of h.slots.entries()) {
    if (!s.active) continue;
    if (s.stripes === 0 || s.iterations === 0) throw bad(`key slot ${i}: ${s.stripes} stripes, ${s.iterations} iterations`);
    if (s.keyOffset < HEADER_BYTES || s.keyOffset + h.keyBytes * s.stripes > regionBytes) {
      throw bad(`key slot ${i}: key material at ${s.keyOffset} (${h.keyBytes * s.stripes} bytes) lies outside the ${regionBytes}-byte LUKS area`);
    }
  }
  return h;
}

/**
 * The master key's (or a key slot's) AES-XTS, on the host's AES-ECB. Image data goes through the
 * engine's own XTS (assembly/cipher.ts), which asks this object only for AES-ECB in place
 * (ecbInPlace). run() is whole AES-XTS-plain64 for the key slots' material at unlock and create
 * (some 500 sectors a slot), kept plain: IEEE 1619 sector by sector. test/engine/xts.test.ts holds
 * both equal to Node's aes-xts.
 */
export class SectorCipher {
  private readonly ecb: string;
  private readonly k1: Buffer;
  private readonly k2: Buffer;
  /**
   * ECB contexts, made once and fed whole blocks with update() only: ECB keeps no state between
   * blocks and, without padding, update() returns exactly the blocks given (final() is never
   * needed). A context per call cost as much as the AES work of a 4 KiB call.
   */
  private tweakEcb: Cipher | undefined;
  private readonly dataEcb: [Cipher | undefined, Cipher | undefined] = [undefined, undefined];

  constructor(key: Buffer) {
    const half = key.length / 2;
    this.ecb = half === 32 ? 'aes-256-ecb' : 'aes-128-ecb';
    this.k1 = key.subarray(0, half);
    this.k2 = key.subarray(half);
  }

  /**
   * AES-XTS-plain64 in place on `buf`, whole 512-byte sectors, the first numbered `firstSector`:
   * each sector's tweak T is AES(K2, the sector number as a little-endian 128-bit block), each
   * 16-byte block becomes AES(K1, P xor T) xor T, and T doubles in GF(2^128) from block to block.
   */
  run(encrypt: boolean, buf: Uint8Array, firstSector: number): void {
    if (buf.length % SECTOR !== 0) throw new CowError('ECOW_INTERNAL', `encryption of ${buf.length} bytes: not whole sectors`);
    const tweaks = new Uint8Array(SECTOR);
    const t = Buffer.alloc(16);
    for (let off = 0, n = firstSector; off < buf.length; off += SECTOR, n++) {
      t.fill(0);
      t.writeBigUInt64LE(BigInt(n));
      this.ecbInPlace(ECB_TWEAK, t);
      for (let b = 0; b < SECTOR; b += 16) {
        tweaks.set(t, b);
        const carry = t[15] >> 7;
        for (let i = 15; i > 0; i--) t[i] = ((t[i] << 1) | (t[i - 1] >> 7)) & 0xff;
        t[0] = ((t[0] << 1) & 0xff) ^ (carry ? 0x87 : 0);
      }
      const sector = buf.subarray(off, off + SECTOR);
      for (let i = 0; i < SECTOR; i++) sector[i] ^= tweaks[i];
      this.ecbInPlace(encrypt ? ECB_ENCRYPT : ECB_DECRYPT, sector);
      for (let i = 0; i < SECTOR; i++) sector[i] ^= tweaks[i];
    }
  }

  /**
   * AES-ECB in place on whole 16-byte blocks, for the engine, which does XTS's whitening itself
   * (assembly/cipher.ts): `which` is ECB_TWEAK (the tweak key, encrypting), ECB_DECRYPT or
   * ECB_ENCRYPT (the data key).
   */
  ecbInPlace(which: number, buf: Uint8Array): void {
    let c: Cipher;
    if (which === ECB_TWEAK) c = this.tweakEcb ??= ecbContext(this.ecb, this.k2, true);
    else {
      const encrypt = which === ECB_ENCRYPT;
      c = this.dataEcb[encrypt ? 1 : 0] ??= ecbContext(this.ecb, this.k1, encrypt);
    }
    buf.set(c.update(buf));
  }
}

/** For the engine's XTS (assembly/cipher.ts, the `ecb` import): which key and direction. */
export const ECB_TWEAK = 0;
export const ECB_DECRYPT = 1;
export const ECB_ENCRYPT = 2;

type Cipher = ReturnType<ReturnType<typeof nodeCrypto>['createCipheriv']>;

/** An AES-ECB context without padding, used with update() on whole blocks only. */
function ecbContext(algorithm: string, key: Buffer, encrypt: boolean): Cipher {
  const c = encrypt ? nodeCrypto().createCipheriv(algorithm, key, null) : nodeCrypto().createDecipheriv(algorithm, key, null);
  c.setAutoPadding(false);
  return c as Cipher;
}

/** LUKS1's anti-forensic diffusion: the hash of (be32 block index ‖ block), block by block. */
function diffuse(buf: Buffer, hash: { node: string; bytes: number }): Buffer {
  const out = Buffer.alloc(buf.length);
  const blocks = Math.ceil(buf.length / hash.bytes);
  for (let i = 0; i < blocks; i++) {
    const start = i * hash.bytes;
    const end = Math.min(buf.length, start + hash.bytes);
    const idx = Buffer.alloc(4);
    idx.writeUInt32BE(i);
    const d = nodeCrypto().createHash(hash.node).update(idx).update(buf.subarray(start, end)).digest();
    d.copy(out, start, 0, end - start);
  }
  return out;
}

function afMerge(split: Buffer, keyBytes: number, stripes: number, hash: { node: string; bytes: number }): Buffer {
  let acc: Buffer = Buffer.alloc(keyBytes);
  for (let i = 0; i < stripes - 1; i++) {
    const stripe = split.subarray(i * keyBytes, (i + 1) * keyBytes);
    for (let j = 0; j < keyBytes; j++) acc[j] ^= stripe[j];
    acc = diffuse(acc, hash);
  }
  const last = split.subarray((stripes - 1) * keyBytes, stripes * keyBytes);
  const key = Buffer.alloc(keyBytes);
  for (let j = 0; j < keyBytes; j++) key[j] = acc[j] ^ last[j];
  return key;
}

function afSplit(key: Buffer, stripes: number, hash: { node: string; bytes: number }): Buffer {
  const keyBytes = key.length;
  const split = nodeCrypto().randomBytes(keyBytes * stripes);
  let acc: Buffer = Buffer.alloc(keyBytes);
  for (let i = 0; i < stripes - 1; i++) {
    const stripe = split.subarray(i * keyBytes, (i + 1) * keyBytes);
    for (let j = 0; j < keyBytes; j++) acc[j] ^= stripe[j];
    acc = diffuse(acc, hash);
  }
  const last = split.subarray((stripes - 1) * keyBytes);
  for (let j = 0; j < keyBytes; j++) last[j] = acc[j] ^ key[j];
  return split;
}

function masterKeyDigest(h: LuksHeader, key: Buffer): Buffer {
  return nodeCrypto().pbkdf2Sync(key, h.mkDigestSalt, h.mkDigestIterations, DIGEST_BYTES, HASHES[h.hashSpec].node);
}

/**
 * The master key, from the first active key slot the secret opens (each slot: PBKDF2 of the
 * secret, the slot's key material decrypted with that key, merged, checked against the digest).
 * `region` holds the whole LUKS area (header and key material). A secret that opens no slot is
 * ECOW_BAD_SECRET; the message never contains the secret.
 */
export function unlockLuks(h: LuksHeader, region: Uint8Array, secret: Uint8Array): SectorCipher {
  const known = unlocked.get(unlockTag(region, secret));
  if (known) return new SectorCipher(known);
  const key = unlockSlow(h, region, secret);
  remember(region, secret, key);
  return new SectorCipher(key);
}

/**
 * Master keys already unlocked in this process, by a tag of (LUKS area, secret). Unlocking runs
 * PBKDF2 for as long as the image's creator asked (qemu's default: 2 s), and a volume operation
 * opens the same chain several times (validate, then the job): without this each open paid it
 * again. The tag is an HMAC under a key made at first use and never stored, so it says nothing
 * about the secret outside this process; the keys live only in memory, as open images' do.
 */
const unlocked = new Map<string, Buffer>();
const UNLOCKED_MAX = 256;
let tagKey: Buffer | undefined;

function unlockTag(region: Uint8Array, secret: Uint8Array): string {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(secret.length);
  tagKey ??= nodeCrypto().randomBytes(32);
  return nodeCrypto().createHmac('sha256', tagKey).update(len).update(secret).update(region).digest('base64');
}

function remember(region: Uint8Array, secret: Uint8Array, key: Buffer): void {
  if (unlocked.size >= UNLOCKED_MAX) unlocked.delete(unlocked.keys().next().value!);
  unlocked.set(unlockTag(region, secret), key);
}

function unlockSlow(h: LuksHeader, region: Uint8Array, secret: Uint8Array): Buffer {
  const hash = HASHES[h.hashSpec];
  for (const s of h.slots) {
    if (!s.active) continue;
    const slotKey = nodeCrypto().pbkdf2Sync(secret, s.salt, s.iterations, h.keyBytes, hash.node);
    const bytes = h.keyBytes * s.stripes;
    const sectors = Math.ceil(bytes / SECTOR) * SECTOR;
    const split = Buffer.from(region.subarray(s.keyOffset, s.keyOffset + sectors));
    new SectorCipher(slotKey).run(false, split, 0);
    const key = afMerge(split, h.keyBytes, s.stripes, hash);
    if (nodeCrypto().timingSafeEqual(masterKeyDigest(h, key), h.mkDigest)) return key;
  }
  throw new CowError('ECOW_BAD_SECRET', 'Invalid password, cannot unlock any keyslot');
}

/**
 * PBKDF2 iterations of `hash` per millisecond here (qemu's count_iters), from a probe that runs
 * at least `probeMs` (at most 100): a short iter-time needs no long benchmark. Each next probe
 * aims a quarter past `probeMs` from the rate measured so far, rather than growing fourfold
 * (fourfold overshot to a 400 ms probe on the 2-core test machine: half a second per image).
 */
function itersPerMs(hash: string, keyBytes: number, probeMs: number): number {
  const enough = Math.min(100, Math.max(1, probeMs));
  let iters = 1 << 14;
  for (;;) {
    const t0 = process.hrtime.bigint();
    nodeCrypto().pbkdf2Sync('probe', Buffer.alloc(SALT_BYTES), iters, keyBytes, hash);
    const took = Number(process.hrtime.bigint() - t0) / 1e6;
    if (took >= enough || iters >= 1 << 24) return Math.max(1, iters / Math.max(took, 0.001));
    iters = Math.min(1 << 24, Math.ceil(iters * Math.min(16, (1.25 * enough) / Math.max(took, 0.001))));
  }
}

export interface NewLuks {
  /** The LUKS area: header, then the 8 key slots' material (slot 0 filled), `length` bytes. */
  bytes: Buffer;
  cipher: SectorCipher;
}

/** Bytes of the LUKS area qemu creates: 4 KiB of header, 8 slots of 4000 stripes, 4 KiB-aligned. */
export function luksAreaBytes(keyBytes = 64): number {
  const slot = Math.ceil((keyBytes * STRIPES) / ALIGN) * ALIGN;
  return ALIGN + SLOTS * slot;
}

/**
 * A new LUKS1 area as qemu's qcrypto_block_luks_create writes it: aes-xts-plain64 with a random
 * 512-bit master key, sha256, key slot 0 opened by `secret`, PBKDF2 iterations measured to take
 * `iterTimeMs` (the master key digest an eighth of that, as qemu and cryptsetup do).
 */
export function createLuks(secret: Uint8Array, iterTimeMs = DEFAULT_ITER_TIME_MS): NewLuks {
  const keyBytes = 64;
  const hash = HASHES.sha256;
  const key = nodeCrypto().randomBytes(keyBytes);
  const slotBytes = Math.ceil((keyBytes * STRIPES) / ALIGN) * ALIGN;
  const total = luksAreaBytes(keyBytes);
  const out = Buffer.alloc(total);
  const perMs = itersPerMs(hash.node, keyBytes, iterTimeMs);
  const digestIters = Math.max(MIN_DIGEST_ITERS, Math.floor((perMs * iterTimeMs) / 8));
  const slotIters = Math.max(MIN_SLOT_ITERS, Math.floor(perMs * iterTimeMs));
  const h: LuksHeader = {
    cipherName: 'aes',
    cipherMode: 'xts-plain64',
    hashSpec: 'sha256',
    payloadOffset: total,
    keyBytes,
    mkDigest: Buffer.alloc(0),
    mkDigestSalt: nodeCrypto().randomBytes(SALT_BYTES),
    mkDigestIterations: digestIters,
    uuid: nodeCrypto().randomUUID(),
    slots: [],
  };
  h.mkDigest = masterKeyDigest(h, key);
  MAGIC.copy(out, 0);
  out.writeUInt16BE(1, 6);
  out.write(h.cipherName, 8, 'latin1');
  out.write(h.cipherMode, 40, 'latin1');
  out.write(h.hashSpec, 72, 'latin1');
  out.writeUInt32BE(total / SECTOR, 104);
  out.writeUInt32BE(keyBytes, 108);
  h.mkDigest.copy(out, 112);
  h.mkDigestSalt.copy(out, 132);
  out.writeUInt32BE(digestIters, 164);
  out.write(h.uuid, 168, 'latin1');
  for (let i = 0; i < SLOTS; i++) {
    const o = 208 + i * 48;
    const keyOffset = ALIGN + i * slotBytes;
    out.writeUInt32BE(i === 0 ? SLOT_ACTIVE : SLOT_INACTIVE, o);
    out.writeUInt32BE(i === 0 ? slotIters : 0, o + 4);
    if (i === 0) {
      const salt = nodeCrypto().randomBytes(SALT_BYTES);
      salt.copy(out, o + 8);
      const slotKey = nodeCrypto().pbkdf2Sync(secret, salt, slotIters, keyBytes, hash.node);
      const split = afSplit(key, STRIPES, hash);
      const sectors = Buffer.alloc(Math.ceil(split.length / SECTOR) * SECTOR);
      split.copy(sectors);
      new SectorCipher(slotKey).run(true, sectors, 0);
      sectors.copy(out, keyOffset);
    }
    out.writeUInt32BE(keyOffset / SECTOR, o + 40);
    out.writeUInt32BE(STRIPES, o + 44);
  }
  // The image about to be written opens with this secret at no cost (see unlocked).
  remember(out, secret, key);
  return { bytes: out, cipher: new SectorCipher(key) };
}
