// Data clusters of a LUKS-encrypted qcow2 image (crypt_method 2): they hold ciphertext, with sector
// IVs from their host offsets. XTS-plain64 (IEEE 1619) is done here: tweak T = AES(K2, sector
// number), each 16-byte block is AES(K1, P xor T) xor T, T doubling in GF(2^128) from block to
// block. The AES itself is the host's (AES-ECB in place, on whole blocks, behind the `ecb` import:
// one call for all the tweaks of a piece and one for all its data); the whitening passes run here
// on v128 (a JS loop over the words cost most of an encrypted commit's time). Guest ranges are
// split into whole 512-byte sectors, the ragged first and last ones through a one-sector scratch.
import { readZeroFill, writeAt, ecb, ECB_TWEAK, ECB_DECRYPT, ECB_ENCRYPT } from "./io";

/** Bytes of data one XTS pass handles at most (the tweak scratch holds 16 bytes per sector of it). */
const PIECE: u64 = 1 << 20;
const SECTOR: u64 = 512;

export class DataCipher {
  /** PIECE bytes of scratch for encrypting what the caller's buffer must keep; taken on first use. */
  private scratchBuf: usize = 0;
  /** One sector of scratch for the ragged ends of a range. */
  private sectorBuf: usize = 0;
  /** The tweaks of a piece: 16 bytes per sector. */
  private tweakBuf: usize = 0;

  constructor(public handle: i32) {}

  private scratch(): usize {
    if (this.scratchBuf == 0) this.scratchBuf = heap.alloc(<usize>PIECE);
    return this.scratchBuf;
  }

  private sector(): usize {
    if (this.sectorBuf == 0) this.sectorBuf = heap.alloc(<usize>SECTOR);
    return this.sectorBuf;
  }

  /**
   * Encrypt or decrypt in place `len` bytes (whole sectors) at `ptr` that lie at host offset
   * `host` (sector-aligned): the sector numbers are the plain64 IVs.
   */
  xts(encrypt: bool, ptr: usize, len: u64, host: u64): void {
    if (this.tweakBuf == 0) this.tweakBuf = heap.alloc(<usize>(PIECE / SECTOR * 16));
    const tw = this.tweakBuf;
    while (len > 0) {
      const n = len < PIECE ? len : PIECE;
      const sectors = <usize>(n / SECTOR);
      const first = host / SECTOR;
      for (let s: usize = 0; s < sectors; s++) {
        store<u64>(tw + (s << 4), first + <u64>s);
        store<u64>(tw + (s << 4), 0, 8);
      }
      ecb(this.handle, ECB_TWEAK, tw, <i32>(sectors << 4));
      whiten(ptr, tw, sectors);
      ecb(this.handle, encrypt ? ECB_ENCRYPT : ECB_DECRYPT, ptr, <i32>n);
      whiten(ptr, tw, sectors);
      ptr += <usize>n; host += n; len -= n;
    }
  }

  /** Read `len` bytes of ciphertext at `host` and decrypt them into `ptr`. */
  readDecrypted(host: u64, ptr: usize, len: u64): void {
    // A ragged first sector.
    const head = host & (SECTOR - 1);
    if (head != 0) {
      const n = SECTOR - head < len ? SECTOR - head : len;
      this.readSector(host - head);
      memory.copy(ptr, this.sectorBuf + <usize>head, <usize>n);
      host += n; ptr += <usize>n; len -= n;
    }
    // Whole sectors, straight into the caller's buffer.
    const whole = len & ~(SECTOR - 1);
    let done: u64 = 0;
    while (done < whole) {
      const n = whole - done < PIECE ? whole - done : PIECE;
      readZeroFill(this.handle, ptr + <usize>done, <i32>n, host + done);
      this.xts(false, ptr + <usize>done, n, host + done);
      done += n;
    }
    host += whole; ptr += <usize>whole; len -= whole;
    // A ragged last sector.
    if (len > 0) {
      this.readSector(host);
      memory.copy(ptr, this.sectorBuf, <usize>len);
    }
  }

  /** The sector at `at` (sector-aligned), decrypted, in the sector scratch. */
  private readSector(at: u64): void {
    const buf = this.sector();
    readZeroFill(this.handle, buf, <i32>SECTOR, at);
    this.xts(false, buf, SECTOR, at);
  }

  /**
   * Encrypt `len` bytes of guest data from `ptr` and write them at `host`, through the scratch;
   * the caller's buffer is left as it was. A ragged first or last sector keeps its other bytes
   * (read and decrypted first).
   */
  writeEncrypted(host: u64, ptr: usize, len: u64): void {
    const head = host & (SECTOR - 1);
    if (head != 0) {
      const n = SECTOR - head < len ? SECTOR - head : len;
      this.patchSector(host - head, <usize>head, ptr, n);
      host += n; ptr += <usize>n; len -= n;
    }
    const whole = len & ~(SECTOR - 1);
    if (whole > 0) {
      const buf = this.scratch();
      let done: u64 = 0;
      while (done < whole) {
        const n = whole - done < PIECE ? whole - done : PIECE;
        memory.copy(buf, ptr + <usize>done, <usize>n);
        this.xts(true, buf, n, host + done);
        writeAt(this.handle, buf, <i32>n, host + done);
        done += n;
      }
    }
    host += whole; ptr += <usize>whole; len -= whole;
    if (len > 0) this.patchSector(host, 0, ptr, len);
  }

  /** Bytes [at + from, at + from + n) of the sector at `at` from `ptr`, the rest kept; encrypted and written. */
  private patchSector(at: u64, from: usize, ptr: usize, n: u64): void {
    this.readSector(at);
    const buf = this.sectorBuf;
    memory.copy(buf + from, ptr, <usize>n);
    this.xts(true, buf, SECTOR, at);
    writeAt(this.handle, buf, <i32>SECTOR, at);
  }

  dispose(): void {
    if (this.scratchBuf != 0) heap.free(this.scratchBuf);
    if (this.sectorBuf != 0) heap.free(this.sectorBuf);
    if (this.tweakBuf != 0) heap.free(this.tweakBuf);
    this.scratchBuf = 0;
    this.sectorBuf = 0;
    this.tweakBuf = 0;
  }
}

/**
 * XOR each 16-byte block of `sectors` sectors at `ptr` with its tweak: the sector's encrypted IV
 * (at `tw`) for its first block, doubled in GF(2^128) (x^128 + x^7 + x^2 + x + 1, little-endian,
 * as XTS has it) for each next one. Four sectors at a time where there are four: their tweak
 * chains are independent, so the CPU overlaps them.
 */
function whiten(ptr: usize, tw: usize, sectors: usize): void {
  let s: usize = 0;
  for (; s + 4 <= sectors; s += 4) {
    let t0 = v128.load(tw + (s << 4));
    let t1 = v128.load(tw + (s << 4), 16);
    let t2 = v128.load(tw + (s << 4), 32);
    let t3 = v128.load(tw + (s << 4), 48);
    let p = ptr + (s << 9);
    const end = p + <usize>SECTOR;
    while (p < end) {
      v128.store(p, v128.xor(v128.load(p), t0));
      v128.store(p, v128.xor(v128.load(p, 512), t1), 512);
      v128.store(p, v128.xor(v128.load(p, 1024), t2), 1024);
      v128.store(p, v128.xor(v128.load(p, 1536), t3), 1536);
      t0 = double(t0); t1 = double(t1); t2 = double(t2); t3 = double(t3);
      p += 16;
    }
  }
  for (; s < sectors; s++) {
    let t = v128.load(tw + (s << 4));
    let p = ptr + (s << 9);
    const end = p + <usize>SECTOR;
    while (p < end) {
      v128.store(p, v128.xor(v128.load(p), t));
      t = double(t);
      p += 16;
    }
  }
}

/**
 * The tweak times x in GF(2^128). i64 lane 0 is the low half: each half shifts left by one, the
 * low half's top bit carries into the high half, the high half's folds back into the low half
 * as 0x87. The top bits come from i32x4.shr_s of dwords 1 and 3 (all ones or zeros), spread by a
 * dword shuffle and masked: no 64-bit multiply or arithmetic shift, which SSE lacks.
 */
// @ts-ignore: decorator
@inline function double(t: v128): v128 {
  const signs = i32x4.shr_s(t, 31);
  const spread = i8x16.shuffle(signs, signs, 12, 13, 14, 15, 12, 13, 14, 15, 4, 5, 6, 7, 4, 5, 6, 7);
  return v128.xor(i64x2.shl(t, 1), v128.and(spread, i32x4(0x87, 0, 1, 0)));
}
