// Writes the engine refuses, each with its code, and the header bits it must maintain (issue 3):
//   - an image opened read-only:             ECOW_READ_ONLY;
//   - internal snapshots (qemu-img snapshot -c): ECOW_INTERNAL_SNAPSHOTS (copy-on-write of shared
//     clusters is not implemented, so we refuse rather than overwrite a snapshot's data);
//   - the corrupt bit (incompatible bit 1):  ECOW_MARKED_CORRUPT;
//   - the dirty bit (incompatible bit 0):    ECOW_DIRTY. qemu would repair the refcounts on a
//     read-write open (lazy refcounts leave them stale) and then write; we REFUSE instead of
//     repairing — the caller runs `qemu-img check -r all` (or our check -r) first;
//   - unknown autoclear bits are cleared by the first write (bitmaps and the like we do not
//     maintain become stale the moment we write, and a cleared bit tells qemu so).
// Every refusal leaves the file byte for byte as it was (a refused write marks the image failed,
// and close() then abandons it without flushing), and reads keep working.
import * as fs from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { openImage, type CowErrorCode, type Image } from '../../src/index.js';
import { codeOf } from '../support/errors.js';
import { qemuCheck, qemuImg, qemuIo, requireQemu, tmpDir } from '../support/qemu.js';
import { H, join, readBE, writeBE } from '../support/images.js';

const MiB = 1 << 20;
let dir: string;

beforeAll(() => {
  requireQemu();
  dir = tmpDir('cowchain-write-refusals-');
});

/** A 4 MiB qcow2 with data written by qemu-io (0x5a over the first MiB). */
function fixture(name: string, opts = 'cluster_size=65536'): string {
  const f = join(dir, name);
  qemuImg(['create', '-q', '-f', 'qcow2', '-o', opts, f, String(4 * MiB)]);
  qemuIo(f, ['write -P 0x5a 0 1M']);
  return f;
}

/** Every kind of write is refused with `code`; the file is untouched; reads still work. */
function expectWritesRefused(file: string, code: CowErrorCode, open: () => Image): void {
  const before = fs.readFileSync(file);
  for (const attempt of [
    (img: Image) => img.write(0, new Uint8Array(512).fill(1)),
    (img: Image) => img.write(3 * MiB + 7, new Uint8Array(70000).fill(2)),
    (img: Image) => img.writeZeroes(0, 65536),
    (img: Image) => img.discard(0, MiB),
  ]) {
    const img = open();
    try {
      expect(codeOf(() => attempt(img))).toBe(code);
      // Reads are not affected by the refusal.
      expect(img.read(0, 4096).every((b) => b === 0x5a)).toBe(true);
      expect(img.read(MiB, 4096).every((b) => b === 0)).toBe(true);
    } finally {
      img.close();
    }
    expect(Buffer.compare(fs.readFileSync(file), before), 'the refused write left the file unchanged').toBe(0);
  }
}

describe('writes refused, with codes', () => {
  it('read-only open: ECOW_READ_ONLY', () => {
    const f = fixture('ro.qcow2');
    expectWritesRefused(f, 'ECOW_READ_ONLY', () => openImage(f));
    expectWritesRefused(f, 'ECOW_READ_ONLY', () => openImage(f, { writable: false }));
    // Flushing a read-only image is refused too (there is nothing it may write).
    const img = openImage(f);
    try {
      expect(codeOf(() => img.flush())).toBe('ECOW_READ_ONLY');
    } finally {
      img.close();
    }
    expect(qemuCheck(f).status).toBe(0);
  });

  it('internal snapshots (qemu-img snapshot -c s1): ECOW_INTERNAL_SNAPSHOTS; the snapshot stays intact', () => {
    const f = fixture('snap.qcow2');
    qemuImg(['snapshot', '-c', 's1', f]);
    expect(Number(readBE(f, H.nbSnapshots, 4))).toBe(1);
    expectWritesRefused(f, 'ECOW_INTERNAL_SNAPSHOTS', () => openImage(f, { writable: true }));
    expect(qemuCheck(f).status).toBe(0);
    // The snapshot still holds the data (qemu applies it back).
    qemuIo(f, ['write -P 0x11 0 64k']);
    qemuImg(['snapshot', '-a', 's1', f]);
    qemuIo(f, ['read -P 0x5a 0 1M']);
  });

  it('corrupt bit (incompatible bit 1): ECOW_MARKED_CORRUPT', () => {
    const f = fixture('corrupt.qcow2');
    writeBE(f, H.incompat, 8, readBE(f, H.incompat, 8) | 2n);
    expectWritesRefused(f, 'ECOW_MARKED_CORRUPT', () => openImage(f, { writable: true }));
    expect(readBE(f, H.incompat, 8) & 2n).toBe(2n);
    // qemu agrees the image is marked corrupt and refuses to open it read-write.
    expect(qemuImg(['info', '--output=json', f]).stdout).toMatch(/"corrupt": true/);
    const r = qemuImg(['amend', '-o', 'lazy_refcounts=off', f], { ok: [0, 1] });
    expect(r.status).toBe(1);
  });

  it('dirty bit (incompatible bit 0): ECOW_DIRTY — we refuse where qemu would repair', () => {
    // A lazy-refcounts image left dirty. qemu-io opening it read-write would replay the refcounts
    // (qcow2_mark_clean after a check); this engine refuses to write until it is repaired.
    const f = fixture('dirty.qcow2', 'cluster_size=65536,lazy_refcounts=on');
    writeBE(f, H.incompat, 8, readBE(f, H.incompat, 8) | 1n);
    expectWritesRefused(f, 'ECOW_DIRTY', () => openImage(f, { writable: true }));
    expect(readBE(f, H.incompat, 8) & 1n).toBe(1n);
    // After `qemu-img check -r all` clears the bit, the same write goes through.
    qemuImg(['check', '-r', 'all', f], { ok: [0, 1, 2, 3] });
    expect(readBE(f, H.incompat, 8) & 1n).toBe(0n);
    const img = openImage(f, { writable: true });
    try {
      img.write(0, new Uint8Array(512).fill(0x77));
    } finally {
      img.close();
    }
    expect(qemuCheck(f).status).toBe(0);
    qemuIo(f, ['read -P 0x77 0 512', 'read -P 0x5a 512 1047552']);
  });
});

describe('autoclear bits', () => {
  for (const [name, bits] of [
    ['unknown bits 2, 17 and 63', (1n << 2n) | (1n << 17n) | (1n << 63n)],
    ['bit 0 (bitmaps consistent) with no bitmaps extension', 1n],
  ] as const) {
    it(`${name} are cleared by the first write, before anything else reaches the file`, () => {
      const f = fixture(`autoclear-${bits}.qcow2`);
      writeBE(f, H.autoclear, 8, bits);
      const before = fs.readFileSync(f);
      // Opening read-write and reading does not touch the header.
      const ro = openImage(f, { writable: true });
      try {
        expect(ro.read(0, 512).every((b) => b === 0x5a)).toBe(true);
      } finally {
        ro.close();
      }
      expect(Buffer.compare(fs.readFileSync(f), before)).toBe(0);
      const img = openImage(f, { writable: true });
      try {
        img.write(2 * MiB, new Uint8Array(4096).fill(0x42));
        // Cleared with the first write (durably, before the data).
        expect(readBE(f, H.autoclear, 8)).toBe(0n);
      } finally {
        img.close();
      }
      expect(readBE(f, H.autoclear, 8)).toBe(0n);
      // The rest of the header is as it was: incompatible and compatible bits, sizes, tables.
      for (const [field, width] of [[H.incompat, 8], [H.compat, 8], [H.size, 8], [H.l1Offset, 8], [H.rtOffset, 8], [H.headerLength, 4]] as const) {
        const was = width === 8 ? before.readBigUInt64BE(field) : BigInt(before.readUInt32BE(field));
        expect(readBE(f, field, width), `header field at ${field}`).toBe(was);
      }
      const reopened = openImage(f);
      try {
        expect(reopened.headerInfo().autoclearFeatures).toBe(0);
        expect(reopened.read(2 * MiB, 4096).every((b) => b === 0x42)).toBe(true);
      } finally {
        reopened.close();
      }
      expect(qemuCheck(f).status).toBe(0);
      qemuIo(f, ['read -P 0x5a 0 1M', 'read -P 0x42 2M 4k']);
    });
  }
});
