// Building blocks for the read-path acceptance tests: a seeded PRNG, qemu-made images with
// deterministic (pseudo-random) contents, big-endian header patching, and the comparisons against
// the referee (qemu-img info / map / convert).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { expect } from 'vitest';
import { qemuImg, qemuIo } from './qemu.js';

/** mulberry32: small, fast, deterministic. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Integer in [lo, hi). */
export function randInt(r: () => number, lo: number, hi: number): number {
  return lo + Math.floor(r() * (hi - lo));
}

/** A non-zero pattern byte for qemu-io `write -P`. */
export function patternByte(r: () => number): number {
  return randInt(r, 1, 256);
}

export const KiB = 1024;
export const MiB = 1024 * 1024;

/**
 * A raw file of `size` bytes with contents that are compressible but differ block by block: most
 * 4 KiB blocks repeat a short seeded motif, some are random (incompressible, so `convert -c`
 * stores those clusters uncompressed), some are all zeros.
 */
export function writePatternedRaw(file: string, size: number, seed: number): Buffer {
  const r = rng(seed);
  const buf = Buffer.alloc(size);
  for (let off = 0; off < size; off += 4096) {
    const end = Math.min(size, off + 4096);
    const kind = r();
    if (kind < 0.15) continue; // zeros
    if (kind < 0.3) {
      for (let i = off; i < end; i++) buf[i] = Math.floor(r() * 256);
      continue;
    }
    const motif = Array.from({ length: randInt(r, 3, 40) }, () => Math.floor(r() * 256));
    for (let i = off; i < end; i++) buf[i] = motif[(i - off) % motif.length];
  }
  fs.writeFileSync(file, buf);
  return buf;
}

export interface WriteMix {
  /** Number of qemu-io commands. */
  count: number;
  /** Largest length of one command. */
  maxLen: number;
  /** Share of `write -z` (zero writes); needs compat 1.1 to give zero clusters. */
  zeroShare?: number;
  /** Share of `discard`. */
  discardShare?: number;
  /** Share of `write -z -u` (zero with unmap). */
  zeroUnmapShare?: number;
  /** Alignment of offsets and lengths (1 = byte granular; default 512). */
  align?: number;
  /** Keep commands inside [lo, hi) (default the whole size). */
  lo?: number;
  hi?: number;
}

/** Seeded qemu-io commands: pattern writes mixed with zero writes and discards. */
export function randomCommands(seed: number, size: number, mix: WriteMix): string[] {
  const r = rng(seed);
  const align = mix.align ?? 512;
  const lo = mix.lo ?? 0;
  const hi = mix.hi ?? size;
  const cmds: string[] = [];
  for (let i = 0; i < mix.count; i++) {
    const len = Math.max(align, Math.floor(randInt(r, 1, mix.maxLen + 1) / align) * align);
    const off = Math.floor(randInt(r, lo, Math.max(lo + 1, hi - len)) / align) * align;
    const k = r();
    let z = mix.zeroShare ?? 0;
    const u = z + (mix.zeroUnmapShare ?? 0);
    const d = u + (mix.discardShare ?? 0);
    if (k < z) cmds.push(`write -z ${off} ${len}`);
    else if (k < u) cmds.push(`write -z -u ${off} ${len}`);
    else if (k < d) cmds.push(`discard ${off} ${len}`);
    else cmds.push(`write -P ${patternByte(r)} ${off} ${len}`);
  }
  return cmds;
}

/** Run many qemu-io commands on one image (batched to keep argument lists short). */
export function qemuIoMany(file: string, cmds: string[], format?: string): void {
  for (let i = 0; i < cmds.length; i += 200) qemuIo(file, cmds.slice(i, i + 200), format);
}

/**
 * A raw file of `size` bytes (rounded up to whole sectors, as qemu-img create rounds it) written
 * entirely with non-zero patterns, `pieces` runs of one seeded byte each, so that it has no holes
 * (without the native binding our raw layer reports every byte as data; qemu reports holes as
 * zero). The bytes qemu-io `write -P` would write, without the two qemu children.
 */
export function makeFullRaw(file: string, size: number, seed: number, pieces = 16): void {
  const buf = Buffer.alloc(Math.ceil(size / 512) * 512);
  const r = rng(seed);
  const step = Math.ceil(size / pieces / 512) * 512;
  for (let off = 0; off < size; off += step) buf.fill(patternByte(r), off, Math.min(off + step, size));
  fs.writeFileSync(file, buf);
}

/** `qemu-img create -f qcow2` with options; returns the path. */
export function createQcow2(file: string, size: number | string, opts: Record<string, string | number> = {}, backing?: { file: string; format: string }): string {
  const o = Object.entries(opts).map(([k, v]) => `${k}=${v}`);
  const args = ['create', '-f', 'qcow2'];
  if (o.length) args.push('-o', o.join(','));
  if (backing) args.push('-b', backing.file, '-F', backing.format);
  args.push(file, String(size));
  qemuImg(args);
  return file;
}

// ---------- header patching ----------

export function readBE(file: string, offset: number, width: 1 | 2 | 4 | 8): bigint {
  const fd = fs.openSync(file, 'r');
  try {
    const b = Buffer.alloc(width);
    fs.readSync(fd, b, 0, width, offset);
    let v = 0n;
    for (const x of b) v = (v << 8n) | BigInt(x);
    return v;
  } finally {
    fs.closeSync(fd);
  }
}

export function writeBE(file: string, offset: number, width: 1 | 2 | 4 | 8, value: bigint | number): void {
  let v = BigInt(value);
  const b = Buffer.alloc(width);
  for (let i = width - 1; i >= 0; i--) {
    b[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, b, 0, width, offset);
  } finally {
    fs.closeSync(fd);
  }
}

export function writeBytes(file: string, offset: number, bytes: Uint8Array): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, bytes, 0, bytes.length, offset);
  } finally {
    fs.closeSync(fd);
  }
}

/** Header field offsets (qcow2 spec; big-endian). */
export const H = {
  magic: 0,
  version: 4,
  backingOffset: 8,
  backingSize: 16,
  clusterBits: 20,
  size: 24,
  cryptMethod: 32,
  l1Size: 36,
  l1Offset: 40,
  rtOffset: 48,
  rtClusters: 56,
  nbSnapshots: 60,
  snapshotsOffset: 64,
  incompat: 72,
  compat: 80,
  autoclear: 88,
  refcountOrder: 96,
  headerLength: 100,
  compressionType: 104,
} as const;

// ---------- comparisons against the referee ----------

/** JSON round trip: drops undefined properties so toStrictEqual compares what JSON would print. */
export function plain<T>(v: T): T {
  return JSON.parse(JSON.stringify(v)) as T;
}

/** Fields of `qemu-img info` that we must report whenever qemu does. */
export const REQUIRED_INFO_KEYS = [
  'virtual-size',
  'filename',
  'format',
  'cluster-size',
  'format-specific',
  'backing-filename',
  'full-backing-filename',
  'backing-filename-format',
  'dirty-flag',
  'actual-size',
] as const;

/** Our qemu-style info agrees with qemu's on every key we report, and reports all required keys. */
export function expectInfoMatches(ours: Record<string, unknown>, theirs: Record<string, unknown>, label = ''): void {
  const o = plain(ours);
  for (const k of REQUIRED_INFO_KEYS) {
    if (k in theirs) expect(o, `${label}: we must report "${k}" (qemu does)`).toHaveProperty([k]);
  }
  for (const k of Object.keys(o)) {
    expect(theirs, `${label}: we report "${k}" but qemu does not`).toHaveProperty([k]);
    expect(o[k], `${label}: info field "${k}"`).toStrictEqual(theirs[k]);
  }
}

/** First differing byte of two buffers, for readable failures (-1 when equal). */
export function firstDiff(a: Uint8Array, b: Uint8Array): number {
  // memcmp first: the byte loop below is for the (rare) failing case only.
  if (a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b)) return -1;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** Byte-for-byte equality with a short message (vitest would print megabytes otherwise). */
export function expectSameBytes(got: Uint8Array, want: Uint8Array, label: string): void {
  const d = firstDiff(got, want);
  const msg = d < 0 ? '' : `${label}: lengths ${got.length}/${want.length}, first difference at byte ${d} (got ${got[d]}, want ${want[d]})`;
  expect(msg, label).toBe('');
}

export function fileBytes(file: string): Buffer {
  return fs.readFileSync(file);
}

export function join(dir: string, name: string): string {
  return path.join(dir, name);
}
