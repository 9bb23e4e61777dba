// Data clusters of a LUKS-encrypted qcow2 image (crypt_method 2): they hold ciphertext, with sector
// IVs from their host offsets. The host does the cipher work on whole 512-byte sectors; this
// splits guest ranges into such sectors, through one scratch cluster for the ragged ends.
import { readZeroFill, writeAt, crypt } from "./io";

export class DataCipher {
  /** One cluster of scratch for encrypting and decrypting partial ranges; taken on first use. */
  private scratchBuf: usize = 0;

  constructor(public handle: i32, public cs: u64) {}

  private scratch(): usize {
    if (this.scratchBuf == 0) this.scratchBuf = heap.alloc(<usize>this.cs);
    return this.scratchBuf;
  }

  /**
   * Read `len` bytes of ciphertext at `host` and decrypt them into `ptr`. The cipher works on
   * whole 512-byte sectors, so each piece (at most a cluster) is read sector-aligned through a
   * scratch cluster, unless it is aligned already.
   */
  readDecrypted(host: u64, ptr: usize, len: u64): void {
    const cs = this.cs;
    while (len > 0) {
      let n = cs - (host & (cs - 1));
      if (n > len) n = len;
      const s0 = host & ~(<u64>511);
      const s1 = (host + n + 511) & ~(<u64>511);
      if (s0 == host && s1 == host + n) {
        readZeroFill(this.handle, ptr, <i32>n, host);
        crypt(this.handle, false, ptr, <i32>n, host);
      } else {
        const buf = this.scratch();
        readZeroFill(this.handle, buf, <i32>(s1 - s0), s0);
        crypt(this.handle, false, buf, <i32>(s1 - s0), s0);
        memory.copy(ptr, buf + <usize>(host - s0), <usize>n);
      }
      host += n; ptr += <usize>n; len -= n;
    }
  }

  /**
   * Encrypt `len` bytes of guest data from `ptr` and write them at `host`, a piece (at most a
   * cluster) at a time through the scratch cluster; the caller's buffer is left as it was. A
   * piece that does not cover whole sectors keeps the other bytes of its first and last sector
   * (read and decrypted first).
   */
  writeEncrypted(host: u64, ptr: usize, len: u64): void {
    const cs = this.cs;
    const buf = this.scratch();
    while (len > 0) {
      let n = cs - (host & (cs - 1));
      if (n > len) n = len;
      const s0 = host & ~(<u64>511);
      const s1 = (host + n + 511) & ~(<u64>511);
      if (s0 != host || s1 != host + n) {
        readZeroFill(this.handle, buf, <i32>(s1 - s0), s0);
        crypt(this.handle, false, buf, <i32>(s1 - s0), s0);
      }
      memory.copy(buf + <usize>(host - s0), ptr, <usize>n);
      crypt(this.handle, true, buf, <i32>(s1 - s0), s0);
      writeAt(this.handle, buf, <i32>(s1 - s0), s0);
      host += n; ptr += <usize>n; len -= n;
    }
  }

  dispose(): void {
    if (this.scratchBuf != 0) heap.free(this.scratchBuf);
    this.scratchBuf = 0;
  }
}
