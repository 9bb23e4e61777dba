// qemu's open-time checks, ported (docs/qcow2-rules.md, "The header"): for each class, a
// qemu-created image with patched header bytes must be refused by openImage with that class's
// CowError code and a message naming the offending value — and qemu-img must refuse it too, so we
// hold the same bar. Then run-time corruptions (bad L1/L2 entries) must fail the affected read with
// ECOW_CORRUPT, and random header bytes must only ever produce a CowError.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { CowError, isCowError, openImage, type CowErrorCode } from '../../src/index.js';
import { qemuCheck, qemuImg, qemuIo, requireQemu, tmpDir } from '../support/qemu.js';
import { H, KiB, MiB, createQcow2, join, makeFullRaw, readBE, writeBE, writeBytes } from '../support/images.js';

const INT64_MAX = 0x7fffffffffffffffn;

let dir: string;
let counter = 0;

/** The qemu-made images fresh() copies, one per geometry (made once: two qemu children each). */
const templates = new Map<string, string>();

/** A fresh copy of a qemu-made image (64K clusters unless told), with one write at 0 so L1/L2 exist. */
function fresh(opts: Record<string, string | number> = {}, size = 1 * MiB, backing = false): string {
  const key = JSON.stringify([opts, size, backing]);
  let template = templates.get(key);
  if (!template) {
    template = join(dir, `template-${templates.size}.qcow2`);
    createQcow2(template, size, opts, backing ? { file: 'base.raw', format: 'raw' } : undefined);
    qemuIo(template, ['write -P 0x3c 0 4096']);
    templates.set(key, template);
  }
  const f = join(dir, `img-${counter++}.qcow2`);
  fs.copyFileSync(template, f);
  return f;
}

/** qemu-img's verdict: exit status of `info` and of `convert -O raw` (which reads every cluster). */
function qemuVerdict(file: string): { info: number; convert: number } {
  const out = join(dir, `q-${counter++}.raw`);
  const info = spawnSync('qemu-img', ['info', '-f', 'qcow2', file], { encoding: 'utf8' });
  const convert = spawnSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', file, out], { encoding: 'utf8' });
  fs.rmSync(out, { force: true });
  // A crash (signal) counts as a refusal too: status null.
  return { info: info.status ?? -1, convert: convert.status ?? -1 };
}

/** The message names the value, in decimal or in hex. */
function expectNames(message: string, value: bigint | number): void {
  const v = BigInt(value);
  const forms = [v.toString(), `0x${v.toString(16)}`];
  expect(forms.some((f) => message.includes(f)), `"${message}" should name ${forms.join(' or ')}`).toBe(true);
}

function openError(file: string, format: 'qcow2' | undefined = 'qcow2'): CowError {
  try {
    const img = openImage(file, { format });
    img.close();
  } catch (e) {
    expect(e).toBeInstanceOf(CowError);
    return e as CowError;
  }
  throw new Error(`openImage(${file}) succeeded, expected a CowError`);
}

/** Write header extensions (magic, data) at header_length, followed by the end marker. */
function extensions(file: string, exts: { magic: number; len?: number; data: Uint8Array }[]): void {
  const hl = Number(readBE(file, H.headerLength, 4));
  const parts: Buffer[] = [];
  for (const e of exts) {
    const head = Buffer.alloc(8);
    head.writeUInt32BE(e.magic, 0);
    head.writeUInt32BE(e.len ?? e.data.length, 4);
    const body = Buffer.alloc((e.data.length + 7) & ~7);
    body.set(e.data);
    parts.push(head, body);
  }
  parts.push(Buffer.alloc(8));
  writeBytes(file, hl, Buffer.concat(parts));
}

interface HeaderCase {
  name: string;
  code: CowErrorCode;
  /** Make the bad image; returns it and the value the message must name. */
  make(): { file: string; value: bigint | number };
  /**
   * How qemu-img refuses it: 'info' = `qemu-img info` already fails; 'read' = info still prints
   * the header (qemu opens it without I/O) but `convert` fails.
   */
  qemu: 'info' | 'read';
}

const patch = (opts: Record<string, string | number>, field: keyof typeof H, width: 1 | 4 | 8, value: bigint | number, size?: number, backing = false) => () => {
  const file = fresh(opts, size, backing);
  writeBE(file, H[field], width, value);
  return { file, value };
};

const CASES: HeaderCase[] = [
  // --- magic and version ---
  { name: 'magic QFI\\xfc', code: 'ECOW_BAD_MAGIC', qemu: 'info', make: patch({}, 'magic', 4, 0x514649fc) },
  { name: 'magic zero', code: 'ECOW_BAD_MAGIC', qemu: 'info', make: patch({}, 'magic', 4, 0) },
  { name: 'version 1', code: 'ECOW_BAD_VERSION', qemu: 'info', make: patch({}, 'version', 4, 1) },
  { name: 'version 4', code: 'ECOW_BAD_VERSION', qemu: 'info', make: patch({}, 'version', 4, 4) },
  { name: 'version 0xffffffff', code: 'ECOW_BAD_VERSION', qemu: 'info', make: patch({}, 'version', 4, 0xffffffff) },
  // --- cluster_bits ---
  { name: 'cluster_bits 8', code: 'ECOW_BAD_CLUSTER_BITS', qemu: 'info', make: patch({}, 'clusterBits', 4, 8) },
  { name: 'cluster_bits 22', code: 'ECOW_BAD_CLUSTER_BITS', qemu: 'info', make: patch({}, 'clusterBits', 4, 22) },
  { name: 'cluster_bits 0xffffffff', code: 'ECOW_BAD_CLUSTER_BITS', qemu: 'info', make: patch({}, 'clusterBits', 4, 0xffffffff) },
  // --- header_length ---
  { name: 'header_length 103', code: 'ECOW_BAD_HEADER_LENGTH', qemu: 'info', make: patch({}, 'headerLength', 4, 103) },
  { name: 'header_length 0', code: 'ECOW_BAD_HEADER_LENGTH', qemu: 'info', make: patch({}, 'headerLength', 4, 0) },
  { name: 'header_length beyond the cluster (65544)', code: 'ECOW_BAD_HEADER_LENGTH', qemu: 'info', make: patch({}, 'headerLength', 4, 65544) },
  { name: 'header_length beyond a 4K cluster (4100)', code: 'ECOW_BAD_HEADER_LENGTH', qemu: 'info', make: patch({ cluster_size: 4096 }, 'headerLength', 4, 4100) },
  {
    // The missing bytes read as zeros, as in qemu: header_length 0.
    name: 'file cut inside the header (50 bytes)',
    code: 'ECOW_BAD_HEADER_LENGTH',
    qemu: 'info',
    make() {
      const file = fresh();
      fs.truncateSync(file, 50);
      return { file, value: 0 };
    },
  },
  // --- backing file name ---
  { name: 'backing_file_offset beyond the cluster', code: 'ECOW_BAD_BACKING_NAME', qemu: 'info', make: patch({}, 'backingOffset', 8, 65537, undefined, true) },
  { name: 'backing_file_offset 2^63', code: 'ECOW_BAD_BACKING_NAME', qemu: 'info', make: patch({}, 'backingOffset', 8, 1n << 63n, undefined, true) },
  { name: 'backing_file_size 1024 (> 1023)', code: 'ECOW_BAD_BACKING_NAME', qemu: 'info', make: patch({}, 'backingSize', 4, 1024, undefined, true) },
  {
    name: 'backing name running past the end of a 4K cluster',
    code: 'ECOW_BAD_BACKING_NAME',
    qemu: 'info',
    make() {
      const file = fresh({ cluster_size: 4096 }, 1 * MiB, true);
      writeBE(file, H.backingOffset, 8, 4000);
      writeBE(file, H.backingSize, 4, 200);
      return { file, value: 200 };
    },
  },
  // --- incompatible features ---
  { name: 'unknown incompatible bit 5', code: 'ECOW_UNSUPPORTED_FEATURE', qemu: 'info', make: patch({}, 'incompat', 8, 0x20) },
  { name: 'unknown incompatible bit 63', code: 'ECOW_UNSUPPORTED_FEATURE', qemu: 'info', make: patch({}, 'incompat', 8, 1n << 63n) },
  // qemu-img info opens an external-data-file image without its data file (no I/O), reading fails.
  {
    name: 'external data file bit (2)',
    code: 'ECOW_UNSUPPORTED_FEATURE',
    qemu: 'read',
    make() {
      const file = fresh();
      writeBE(file, H.incompat, 8, 4);
      return { file, value: 2 }; // named as "bit 2"
    },
  },
  // Issue 20: qemu opens it for info only ("data-file-raw requires a data file" on read).
  { name: 'autoclear data-file-raw (bit 1) without an external data file', code: 'ECOW_UNSUPPORTED_FEATURE', qemu: 'read', make: patch({}, 'autoclear', 8, 2) },
  {
    name: 'extended L2 with 8K clusters (256-byte subclusters)',
    code: 'ECOW_BAD_CLUSTER_BITS',
    qemu: 'info',
    make() {
      const file = fresh({ extended_l2: 'on', cluster_size: 16 * KiB });
      writeBE(file, H.clusterBits, 4, 13);
      return { file, value: 13 };
    },
  },
  // --- compression type ---
  {
    name: 'compression type 2 (unknown) with its feature bit',
    code: 'ECOW_BAD_COMPRESSION',
    qemu: 'info',
    make() {
      const file = fresh();
      writeBE(file, H.incompat, 8, 8);
      writeBE(file, H.compressionType, 1, 2);
      return { file, value: 2 };
    },
  },
  { name: 'compression type 1 (zstd) without its feature bit', code: 'ECOW_BAD_COMPRESSION', qemu: 'info', make: patch({}, 'compressionType', 1, 1) },
  {
    name: 'compression feature bit with type 0 (deflate)',
    code: 'ECOW_BAD_COMPRESSION',
    qemu: 'info',
    make() {
      const file = fresh({ compression_type: 'zstd' });
      expect(readBE(file, H.incompat, 8) & 8n).toBe(8n);
      writeBE(file, H.compressionType, 1, 0);
      return { file, value: 0 };
    },
  },
  // --- refcount order ---
  { name: 'refcount_order 7', code: 'ECOW_BAD_REFCOUNT_ORDER', qemu: 'info', make: patch({}, 'refcountOrder', 4, 7) },
  { name: 'refcount_order 0xffffffff', code: 'ECOW_BAD_REFCOUNT_ORDER', qemu: 'info', make: patch({}, 'refcountOrder', 4, 0xffffffff) },
  // --- refcount table ---
  { name: 'refcount_table_clusters 0', code: 'ECOW_BAD_REFCOUNT_TABLE', qemu: 'info', make: patch({}, 'rtClusters', 4, 0) },
  { name: 'refcount table unaligned', code: 'ECOW_BAD_REFCOUNT_TABLE', qemu: 'info', make: patch({}, 'rtOffset', 8, 0x10008) },
  { name: 'refcount table of 129 64K clusters (> 8 MiB)', code: 'ECOW_BAD_REFCOUNT_TABLE', qemu: 'info', make: patch({}, 'rtClusters', 4, 129) },
  { name: 'refcount table offset + size overflowing int64', code: 'ECOW_BAD_REFCOUNT_TABLE', qemu: 'info', make: patch({}, 'rtOffset', 8, 0x7fffffffffff0000n) },
  // --- L1 table ---
  { name: 'L1 table unaligned', code: 'ECOW_BAD_L1_TABLE', qemu: 'info', make: patch({}, 'l1Offset', 8, 0x30008) },
  { name: 'L1 table too small for the size (l1_size 0)', code: 'ECOW_BAD_L1_TABLE', qemu: 'info', make: patch({}, 'l1Size', 4, 0) },
  {
    name: 'L1 table too small for the size (size grown to 1 TiB)',
    code: 'ECOW_BAD_L1_TABLE',
    qemu: 'info',
    make() {
      const file = fresh();
      writeBE(file, H.size, 8, 1n << 40n);
      return { file, value: 1n << 40n };
    },
  },
  { name: 'L1 table over 32 MiB (0x400001 entries)', code: 'ECOW_BAD_L1_TABLE', qemu: 'info', make: patch({}, 'l1Size', 4, 0x400001) },
  {
    name: 'L1 table offset + size overflowing int64',
    code: 'ECOW_BAD_L1_TABLE',
    qemu: 'info',
    make() {
      const file = fresh();
      writeBE(file, H.l1Size, 4, 0x400000);
      writeBE(file, H.l1Offset, 8, 0x7fffffffffff0000n);
      return { file, value: 0x7fffffffffff0000n };
    },
  },
  // --- virtual size ---
  { name: 'size needing more than INT_MAX L1 entries (2^61)', code: 'ECOW_BAD_SIZE', qemu: 'info', make: patch({}, 'size', 8, 1n << 61n) },
  { name: 'size 2^64-1', code: 'ECOW_BAD_SIZE', qemu: 'info', make: patch({}, 'size', 8, (1n << 64n) - 1n) },
  // --- snapshot table ---
  { name: '65537 snapshots', code: 'ECOW_BAD_SNAPSHOT_TABLE', qemu: 'info', make: patch({}, 'nbSnapshots', 4, 65537) },
  { name: 'snapshot table unaligned (no snapshots)', code: 'ECOW_BAD_SNAPSHOT_TABLE', qemu: 'info', make: patch({}, 'snapshotsOffset', 8, 0x10008) },
  {
    name: 'snapshot table offset + size overflowing int64',
    code: 'ECOW_BAD_SNAPSHOT_TABLE',
    qemu: 'info',
    make() {
      const file = fresh();
      writeBE(file, H.nbSnapshots, 4, 65536);
      writeBE(file, H.snapshotsOffset, 8, INT64_MAX - 0xffffn);
      return { file, value: INT64_MAX - 0xffffn };
    },
  },
  // Issue 20: one snapshot whose table is the header itself; its extra_data_size is the header's
  // l1_size (2000), over qemu's 1024 ("Too much extra metadata in snapshot table entry 0").
  {
    name: 'snapshot table at offset 0 (the header) with too much extra data',
    code: 'ECOW_BAD_SNAPSHOT_TABLE',
    qemu: 'info',
    make() {
      const file = fresh();
      writeBE(file, H.nbSnapshots, 4, 1);
      writeBE(file, H.l1Size, 4, 2000);
      return { file, value: 2000 };
    },
  },
  // --- encryption ---
  { name: 'crypt_method 3', code: 'ECOW_BAD_CRYPT_METHOD', qemu: 'info', make: patch({}, 'cryptMethod', 4, 3) },
  { name: 'crypt_method 0xffffffff', code: 'ECOW_BAD_CRYPT_METHOD', qemu: 'info', make: patch({}, 'cryptMethod', 4, 0xffffffff) },
  // qemu-img info prints an AES image without its key; reading needs the key.
  { name: 'crypt_method 1 (AES)', code: 'ECOW_ENCRYPTED', qemu: 'read', make: patch({}, 'cryptMethod', 4, 1) },
  // qemu-img 7.2 info crashes (SIGSEGV) on LUKS without its crypto header; convert refuses cleanly.
  { name: 'crypt_method 2 (LUKS) without its crypto header extension', code: 'ECOW_BAD_LUKS_HEADER', qemu: 'info', make: patch({}, 'cryptMethod', 4, 2) },
  // --- header extensions ---
  {
    name: 'unknown extension overrunning cluster 0',
    code: 'ECOW_BAD_EXTENSION',
    qemu: 'info',
    make() {
      const file = fresh();
      extensions(file, [{ magic: 0x11223344, len: 0x10000, data: new Uint8Array(8) }]);
      return { file, value: 0x10000 };
    },
  },
  {
    name: 'extension header overrunning the area that ends at the backing name',
    code: 'ECOW_BAD_EXTENSION',
    qemu: 'info',
    make() {
      const file = fresh({}, 1 * MiB, true);
      // Area [112, 116): not even room for one extension header.
      const name = Buffer.from('base.raw');
      writeBytes(file, 116, name);
      writeBE(file, H.backingOffset, 8, 116);
      return { file, value: 112 };
    },
  },
  {
    name: 'backing format extension of 16 bytes',
    code: 'ECOW_BAD_EXTENSION',
    qemu: 'info',
    make() {
      const file = fresh({}, 1 * MiB, true);
      extensions(file, [{ magic: 0xe2792aca, data: Buffer.from('rawrawrawrawrawr') }]);
      return { file, value: 16 };
    },
  },
  {
    name: 'bitmaps extension of 16 bytes (must be 24)',
    code: 'ECOW_BAD_EXTENSION',
    qemu: 'info',
    make() {
      const file = fresh();
      extensions(file, [{ magic: 0x23852875, data: new Uint8Array(16) }]);
      return { file, value: 16 };
    },
  },
  // Issue 20: with the bitmaps autoclear bit set, qemu validates the extension's fields.
  {
    name: 'bitmaps extension with a non-zero reserved field (autoclear bit 0 set)',
    code: 'ECOW_BAD_BITMAPS',
    qemu: 'info',
    make() {
      const file = fresh();
      const data = Buffer.alloc(24);
      data.writeUInt32BE(1, 0);
      data.writeUInt32BE(7, 4);
      data.writeUInt32BE(64, 12);
      data.writeUInt32BE(0x50000, 20);
      extensions(file, [{ magic: 0x23852875, data }]);
      writeBE(file, H.autoclear, 8, 1);
      return { file, value: 7 };
    },
  },
  {
    name: 'bitmap directory entry with granularity bits 8 (autoclear bit 0 set)',
    code: 'ECOW_BAD_BITMAPS',
    qemu: 'info',
    make() {
      const file = fresh();
      const data = Buffer.alloc(24);
      data.writeUInt32BE(1, 0);
      data.writeUInt32BE(32, 12); // directory size
      data.writeUInt32BE(0x100000, 20); // directory offset
      extensions(file, [{ magic: 0x23852875, data }]);
      const entry = Buffer.alloc(32);
      entry.writeUInt32BE(0x110000, 4); // table offset
      entry.writeUInt32BE(1, 8); // table size
      entry[16] = 1; // type
      entry[17] = 8; // granularity bits
      entry.writeUInt16BE(2, 18);
      entry.write('b0', 24);
      writeBytes(file, 0x100000, entry);
      writeBE(file, H.autoclear, 8, 1);
      return { file, value: 8 };
    },
  },
  {
    name: 'crypto header extension in an unencrypted image',
    code: 'ECOW_BAD_EXTENSION',
    qemu: 'info',
    make() {
      const file = fresh();
      const data = Buffer.alloc(16);
      data.writeBigUInt64BE(0x30000n, 0);
      data.writeBigUInt64BE(0x1000n, 8);
      extensions(file, [{ magic: 0x0537be77, data }]);
      return { file, value: 0x537be77 };
    },
  },
];

beforeAll(() => {
  requireQemu();
  dir = tmpDir('cowchain-malformed-', { memory: true }); // patched headers, opens and reads: no fsync or holes observed
  makeFullRaw(join(dir, 'base.raw'), 1 * MiB, 7);
});

describe('the unpatched images open (the patches are what breaks them)', () => {
  it.each([
    ['plain', {}, false],
    ['with backing', {}, true],
    ['4K clusters', { cluster_size: 4096 }, false],
    ['zstd', { compression_type: 'zstd' }, false],
  ] as const)('%s', (_n, opts, backing) => {
    const f = fresh(opts, 1 * MiB, backing);
    const img = openImage(f);
    expect(Array.from(img.read(0, 8))).toEqual(new Array(8).fill(0x3c));
    img.close();
    expect(qemuVerdict(f)).toEqual({ info: 0, convert: 0 });
  });
});

describe("qemu's open-time checks", () => {
  it.each(CASES.map((c) => [c.name, c] as const))('%s', (_n, c) => {
    const { file, value } = c.make();
    const err = openError(file);
    expect(err.code, err.message).toBe(c.code);
    expectNames(err.message, value);
    const v = qemuVerdict(file);
    if (c.qemu === 'info') expect(v.info, 'qemu-img info refuses it').not.toBe(0);
    else expect(v.info, 'qemu-img info prints it').toBe(0);
    expect(v.convert, 'qemu-img convert refuses it').not.toBe(0);
  });

  it('every header error class is covered', () => {
    const covered = new Set(CASES.map((c) => c.code));
    for (const code of [
      'ECOW_BAD_MAGIC', 'ECOW_BAD_VERSION', 'ECOW_BAD_CLUSTER_BITS', 'ECOW_BAD_HEADER_LENGTH', 'ECOW_BAD_BACKING_NAME',
      'ECOW_UNSUPPORTED_FEATURE', 'ECOW_BAD_COMPRESSION', 'ECOW_BAD_REFCOUNT_ORDER', 'ECOW_BAD_REFCOUNT_TABLE',
      'ECOW_BAD_L1_TABLE', 'ECOW_BAD_SIZE', 'ECOW_BAD_SNAPSHOT_TABLE', 'ECOW_BAD_CRYPT_METHOD', 'ECOW_ENCRYPTED',
      'ECOW_BAD_EXTENSION', 'ECOW_BAD_BITMAPS', 'ECOW_BAD_LUKS_HEADER',
    ] as CowErrorCode[]) {
      expect(covered.has(code), code).toBe(true);
    }
  });

  // Issue 20: qemu's block layer counts whole sectors; a guest never sees a partial last one.
  it('a virtual size that is not a multiple of 512 reads as its whole sectors, as qemu shows it', () => {
    const file = fresh({}, 64 * MiB);
    writeBE(file, H.size, 8, 0x4000001);
    const img = openImage(file);
    try {
      expect(img.virtualSize).toBe(0x4000000);
      expect(img.headerInfo().virtualSize).toBe(0x4000000);
      expect(Array.from(img.read(0, 4))).toEqual([0x3c, 0x3c, 0x3c, 0x3c]);
    } finally {
      img.close();
    }
    expect(JSON.parse(qemuImg(['info', '--output=json', file]).stdout)['virtual-size']).toBe(0x4000000);
  });

  // Issue 20: qemu copies the name into a C string, so it ends at the first NUL.
  it('a backing file name followed by NUL bytes names the file before the first NUL', () => {
    fs.copyFileSync(fresh(), join(dir, 'nul-base.qcow2'));
    const file = fresh();
    const name = Buffer.from('nul-base.qcow2\0\0\0junk');
    writeBytes(file, 0x1000, name);
    writeBE(file, H.backingOffset, 8, 0x1000);
    writeBE(file, H.backingSize, 4, name.length);
    const img = openImage(file);
    try {
      expect(img.backing?.filename).toBe(join(dir, 'nul-base.qcow2'));
      expect(img.headerInfo().backingFile).toBe('nul-base.qcow2');
    } finally {
      img.close();
    }
    expect(JSON.parse(qemuImg(['info', '--output=json', file]).stdout)['backing-filename']).toBe('nul-base.qcow2');
    expect(qemuVerdict(file)).toEqual({ info: 0, convert: 0 });
  });

  it('a bad magic without a forced format is probed as raw, as qemu-img does', () => {
    const file = fresh();
    writeBE(file, H.magic, 4, 0x514649fc);
    const img = openImage(file);
    expect(img.format).toBe('raw');
    expect(img.virtualSize).toBe(fs.statSync(file).size);
    img.close();
    expect(JSON.parse(qemuImg(['info', '--output=json', file]).stdout).format).toBe('raw');
  });
});

// ---------- run-time corruption ----------

/** Host offsets of L1[0], L2[0] and data cluster 0 of an image with one write at guest 0. */
function layout(file: string): { l1: number; l2: number; data: number; entry: number } {
  const l1 = Number(readBE(file, H.l1Offset, 8));
  const l2 = Number(readBE(file, l1, 8) & 0x00fffffffffffe00n);
  const data = Number(readBE(file, l2, 8) & 0x00fffffffffffe00n);
  expect(l2).toBeGreaterThan(0);
  expect(data).toBeGreaterThan(0);
  return { l1, l2, data, entry: l2 };
}

function expectCorruptRead(file: string, off: number, len: number, mention: bigint | number): void {
  const img = openImage(file);
  try {
    let err: unknown;
    try {
      img.read(off, len);
    } catch (e) {
      err = e;
    }
    expect(isCowError(err, 'ECOW_CORRUPT'), String(err)).toBe(true);
    expectNames((err as CowError).message, mention);
    // map() walks the same entries.
    let mapErr: unknown;
    try {
      img.map();
    } catch (e) {
      mapErr = e;
    }
    if (mapErr !== undefined) expect(isCowError(mapErr), String(mapErr)).toBe(true);
    // The image stays usable: a range under another L1 entry (images here are 1 GiB) still reads.
    expect(img.read(img.virtualSize - 4096, 4096).length).toBe(4096);
  } finally {
    img.close();
  }
}

describe('run-time corruption: the affected read fails with ECOW_CORRUPT', () => {
  it('L1 entry with an unaligned L2 offset (qemu-img convert refuses too)', () => {
    const f = fresh({}, 1024 * MiB);
    const { l1, l2 } = layout(f);
    writeBE(f, l1, 8, (1n << 63n) | BigInt(l2 + 0x200));
    expectCorruptRead(f, 0, 4096, l2 + 0x200);
    expect(qemuVerdict(f).convert).not.toBe(0);
  });

  it('L2 entry with an unaligned data offset (qemu-img convert refuses too)', () => {
    const f = fresh({}, 1024 * MiB);
    const { l2, data } = layout(f);
    writeBE(f, l2, 8, (1n << 63n) | BigInt(data + 0x200));
    expectCorruptRead(f, 100, 1000, data + 0x200);
    expect(qemuVerdict(f).convert).not.toBe(0);
  });

  it('zero flag in a compat 0.10 image (qemu-img convert refuses too)', () => {
    const f = fresh({ compat: '0.10' }, 1024 * MiB);
    const { l2, data } = layout(f);
    writeBE(f, l2, 8, (1n << 63n) | BigInt(data) | 1n);
    const entry = (1n << 63n) | BigInt(data) | 1n;
    expectCorruptRead(f, 0, 512, entry);
    expect(qemuVerdict(f).convert).not.toBe(0);
  });

  it('extended L2 bitmap with a subcluster both allocated and zero (qemu-img convert refuses too)', () => {
    const f = fresh({ extended_l2: 'on', cluster_size: 64 * KiB }, 1024 * MiB);
    const { l2 } = layout(f);
    const bitmap = readBE(f, l2 + 8, 8);
    expect(bitmap & 1n).toBe(1n); // subcluster 0 allocated by the write
    const bad = bitmap | (1n << 32n);
    writeBE(f, l2 + 8, 8, bad);
    expectCorruptRead(f, 0, 2048, bad);
    expect(qemuVerdict(f).convert).not.toBe(0);
  });

  it('extended L2 bitmap with allocated subclusters in an unallocated cluster', () => {
    const f = fresh({ extended_l2: 'on', cluster_size: 64 * KiB }, 1024 * MiB);
    const { l2 } = layout(f);
    // Cluster 1 is unallocated (offset 0): claim its subcluster 3 is allocated.
    writeBE(f, l2 + 16 + 8, 8, 1n << 3n);
    expectCorruptRead(f, 64 * KiB, 64 * KiB, 8);
    expect(qemuVerdict(f).convert).not.toBe(0);
  });

  // qemu reads a table or cluster past the end of the file as zeros; `qemu-img check` calls it
  // corruption ("exceeding the end of the file by one cluster or more"), and so do we, on read.
  it('L1 entry pointing past the end of the file', () => {
    const f = fresh({}, 1024 * MiB);
    const { l1 } = layout(f);
    const past = 0x1000000n;
    writeBE(f, l1, 8, (1n << 63n) | past);
    expectCorruptRead(f, 0, 4096, past);
    expect(qemuCheck(f).status).toBe(2);
  });

  it('L2 entry pointing past the end of the file', () => {
    const f = fresh({}, 1024 * MiB);
    const { l2 } = layout(f);
    const past = 0x1000000n;
    writeBE(f, l2, 8, (1n << 63n) | past);
    expectCorruptRead(f, 0, 4096, past);
    expect(qemuCheck(f).status).toBe(2);
  });

  it('L1 table itself past the end of the file fails at open', () => {
    const f = fresh({}, 1024 * MiB);
    writeBE(f, H.l1Offset, 8, 0x1000000);
    const err = openError(f);
    expect(err.code).toBe('ECOW_CORRUPT');
    expectNames(err.message, 0x1000000);
  });
});

// ---------- property: random header bytes ----------

describe('random bytes in the first 112 header bytes', () => {
  it('openImage succeeds or throws a CowError, never anything else, never hangs, never leaks', () => {
    const f = fresh({}, 1024 * MiB, true);
    qemuIo(f, ['write -P 0x11 1M 64k', 'write -z 2M 64k']);
    const valid = fs.readFileSync(f).subarray(0, 112);
    const target = join(dir, 'fuzz.qcow2');
    fs.copyFileSync(f, target);
    let opened = 0;
    const codes = new Map<string, number>();
    const memBefore = Engine.get().memoryBytes();
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 111 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }),
        fc.boolean(),
        (patches, forceFormat) => {
          const head = Buffer.from(valid);
          for (const [at, b] of patches) head[at] = b;
          writeBytes(target, 0, head);
          let img;
          try {
            img = openImage(target, forceFormat ? { format: 'qcow2' } : {});
          } catch (e) {
            if (!(e instanceof CowError)) throw e;
            codes.set(e.code, (codes.get(e.code) ?? 0) + 1);
            return;
          }
          opened++;
          try {
            img.headerInfo();
            const n = Math.min(img.virtualSize, 128 * KiB);
            if (n > 0) img.read(0, n);
          } catch (e) {
            if (!(e instanceof CowError)) throw e;
          } finally {
            img.close();
          }
        },
      ),
      { numRuns: 3000, seed: 0x5eed },
    );
    // Both outcomes really happen, for many reasons.
    expect(opened).toBeGreaterThan(0);
    expect(codes.size, JSON.stringify([...codes])).toBeGreaterThan(8);
    // Thousands of refused opens leave no native memory behind.
    expect(Engine.get().memoryBytes()).toBeLessThanOrEqual(memBefore + 16 * MiB);
  });
});
