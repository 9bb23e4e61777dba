// Run-time cases of issue 8 not covered elsewhere (test/engine/malformed-header.test.ts has the
// open-time checks, unaligned L2/data offsets, zero flag in v2 and bad subcluster bitmaps;
// test/interop/check.test.ts the check's classification of each):
//  - refcount at its maximum: refcount_bits=1, a cluster referenced twice (it would need a
//    refcount of 2): reported as qemu reports it, never wrapped to 0, never handed out again;
//  - a backing chain loop made through the headers: ECOW_CHAIN_LOOP from every entry point,
//    nothing written, no hang;
//  - a compressed L2 entry with COPIED set: read as qemu reads it, never written in place;
//  - metadata overlap: a guest write that would land on the header, L1 or refcount table.
//    qemu refuses these writes ("Preventing invalid write on metadata"); so do we
//    (Mapping.checkNoOverlap in assembly/mapping.ts, ECOW_CORRUPT, nothing written).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { CowError, checkImage, commitImage, convertImage, createImage, engineMemoryBytes, openImage, rebaseImage, streamImage } from '../../src/index.js';
import { codeOf } from '../support/errors.js';
import { H, createQcow2, expectSameBytes, join, readBE, writeBE } from '../support/images.js';
import { qemuCheck, qemuImg, qemuIo, qemuRaw, requireQemu, tmpDir } from '../support/qemu.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const COPIED = 1n << 63n;
const OFFSET = 0x00fffffffffffe00n;

let dir: string;
let n = 0;
const fresh = (name: string) => join(dir, `${n++}-${name}`);

beforeAll(() => {
  requireQemu();
  dir = tmpDir('cowchain-runtime-');
});

/** L1/L2 geometry of a qcow2 file with 8-byte L2 entries. */
function geometry(f: string) {
  const cs = 1 << Number(readBE(f, H.clusterBits, 4));
  const l1 = Number(readBE(f, H.l1Offset, 8));
  const rt = Number(readBE(f, H.rtOffset, 8));
  const rb = Number(readBE(f, rt, 8) & ~0x1ffn);
  const l2 = Number(readBE(f, l1, 8) & OFFSET);
  return { cs, l1, rt, rb, l2, entry: (i: number) => l2 + 8 * i };
}

// ---------- refcount at its maximum ----------

describe('refcount at its maximum (refcount_bits=1)', () => {
  /** Guest clusters 0 and 2 share host cluster X (both without COPIED, as after a snapshot): X needs refcount 2, holds 1 = the maximum. */
  function shared(): { f: string; x: number; guest: Buffer } {
    const f = createQcow2(fresh('rc1.qcow2'), 1 * MiB, { cluster_size: 4096, refcount_bits: 1 });
    qemuIo(f, ['write -P 0x11 0 4k', 'write -P 0x22 8k 4k', 'write -P 0x33 64k 4k']);
    const g = geometry(f);
    const e0 = readBE(f, g.entry(0), 8);
    writeBE(f, g.entry(0), 8, e0 & ~COPIED);
    writeBE(f, g.entry(2), 8, e0 & ~COPIED);
    return { f, x: Number(e0 & OFFSET), guest: qemuRaw(f, dir) };
  }

  it('reads both guest clusters from the shared cluster, as qemu does', () => {
    const { f, guest } = shared();
    const img = openImage(f);
    try {
      expectSameBytes(img.read(0, img.virtualSize), guest, 'guest view');
      expect(img.read(8 * KiB, 1)[0]).toBe(0x11);
    } finally {
      img.close();
    }
  });

  it('check reports the overflow as qemu does (exit 2, "ERROR: overflow cluster")', () => {
    const { f, x } = shared();
    const ours = checkImage(f);
    expect(ours.exitCode).toBe(2);
    expect(ours.log).toContain(`ERROR: overflow cluster offset=0x${x.toString(16)}`);
    expect(qemuCheck(f).status).toBe(2);
  });

  it('check -r all cannot give it refcount 2: the refcount stays 1 (never wraps to 0), the data stay, still reported', () => {
    const { f, x, guest } = shared();
    const g = geometry(f);
    const refcount = () => (Number(readBE(f, g.rb + Math.floor(x / g.cs / 8), 1)) >> ((x / g.cs) % 8)) & 1;
    expect(refcount()).toBe(1);
    const r = checkImage(f, { repair: 'all' });
    expect(r.exitCode, r.log.join('\n')).toBe(2);
    expect(r.log.filter((l) => l.startsWith('ERROR: overflow cluster'))).not.toHaveLength(0);
    expect(refcount()).toBe(1);
    expectSameBytes(qemuRaw(f, dir), guest, 'guest view after the repair');
    expect(qemuCheck(f).status).toBe(2);
  });

  it('allocations never hand out the saturated cluster', () => {
    const { f, x, guest } = shared();
    const img = openImage(f, { writable: true });
    try {
      // Enough new clusters to pass X many times over if it were taken for free.
      for (let i = 0; i < 40; i++) img.write(128 * KiB + i * 4096, Buffer.alloc(4096, 0x40 + i));
      img.flush();
    } finally {
      img.close();
    }
    const after = qemuRaw(f, dir);
    expectSameBytes(after.subarray(0, 128 * KiB), guest.subarray(0, 128 * KiB), 'guest clusters 0..31');
    for (let i = 0; i < 40; i++) expect(after[128 * KiB + i * 4096]).toBe(0x40 + i);
    const g = geometry(f);
    for (let i = 0; i < 40; i++) expect(Number(readBE(f, g.entry(32 + i), 8) & OFFSET)).not.toBe(x);
  });
});

// ---------- backing chain loops ----------

describe('a backing chain loop made through the headers', () => {
  interface Loop {
    files: string[];
    entry: string;
  }

  /** a <- b, then a's header pointed at b (unsafe rebase): a -> b -> a. */
  function twoLoop(): Loop {
    const d = fs.mkdtempSync(join(dir, 'loop2-'));
    const a = join(d, 'a.qcow2');
    const b = join(d, 'b.qcow2');
    createImage(a, { format: 'qcow2', size: 1 * MiB, clusterSize: 4096 });
    createImage(b, { format: 'qcow2', backingFile: 'a.qcow2', backingFormat: 'qcow2' });
    rebaseImage(a, 'b.qcow2', { unsafe: true, backingFormat: 'qcow2' });
    return { files: [a, b], entry: b };
  }
  function selfLoop(): Loop {
    const d = fs.mkdtempSync(join(dir, 'loop1-'));
    const a = join(d, 'a.qcow2');
    createImage(a, { format: 'qcow2', size: 1 * MiB });
    rebaseImage(a, 'a.qcow2', { unsafe: true, backingFormat: 'qcow2' });
    return { files: [a], entry: a };
  }
  /** x -> y -> z -> y, the loop below the top; z names y by an absolute path. */
  function lowerLoop(): Loop {
    const d = fs.mkdtempSync(join(dir, 'loop3-'));
    const [x, y, z] = ['x.qcow2', 'y.qcow2', 'z.qcow2'].map((s) => join(d, s));
    createImage(z, { format: 'qcow2', size: 1 * MiB });
    createImage(y, { format: 'qcow2', backingFile: 'z.qcow2', backingFormat: 'qcow2' });
    createImage(x, { format: 'qcow2', backingFile: 'y.qcow2', backingFormat: 'qcow2' });
    rebaseImage(z, y, { unsafe: true, backingFormat: 'qcow2' });
    return { files: [x, y, z], entry: x };
  }
  /** a -> link, link being a symlink to a. */
  function symlinkLoop(): Loop {
    const d = fs.mkdtempSync(join(dir, 'loopl-'));
    const a = join(d, 'a.qcow2');
    createImage(a, { format: 'qcow2', size: 1 * MiB });
    fs.symlinkSync('a.qcow2', join(d, 'link.qcow2'));
    rebaseImage(a, 'link.qcow2', { unsafe: true, backingFormat: 'qcow2' });
    return { files: [a], entry: a };
  }

  const LOOPS: [string, () => Loop][] = [
    ['a -> b -> a', twoLoop],
    ['a -> a', selfLoop],
    ['x -> y -> z -> y (absolute name)', lowerLoop],
    ['a -> symlink to a', symlinkLoop],
  ];

  it.each(LOOPS)('%s: qemu-img refuses it too', (_n, make) => {
    const l = make();
    expect(qemuImg(['info', '--backing-chain', l.entry], { ok: [0, 1] }).status).toBe(1);
  });

  it.each(LOOPS)('%s: ECOW_CHAIN_LOOP from every entry point, no file changed', (_n, make) => {
    const l = make();
    const bytes = l.files.map((f) => fs.readFileSync(f));
    const out = path.join(path.dirname(l.entry), 'out.qcow2');
    const ops: [string, () => unknown][] = [
      ['open', () => openImage(l.entry).close()],
      ['open writable', () => openImage(l.entry, { writable: true }).close()],
      ['check', () => checkImage(l.entry)],
      ['check -r all', () => checkImage(l.entry, { repair: 'all' })],
      ['commit', () => commitImage(l.entry)],
      ['stream', () => streamImage(l.entry)],
      ['safe rebase onto nothing', () => rebaseImage(l.entry, '')],
      ['create an overlay on it', () => createImage(out, { format: 'qcow2', backingFile: path.basename(l.entry) })],
      ['convert', () => convertImage(openImage(l.entry), out)],
    ];
    for (const [name, fn] of ops) expect(codeOf(fn), name).toBe('ECOW_CHAIN_LOOP');
    l.files.forEach((f, i) => expect(fs.readFileSync(f).equals(bytes[i]), `${f} unchanged`).toBe(true));
    expect(fs.existsSync(out)).toBe(false);
  });

  it('a chain as deep as the limit still opens; one deeper is ECOW_CHAIN_TOO_DEEP (no loop needed to bound the walk)', () => {
    const d = fs.mkdtempSync(join(dir, 'deep-'));
    createImage(join(d, 'l0.qcow2'), { format: 'qcow2', size: 64 * KiB, clusterSize: 4096 });
    for (let i = 1; i < 8; i++) createImage(join(d, `l${i}.qcow2`), { format: 'qcow2', backingFile: `l${i - 1}.qcow2`, backingFormat: 'qcow2' });
    openImage(join(d, 'l7.qcow2'), { maxDepth: 8 }).close();
    expect(codeOf(() => openImage(join(d, 'l7.qcow2'), { maxDepth: 7 }))).toBe('ECOW_CHAIN_TOO_DEEP');
  });
});

// ---------- compressed entry with COPIED ----------

describe('a compressed L2 entry with COPIED set', () => {
  for (const [name, opts] of [
    ['deflate, 4 KiB clusters', 'cluster_size=4096'],
    ['zstd, 64 KiB clusters', 'compression_type=zstd'],
  ] as const) {
    it(`${name}: reads as qemu reads it; a write copies it out, never in place`, () => {
      const d = fs.mkdtempSync(join(dir, 'ccop-'));
      const raw = join(d, 'src.raw');
      const buf = Buffer.alloc(1 * MiB);
      for (let i = 0; i < buf.length; i++) buf[i] = ((i * 13) ^ (i >> 7)) & 0x1f;
      fs.writeFileSync(raw, buf);
      const f = join(d, 'c.qcow2');
      qemuImg(['convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', opts, raw, f]);
      const g = geometry(f);
      // a compressed cluster whose host cluster it shares with its neighbours
      const k = 3;
      const e = readBE(f, g.entry(k), 8);
      expect(e & (1n << 62n)).toBe(1n << 62n);
      writeBE(f, g.entry(k), 8, e | COPIED);
      const twin = join(d, 'twin.qcow2');
      fs.copyFileSync(f, twin);

      // read: the whole guest view, as qemu reads it
      const img = openImage(f);
      try {
        expectSameBytes(img.read(0, img.virtualSize), buf, 'guest view');
      } finally {
        img.close();
      }
      // check: a corruption, as qemu says
      const c = checkImage(f);
      expect(c.exitCode).toBe(2);
      expect(c.log.join('\n')).toMatch(/copied flag must never be set for compressed clusters/);
      expect(qemuCheck(f).status).toBe(2);

      // write 512 bytes into it: the cluster is copied out; the shared host cluster is untouched
      const x = 62 - (Math.log2(g.cs) - 8);
      const coff = Number(e & ((1n << BigInt(x)) - 1n));
      const hostBefore = fs.readFileSync(f).subarray(coff & ~(g.cs - 1), (coff & ~(g.cs - 1)) + g.cs);
      const w = openImage(f, { writable: true });
      try {
        w.write(k * g.cs + 1000, Buffer.alloc(512, 0xee));
        w.flush();
      } finally {
        w.close();
      }
      // (the host cluster may be the file's last, partial one: compare what it held)
      const hostAfter = fs.readFileSync(f).subarray(coff & ~(g.cs - 1), (coff & ~(g.cs - 1)) + hostBefore.length);
      expect(hostAfter.equals(hostBefore), 'the compressed host cluster is unchanged').toBe(true);
      const after = readBE(f, g.entry(k), 8);
      expect(after & (1n << 62n), 'no longer compressed').toBe(0n);
      expect(after & COPIED).toBe(COPIED);
      // the same guest view as after qemu's own write, and as clean as qemu leaves it
      qemuIo(twin, [`write -P 0xee ${k * g.cs + 1000} 512`]);
      expectSameBytes(qemuRaw(f, d), qemuRaw(twin, d), 'after the write: ours and qemu-io');
      expect(qemuCheck(twin).status).toBe(0);
      expect(qemuCheck(f)).toMatchObject({ status: 0 });
    });
  }
});

// ---------- metadata overlap ----------

describe('metadata overlap: a guest write must never land on the header, L1 or refcount table (qemu refuses each)', () => {
  function base(): string {
    const f = createQcow2(fresh('ov.qcow2'), 64 * MiB, { cluster_size: 4096 });
    qemuIo(f, ['write -P 0x11 0 8k']);
    return f;
  }

  /** qemu-io refuses the write on a copy: the bar we are held to. */
  function qemuRefuses(f: string, cmd: string): void {
    const q = `${f}.q`;
    fs.copyFileSync(f, q);
    const io = spawnQemuIo(q, cmd);
    expect(io, 'qemu-io output').toMatch(/Preventing invalid write on metadata/);
  }

  /** Our write: refused with ECOW_CORRUPT, and the metadata region unchanged. */
  function expectRefused(f: string, guestOff: number, region: [number, number]): void {
    const before = fs.readFileSync(f).subarray(region[0], region[1]);
    let code = 'no error';
    const img = openImage(f, { writable: true });
    try {
      img.write(guestOff, Buffer.alloc(4096, 0x99));
      img.flush();
    } catch (e) {
      code = (e as CowError).code;
    } finally {
      try {
        img.close();
      } catch {
        // a failed image closes without flushing
      }
    }
    const after = fs.readFileSync(f).subarray(region[0], region[1]);
    expect({ code, metadataUnchanged: after.equals(before) }).toEqual({ code: 'ECOW_CORRUPT', metadataUnchanged: true });
  }

  it('an L2 entry (COPIED) pointing at the L1 table: the write would overwrite the L1 table', () => {
    const f = base();
    const g = geometry(f);
    writeBE(f, g.entry(2), 8, COPIED | BigInt(g.l1));
    qemuRefuses(f, 'write -P 0x99 8192 4096');
    expectRefused(f, 8192, [g.l1, g.l1 + g.cs]);
  });

  it('the L1 table\'s refcount dropped to 0: the allocation for a new cluster would take the L1 table\'s cluster', () => {
    const f = base();
    const g = geometry(f);
    writeBE(f, g.rb + 2 * (g.l1 / g.cs), 2, 0);
    qemuRefuses(f, 'write -P 0x99 8192 4096');
    expectRefused(f, 8192, [g.l1, g.l1 + g.cs]);
  });

  it('an L1 entry pointing at the refcount table: the new L2 entry would be written into the refcount table', () => {
    const f = base();
    const g = geometry(f);
    writeBE(f, g.l1 + 8, 8, COPIED | BigInt(g.rt));
    qemuRefuses(f, 'write -P 0x98 2M 4096');
    expectRefused(f, 2 * MiB, [g.rt, g.rt + g.cs]);
  });
});

function spawnQemuIo(file: string, cmd: string): string {
  const r = spawnSync('qemu-io', ['-c', cmd, file], { encoding: 'utf8' });
  return `${r.stdout}${r.stderr}`;
}

// ---------- damage at scale: bounded memory, coded errors ----------

describe('damage the check and reads meet at scale', () => {
  /**
   * A 64 KiB-cluster image whose data cluster is random bytes, and `n` internal snapshots whose
   * L1 tables are that cluster: 8192 garbage L1 entries each, offsets up to 2^56.
   */
  function garbageSnapshots(n: number): string {
    const f = createImage0(fresh('snapjunk.qcow2'));
    const g = geometry(f);
    const data = Number(readBE(f, g.entry(0), 8) & OFFSET);
    const buf = fs.readFileSync(f);
    const table = Math.ceil(buf.length / g.cs) * g.cs;
    const out = Buffer.alloc(table + g.cs);
    buf.copy(out);
    for (let i = 0; i < n; i++) {
      out.writeBigUInt64BE(BigInt(data), table + 40 * i);
      out.writeUInt32BE(8192, table + 40 * i + 8);
    }
    out.writeUInt32BE(n, H.nbSnapshots);
    out.writeBigUInt64BE(BigInt(table), H.snapshotsOffset);
    fs.writeFileSync(f, out);
    return f;
  }
  function createImage0(f: string): string {
    createImage(f, { format: 'qcow2', size: 1 * MiB });
    const img = openImage(f, { writable: true });
    try {
      let x = 7;
      img.write(0, Buffer.alloc(64 * KiB).map(() => (x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 24));
    } finally {
      img.close();
    }
    return f;
  }

  it('check of 4 snapshots with garbage L1 tables (~100 000 errors): exit 2 as qemu, engine memory does not grow with the errors', () => {
    const f = garbageSnapshots(4);
    const before = engineMemoryBytes();
    const r = checkImage(f);
    // Every message past the log's cap used to be built anyway and kept until the call ended
    // (~15 MiB here, gigabytes with more snapshots); L2 offsets beyond 2^53 made it throw ECOW_IO.
    expect(r.exitCode).toBe(2);
    expect(r.result!.corruptions).toBeGreaterThan(50_000);
    expect(r.log.length).toBeLessThanOrEqual(1001);
    expect(engineMemoryBytes() - before).toBeLessThanOrEqual(4 * MiB);
    expect(qemuCheck(f).status).toBe(2);
  });

  it('an L1 entry naming an L2 table beyond 2^53: the read fails with ECOW_CORRUPT, not an I/O error', () => {
    const f = createImage0(fresh('far.qcow2'));
    const g = geometry(f);
    writeBE(f, g.l1, 8, COPIED | (1n << 54n));
    expect(codeOf(() => {
      const img = openImage(f);
      try {
        img.read(0, 4096);
      } finally {
        img.close();
      }
    })).toBe('ECOW_CORRUPT');
  });
});
