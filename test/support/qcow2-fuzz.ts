/**
 * Structured fuzzing of the engine on in-memory qcow2 images (issue 8): small valid images made
 * once, patched per case — header fields at their boundary values, header extension lists, L1 /
 * L2 / refcount table entries, refcount block entries, extended-L2 bitmaps, compressed cluster
 * descriptors and raw bytes — then opened, read, written once and checked.
 *
 * Property of every case (runCase):
 *  - every failure is a CowError, and never ECOW_INTERNAL (an engine trap or abort is a bug);
 *  - no guest data ever lands on metadata: the payload of the write is a per-case 8-byte marker
 *    repeated, and the backend records any write that puts it inside what the patched image uses
 *    as header, L1/L2 table, refcount table or refcount block (qemu's overlap check's ranges);
 *  - an image our check calls clean stays clean after the write (whether it succeeded or
 *    failed), and a write that succeeded reads back, with every other byte as before;
 *  - the engine's memory stays under a fixed bound.
 * A hang is caught by the caller (the fuzz runs in a worker thread under a watchdog).
 *
 * No vitest imports here: this module also runs inside worker threads.
 */
import fc from 'fast-check';
import { CowError, MemoryBackend, createQcow2On, engineMemoryBytes, openImageOn, type Backend, type Image } from '../../src/index.js';
import { checkOpenImage } from '../../src/image/check.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
/**
 * The engine's wasm memory may never grow past this (it never shrinks: a peak is forever). What
 * the engine may legitimately hold at once is ~60 MiB at most (check's counting window <= 32 MiB,
 * a refcount table <= 8 MiB — read whole even past the end of the file, as qemu does — the
 * per-image L2 and refcount block caches, check's block cache; L1 tables are bounded by our small
 * files), and AssemblyScript grows linear memory by doubling it, so a fragmented heap may take
 * twice the live peak. A leak of even ~100 bytes per case crosses this within `npm run fuzz`.
 */
export const MEMORY_BOUND = 128 * MiB;
/** The in-memory "disk": writes or truncates past this fail like a full disk (ENOSPC). */
export const DISK_CAP = 8 * MiB;
/** Guest bytes read per case: the whole virtual size, up to this (plus the last 64 KiB). */
const READ_CAP = 256 * KiB;

const COPIED = 1n << 63n;
const COMPRESSED = 1n << 62n;
const L1_MASK = 0x00fffffffffffe00n;
const RT_MASK = 0xfffffffffffffe00n;
const U64 = (1n << 64n) - 1n;

// ---------------------------------------------------------------------------------------------
// Base images
// ---------------------------------------------------------------------------------------------

export interface BaseImage {
  name: string;
  bytes: Uint8Array;
  /** Raw backing image linked below (the header names it; openImageOn links it as given). */
  backing?: Uint8Array;
}

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = (x >>> 0) & 0xff;
  }
  return b;
}

function engineImage(
  name: string,
  opts: { size: number; clusterSize: number; refcountBits?: number; compat?: '0.10' | '1.1'; extendedL2?: boolean; backing?: number },
  ops: (img: Image) => void,
): BaseImage {
  const mb = new MemoryBackend();
  createQcow2On(mb, { format: 'qcow2',
    size: opts.size,
    clusterSize: opts.clusterSize,
    refcountBits: opts.refcountBits ?? 16,
    compat: opts.compat ?? '1.1',
    extendedL2: opts.extendedL2 ?? false,
    ...(opts.backing ? { backingFile: 'base.raw', backingFormat: 'raw' as const } : {}),
  });
  const backing = opts.backing ? pattern(opts.backing, 99) : undefined;
  const below = backing ? openImageOn(new MemoryBackend(backing), { format: 'raw' }) : null;
  const img = openImageOn(mb, { format: 'qcow2', writable: true, backing: below });
  try {
    ops(img);
  } finally {
    img.close();
  }
  return { name, bytes: mb.bytes(), backing };
}

/**
 * Small valid images made by our engine: v3 and v2, 512 B and 4 KiB and 16 KiB clusters,
 * refcount widths 1 and 16, extended L2, a raw backing file; each with data, a zero cluster and
 * a hole, several L2 tables. (Compressed images come from qemu-img, passed in as `extra`.)
 */
export function makeBases(extra: BaseImage[] = []): BaseImage[] {
  const mixed = (cs: number) => (img: Image) => {
    img.write(0, pattern(3000, 1));
    img.write(cs * 70 + 17, pattern(2 * cs + 5, 2));
    img.writeZeroes(cs * 100, cs * 2);
    img.write(img.virtualSize - cs - 100, pattern(300, 3));
  };
  return [
    engineImage('v3 512B rc16', { size: 96 * KiB, clusterSize: 512 }, mixed(512)),
    engineImage('v2 512B', { size: 96 * KiB, clusterSize: 512, compat: '0.10' }, (img) => {
      img.write(0, pattern(3000, 4));
      img.write(70 * 512 + 5, pattern(1500, 5));
      img.write(img.virtualSize - 700, pattern(700, 6));
    }),
    engineImage('v3 4K rc1', { size: 160 * KiB, clusterSize: 4096, refcountBits: 1 }, (img) => {
      img.write(0, pattern(5000, 13));
      img.write(4096 * 20 + 17, pattern(4096 + 5, 2));
      img.writeZeroes(4096 * 30, 4096);
      img.write(img.virtualSize - 100, pattern(100, 3));
    }),
    engineImage('v3 16K extended L2', { size: 256 * KiB, clusterSize: 16 * KiB, extendedL2: true }, (img) => {
      img.write(1000, pattern(3000, 7)); // subclusters of cluster 0
      img.write(16 * KiB * 9, pattern(16 * KiB, 8));
      img.writeZeroes(16 * KiB * 12 + 512 * 4, 512 * 8);
      img.write(256 * KiB - 600, pattern(600, 9));
    }),
    engineImage('v3 512B over raw backing', { size: 64 * KiB, clusterSize: 512, backing: 64 * KiB }, (img) => {
      img.write(100, pattern(700, 10)); // copy-on-write of partial clusters from the backing file
      img.write(40 * 512 + 300, pattern(1200, 11));
      img.writeZeroes(50 * 512, 1024);
    }),
    ...extra,
  ];
}

// ---------------------------------------------------------------------------------------------
// Layout: what the (patched) image uses as metadata, read independently of the engine
// ---------------------------------------------------------------------------------------------

export interface Layout {
  cb: number;
  cs: number;
  extended: boolean;
  l1Off: bigint;
  l1Size: number;
  rtOff: bigint;
  rtClusters: number;
  refcountOrder: number;
  /** Host offsets of refcount blocks, L2 tables, data clusters; compressed descriptors (entry values). */
  refblocks: bigint[];
  l2: bigint[];
  data: bigint[];
  compressed: { addr: number; value: bigint }[];
  /** Byte addresses of L1 entries, L2 entries (first word), refcount table entries. */
  l1Addrs: number[];
  l2Addrs: number[];
  rtAddrs: number[];
  /**
   * Byte ranges [start, end) holding metadata, sorted, as qemu's overlap check sees them: the
   * header cluster, the L1 table's bytes (only: the rest of its last cluster is not metadata),
   * the refcount table's clusters, refcount blocks and L2 tables.
   */
  meta: [number, number][];
  /** The same, every range widened to whole clusters (where mutations like to aim). */
  metaClusters: [number, number][];
  fileSize: number;
}

const dvOf = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
const u32 = (b: Uint8Array, o: number) => (o + 4 <= b.length ? dvOf(b).getUint32(o) : 0);
const u64 = (b: Uint8Array, o: number) => (o + 8 <= b.length ? dvOf(b).getBigUint64(o) : 0n);

/** Parse what a qcow2 image uses, tolerating any damage (what cannot be parsed is left out). */
export function layoutOf(b: Uint8Array): Layout {
  const len = b.length;
  const dv = dvOf(b);
  // Offsets as numbers: only those inside the file (< 2^53) matter here.
  const hi = (o: number) => (o + 8 <= len ? dv.getUint32(o) : 0);
  const lo = (o: number) => (o + 8 <= len ? dv.getUint32(o + 4) : 0);
  /** Bits 9..55 of the entry at `o` (L1/L2 offset field) as a number. */
  const off56 = (o: number) => (hi(o) & 0x00ffffff) * 2 ** 32 + ((lo(o) & 0xfffffe00) >>> 0);
  let cb = u32(b, 20);
  if (cb < 9 || cb > 21) cb = 9;
  const cs = 1 << cb;
  const version = u32(b, 4);
  const incompat = version >= 3 ? u64(b, 72) : 0n;
  const extended = (incompat & 16n) !== 0n && cb >= 14;
  const eb = extended ? 16 : 8;
  const refcountOrder = version >= 3 ? u32(b, 96) : 4;
  const l1Off = u64(b, 40);
  const l1Size = u32(b, 36);
  const rtOff = u64(b, 48);
  const rtClusters = u32(b, 56);
  const lay: Layout = {
    cb, cs, extended, l1Off, l1Size, rtOff, rtClusters, refcountOrder,
    refblocks: [], l2: [], data: [], compressed: [], l1Addrs: [], l2Addrs: [], rtAddrs: [], meta: [], metaClusters: [], fileSize: len,
  };
  let l1Bytes: [number, number] | null = null;
  const inFile = (off: number, n: number) => off + n <= len;
  const aligned = (off: number) => off % cs === 0;
  const clusters = new Set<number>([0]);
  const addRange = (off: number, n: number) => {
    for (let c = Math.floor(off / cs); c <= Math.floor((off + n - 1) / cs); c++) clusters.add(c);
  };
  const rt = Number(rtOff);
  if (rtClusters > 0 && rtOff < BigInt(len) && aligned(rt) && inFile(rt, rtClusters * cs)) {
    addRange(rt, rtClusters * cs);
    for (let i = 0; i < (rtClusters * cs) / 8; i++) {
      const a = rt + i * 8;
      const e = hi(a) * 2 ** 32 + ((lo(a) & 0xfffffe00) >>> 0);
      if (e !== 0 || i < 4) lay.rtAddrs.push(a);
      if (e !== 0 && aligned(e) && inFile(e, cs)) {
        lay.refblocks.push(BigInt(e));
        addRange(e, cs);
      }
    }
  }
  const l1 = Number(l1Off);
  if (l1Size > 0 && l1Off < BigInt(len) && aligned(l1) && inFile(l1, l1Size * 8)) {
    l1Bytes = [l1, l1 + l1Size * 8];
    for (let i = 0; i < l1Size; i++) {
      const a = l1 + i * 8;
      lay.l1Addrs.push(a);
      const t = off56(a);
      if (t === 0 || !aligned(t) || !inFile(t, cs)) continue;
      lay.l2.push(BigInt(t));
      addRange(t, cs);
      for (let j = 0; j < cs / eb; j++) {
        const ea = t + j * eb;
        const h = hi(ea);
        const l = lo(ea);
        if (h !== 0 || l !== 0 || j % 16 === 0) lay.l2Addrs.push(ea);
        if ((h & 0x40000000) !== 0) lay.compressed.push({ addr: ea, value: u64(b, ea) });
        else {
          const d = off56(ea);
          if (d !== 0) lay.data.push(BigInt(d));
        }
      }
    }
  }
  const merge = (ranges: [number, number][]): [number, number][] => {
    const out: [number, number][] = [];
    for (const [a, z] of ranges.sort((x, y) => x[0] - y[0])) {
      const last = out[out.length - 1];
      if (last && a <= last[1]) last[1] = Math.max(last[1], z);
      else out.push([a, z]);
    }
    return out;
  };
  const whole: [number, number][] = [...clusters].map((c) => [c * cs, (c + 1) * cs]);
  lay.meta = merge([...whole.map((r) => [...r] as [number, number]), ...(l1Bytes ? [l1Bytes] : [])]);
  if (l1Bytes) addRange(l1Bytes[0], l1Bytes[1] - l1Bytes[0]);
  lay.metaClusters = merge([...clusters].map((c) => [c * cs, (c + 1) * cs]));
  return lay;
}

// ---------------------------------------------------------------------------------------------
// The backend: a capped in-memory disk that refuses guest data on metadata
// ---------------------------------------------------------------------------------------------

export class DiskFull extends Error {
  code = 'ENOSPC';
}

/** MemoryBackend with a size cap, recording every write that puts the marker inside metadata. */
export class FuzzBackend implements Backend {
  readonly mem: MemoryBackend;
  violations: string[] = [];
  writes = 0;

  constructor(
    bytes: Uint8Array,
    private readonly meta: [number, number][],
    private readonly marker: Buffer,
  ) {
    this.mem = new MemoryBackend(bytes);
  }

  read(buf: Uint8Array, offset: number): number {
    return this.mem.read(buf, offset);
  }

  write(buf: Uint8Array, offset: number): void {
    this.writes++;
    if (offset + buf.length > DISK_CAP) throw new DiskFull(`write of ${buf.length} bytes at ${offset}: disk full`);
    for (const [lo, hi] of this.meta) {
      const a = Math.max(lo, offset);
      const z = Math.min(hi, offset + buf.length);
      if (a >= z) continue;
      const part = Buffer.from(buf.buffer, buf.byteOffset + (a - offset), z - a);
      const at = part.indexOf(this.marker);
      if (at >= 0) this.violations.push(`guest data written at host ${a + at} inside metadata [${lo}, ${hi}) (write of ${buf.length} bytes at ${offset})`);
    }
    this.mem.write(buf, offset);
  }

  size(): number {
    return this.mem.size();
  }

  truncate(size: number): void {
    if (size > DISK_CAP) throw new DiskFull(`truncate to ${size}: disk full`);
    this.mem.truncate(size);
  }

  flush(): void {}
  close(): void {}
}

// ---------------------------------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------------------------------

/** A host offset named by what lies there in the base image, resolved per image. */
export interface OffSpec {
  ref: 'zero' | 'header' | 'l1' | 'rt' | 'rb' | 'l2' | 'data' | 'eof' | 'pastEof' | 'huge' | 'random';
  pick: number;
  delta: number;
}

export type Mutation =
  | { k: 'field'; field: number; choice: number; random: bigint; useRandom: boolean }
  | { k: 'ext'; exts: { magic: number; len: number | null; data: Uint8Array }[]; end: boolean; hl: number | null; backingAt: number | null }
  | { k: 'entry'; table: 'l1' | 'l2' | 'rt'; pick: number; off: OffSpec; flags: bigint; raw: bigint | null }
  | { k: 'refcount'; cluster: OffSpec; value: number; random: bigint }
  | { k: 'bitmap'; pick: number; alloc: number; zero: number }
  | { k: 'compressed'; pick: number; asNew: boolean; coff: OffSpec; nsec: number; copied: boolean }
  | { k: 'bytes'; where: 'meta' | 'any' | 'compressed'; at: number; bytes: Uint8Array };

export interface GuestOp {
  kind: 'write' | 'zero' | 'discard';
  /** Fraction (of 2^20) of the virtual size; `tail`: measured from the end. */
  at: number;
  tail: boolean;
  len: number;
}

export interface FuzzCase {
  base: number;
  mutations: Mutation[];
  op: GuestOp;
  /** The marker the write's payload repeats. */
  marker: bigint;
}

interface Field {
  name: string;
  off: number;
  width: 1 | 4 | 8;
  /** Boundary values, some relative to the image. */
  values(l: Layout, b: Uint8Array): bigint[];
}

const MAX = (w: number) => (1n << BigInt(8 * w)) - 1n;
const big = (n: number | bigint) => BigInt(n);

/** Every header field (docs/qcow2-rules.md, "The header"), with its boundary values. */
export const FIELDS: Field[] = [
  { name: 'magic', off: 0, width: 4, values: () => [0x514649fbn, 0x514649fcn, 0n, MAX(4)] },
  { name: 'version', off: 4, width: 4, values: () => [0n, 1n, 2n, 3n, 4n, MAX(4)] },
  {
    name: 'backing_file_offset', off: 8, width: 8,
    values: (l, b) => {
      const hl = big(u32(b, 100) || 72);
      return [0n, hl - 1n, hl, hl + 4n, hl + 8n, big(l.cs - 1), big(l.cs), big(l.cs + 1), big(l.cs - 8), 1n << 63n, MAX(8)];
    },
  },
  { name: 'backing_file_size', off: 16, width: 4, values: (l) => [0n, 1n, 8n, 1023n, 1024n, big(l.cs), MAX(4)] },
  { name: 'cluster_bits', off: 20, width: 4, values: (l) => [0n, 8n, 9n, 12n, 14n, 16n, 21n, 22n, 31n, 32n, 63n, 64n, MAX(4), big(l.cb - 1), big(l.cb + 1)] },
  {
    name: 'size', off: 24, width: 8,
    values: (_l, b) => {
      const s = u64(b, 24);
      return [0n, 1n, 511n, 512n, s - 1n, s, s + 1n, s * 2n, s * 64n, 1n << 40n, 1n << 53n, (1n << 53n) + 1n, 1n << 61n, (1n << 63n) - 1n, MAX(8)];
    },
  },
  { name: 'crypt_method', off: 32, width: 4, values: () => [0n, 1n, 2n, 3n, MAX(4)] },
  {
    name: 'l1_size', off: 36, width: 4,
    values: (l) => [0n, 1n, big(l.l1Size - 1), big(l.l1Size), big(l.l1Size + 1), big(l.l1Size * 64), 0x400000n, 0x400001n, 0x7fffffffn, MAX(4)],
  },
  {
    name: 'l1_table_offset', off: 40, width: 8,
    values: (l) => offsetBoundaries(l, l.l1Off),
  },
  {
    name: 'refcount_table_offset', off: 48, width: 8,
    values: (l) => offsetBoundaries(l, l.rtOff),
  },
  {
    name: 'refcount_table_clusters', off: 56, width: 4,
    values: (l) => [0n, 1n, 2n, big(l.rtClusters + 1), big((8 * MiB) / l.cs), big((8 * MiB) / l.cs + 1), 0x7fffffffn, MAX(4)],
  },
  { name: 'nb_snapshots', off: 60, width: 4, values: () => [0n, 1n, 2n, 65536n, 65537n, MAX(4)] },
  { name: 'snapshots_offset', off: 64, width: 8, values: (l) => offsetBoundaries(l, 0n) },
  {
    name: 'incompatible_features', off: 72, width: 8,
    values: () => [0n, 1n, 2n, 3n, 4n, 8n, 16n, 24n, 31n, 32n, 1n << 63n, MAX(8)],
  },
  { name: 'compatible_features', off: 80, width: 8, values: () => [0n, 1n, 2n, 1n << 63n, MAX(8)] },
  { name: 'autoclear_features', off: 88, width: 8, values: () => [0n, 1n, 2n, 3n, 4n, 1n << 63n, MAX(8)] },
  { name: 'refcount_order', off: 96, width: 4, values: () => [0n, 1n, 2n, 3n, 4n, 5n, 6n, 7n, 32n, MAX(4)] },
  {
    name: 'header_length', off: 100, width: 4,
    values: (l) => [0n, 72n, 100n, 103n, 104n, 105n, 112n, 120n, 128n, big(l.cs - 8), big(l.cs), big(l.cs + 1), MAX(4)],
  },
  { name: 'compression_type', off: 104, width: 1, values: () => [0n, 1n, 2n, 255n] },
  { name: 'padding', off: 105, width: 1, values: () => [0n, 1n, 255n] },
  { name: 'padding (last byte)', off: 111, width: 1, values: () => [0n, 1n, 255n] },
  { name: 'unknown field past 112', off: 112, width: 8, values: () => [0n, 1n, MAX(8)] },
];

/** Index of a header field in FIELDS, by its name. */
export function fieldIndex(name: string): number {
  const i = FIELDS.findIndex((f) => f.name === name);
  if (i < 0) throw new Error(`no header field ${name}`);
  return i;
}

function offsetBoundaries(l: Layout, cur: bigint): bigint[] {
  const cs = big(l.cs);
  const eof = big(l.fileSize);
  return [0n, cs, cur, cur + 8n, cur + 512n, cur + cs, cur - cs, eof & ~(cs - 1n), (eof + cs) & ~(cs - 1n), 1n << 55n, (1n << 63n) - cs, MAX(8) - cs + 1n, MAX(8)];
}

function resolveOff(l: Layout, s: OffSpec): bigint {
  const cs = big(l.cs);
  const pickFrom = (xs: bigint[]) => (xs.length ? xs[s.pick % xs.length] : 0n);
  let base: bigint;
  switch (s.ref) {
    case 'zero': base = 0n; break;
    case 'header': base = 0n; break;
    case 'l1': base = l.l1Off; break;
    case 'rt': base = l.rtOff; break;
    case 'rb': base = pickFrom(l.refblocks); break;
    case 'l2': base = pickFrom(l.l2); break;
    case 'data': base = pickFrom(l.data); break;
    case 'eof': base = big(l.fileSize) & ~(cs - 1n); break;
    case 'pastEof': base = (big(l.fileSize) + cs * big(1 + (s.pick % 64))) & ~(cs - 1n); break;
    case 'huge': base = [1n << 53n, 1n << 55n, (1n << 56n) - cs, 1n << 62n][s.pick % 4]; break;
    default: base = big(s.pick) * 512n; break;
  }
  return (base + big(s.delta)) & U64;
}

function put(b: Uint8Array, off: number, width: 1 | 4 | 8, v: bigint): void {
  if (off < 0 || off + width > b.length) return;
  const dv = new DataView(b.buffer, b.byteOffset);
  v &= MAX(width);
  if (width === 1) dv.setUint8(off, Number(v));
  else if (width === 4) dv.setUint32(off, Number(v));
  else dv.setBigUint64(off, v);
}

/** Apply the mutations in order, each resolved against the image as it is at that point. */
export function applyMutations(base: Uint8Array, muts: Mutation[]): Uint8Array {
  const b = new Uint8Array(base);
  for (const m of muts) {
    const l = layoutOf(b);
    switch (m.k) {
      case 'field': {
        const f = FIELDS[m.field % FIELDS.length];
        const vals = f.values(l, b);
        put(b, f.off, f.width, m.useRandom ? m.random : vals[m.choice % vals.length]);
        break;
      }
      case 'ext': {
        if (m.hl !== null) put(b, 100, 4, big(m.hl));
        const start = u32(b, 4) >= 3 ? u32(b, 100) : 72;
        let at = start;
        for (const e of m.exts) {
          put(b, at, 4, big(e.magic));
          put(b, at + 4, 4, big(e.len ?? e.data.length));
          const n = Math.min(e.data.length, Math.max(0, b.length - at - 8));
          if (n > 0) b.set(e.data.subarray(0, n), at + 8);
          at += 8 + ((e.data.length + 7) & ~7);
        }
        if (m.end) put(b, at, 8, 0n);
        if (m.backingAt !== null) put(b, 8, 8, big(start + m.backingAt));
        break;
      }
      case 'entry': {
        const addrs = m.table === 'l1' ? l.l1Addrs : m.table === 'l2' ? l.l2Addrs : l.rtAddrs;
        if (!addrs.length) break;
        const v = m.raw ?? ((resolveOff(l, m.off) & (m.table === 'rt' ? RT_MASK : L1_MASK)) | m.flags);
        put(b, addrs[m.pick % addrs.length], 8, v);
        break;
      }
      case 'refcount': {
        const cluster = Number(resolveOff(l, m.cluster) >> big(l.cb));
        const order = l.refcountOrder;
        if (order > 6 || !Number.isSafeInteger(cluster)) break;
        const bits = 1 << order;
        const perBlock = (l.cs * 8) / bits;
        const bi = Math.floor(cluster / perBlock);
        const rtA = Number(l.rtOff) + bi * 8;
        const blk = Number(u64(b, rtA) & RT_MASK);
        if (!blk || blk + l.cs > b.length) break;
        const idx = cluster % perBlock;
        const max = (1n << big(bits)) - 1n;
        const v = [0n, 1n, 2n, max - 1n, max, m.random][m.value % 6] & max;
        if (bits < 8) {
          const p = blk + Math.floor((idx * bits) / 8);
          const shift = (idx * bits) % 8;
          const mask = ((1 << bits) - 1) << shift;
          b[p] = (b[p] & ~mask) | ((Number(v) << shift) & mask);
        } else {
          const p = blk + (idx * bits) / 8;
          const bytes = bits / 8;
          for (let k = 0; k < bytes; k++) b[p + k] = Number((v >> big(8 * (bytes - 1 - k))) & 0xffn);
        }
        break;
      }
      case 'bitmap': {
        if (!l.extended || !l.l2Addrs.length) break;
        const a = l.l2Addrs[m.pick % l.l2Addrs.length];
        put(b, a + 8, 8, (big(m.zero >>> 0) << 32n) | big(m.alloc >>> 0));
        break;
      }
      case 'compressed': {
        const x = 62 - (l.cb - 8);
        const targets = m.asNew || !l.compressed.length ? l.l2Addrs : l.compressed.map((c) => c.addr);
        if (!targets.length) break;
        const coff = resolveOff(l, m.coff) & ((1n << big(x)) - 1n);
        const nsec = big(m.nsec) & ((1n << big(l.cb - 8)) - 1n);
        put(b, targets[m.pick % targets.length], 8, COMPRESSED | (m.copied ? COPIED : 0n) | (nsec << big(x)) | coff);
        break;
      }
      case 'bytes': {
        let at: number;
        if (m.where === 'any') at = m.at % b.length;
        else if (m.where === 'compressed' && l.compressed.length) {
          const c = l.compressed[m.at % l.compressed.length].value & ((1n << big(62 - (l.cb - 8))) - 1n);
          at = Number(c) + ((m.at >> 8) % 64);
        } else {
          const [lo, hi] = l.metaClusters[m.at % l.metaClusters.length];
          at = lo + ((m.at >> 4) % (hi - lo));
        }
        if (at >= 0 && at < b.length) b.set(m.bytes.subarray(0, Math.max(0, b.length - at)), at);
        break;
      }
    }
  }
  return b;
}

// ---------------------------------------------------------------------------------------------
// Arbitraries
// ---------------------------------------------------------------------------------------------

const KNOWN_MAGICS = [0xe2792aca, 0x6803f857, 0x23852875, 0x0537be77, 0x44415441, 0];

const offSpecArb: fc.Arbitrary<OffSpec> = fc.record({
  ref: fc.constantFrom('zero', 'header', 'l1', 'rt', 'rb', 'l2', 'data', 'eof', 'pastEof', 'huge', 'random'),
  pick: fc.nat({ max: 4096 }),
  delta: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, fc.constantFrom(8, 200, 511, 512, 4096, 0x10000, 0x200 * 3)),
});

const flagsArb = fc.oneof(
  { weight: 3, arbitrary: fc.constant(COPIED) },
  fc.constantFrom(0n, 1n, COPIED | 1n, COMPRESSED, COPIED | COMPRESSED, 0x1fen, 1n << 56n, 1n << 61n, 0x7f00000000000000n),
);

const bigU64 = fc.bigInt({ min: 0n, max: U64 });

export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      k: fc.constant('field' as const),
      field: fc.nat({ max: FIELDS.length - 1 }),
      choice: fc.nat({ max: 64 }),
      random: bigU64,
      useRandom: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant('ext' as const),
      exts: fc.array(
        fc.record({
          magic: fc.oneof(fc.constantFrom(...KNOWN_MAGICS), fc.nat({ max: 0xffffffff })),
          len: fc.oneof(
            { weight: 3, arbitrary: fc.constant(null) },
            fc.constantFrom(0, 1, 7, 8, 15, 16, 17, 23, 24, 25, 47, 48, 49, 96, 511, 512, 4096, 65536, 0x7fffffff, 0xffffffff),
            fc.nat({ max: 0xffffffff }),
          ),
          data: fc.uint8Array({ maxLength: 56 }),
        }),
        { maxLength: 10 },
      ),
      end: fc.boolean(),
      hl: fc.option(fc.constantFrom(104, 112, 120, 128, 200), { freq: 4 }),
      backingAt: fc.option(fc.nat({ max: 600 }), { freq: 4 }),
    }),
  },
  {
    // many small ones (zero-length unknown extensions, possibly without an END)
    weight: 1,
    arbitrary: fc.record({
      k: fc.constant('ext' as const),
      exts: fc.nat({ max: 300 }).map((n) => Array.from({ length: n }, (_, i) => ({ magic: 0x10000 + i, len: null, data: new Uint8Array(i % 3 === 0 ? 0 : 8) }))),
      end: fc.boolean(),
      hl: fc.constant(null),
      backingAt: fc.constant(null),
    }),
  },
  {
    weight: 6,
    arbitrary: fc.record({
      k: fc.constant('entry' as const),
      table: fc.constantFrom('l1' as const, 'l2' as const, 'l2' as const, 'rt' as const),
      pick: fc.nat({ max: 4096 }),
      off: offSpecArb,
      flags: flagsArb,
      raw: fc.option(bigU64, { freq: 6 }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant('refcount' as const),
      cluster: offSpecArb,
      value: fc.nat({ max: 5 }),
      random: bigU64,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      k: fc.constant('bitmap' as const),
      pick: fc.nat({ max: 4096 }),
      alloc: fc.oneof(fc.constantFrom(0, 1, 0xffffffff, 0x80000000, 0xffff), fc.nat({ max: 0xffffffff })),
      zero: fc.oneof(fc.constantFrom(0, 1, 0xffffffff, 0x80000000, 0xffff0000), fc.nat({ max: 0xffffffff })),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant('compressed' as const),
      pick: fc.nat({ max: 4096 }),
      asNew: fc.boolean(),
      coff: offSpecArb,
      nsec: fc.oneof(fc.constantFrom(0, 1, 2, 7, 8, 127, 8191), fc.nat({ max: 1 << 13 })),
      copied: fc.boolean(),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant('bytes' as const),
      where: fc.constantFrom('meta' as const, 'meta' as const, 'any' as const, 'compressed' as const),
      at: fc.nat(),
      bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }),
    }),
  },
);

export const guestOpArb: fc.Arbitrary<GuestOp> = fc.record({
  kind: fc.constantFrom('write' as const, 'write' as const, 'write' as const, 'zero' as const, 'discard' as const),
  at: fc.nat({ max: 1 << 20 }),
  tail: fc.boolean(),
  len: fc.oneof(fc.integer({ min: 1, max: 5000 }), fc.constantFrom(512, 4096, 16384, 65536, 70000)),
});

/** A high-entropy 8-byte marker with no zero byte (splitmix64 of the seed). */
export function markerOf(seed: number): bigint {
  let z = (BigInt(seed >>> 0) + 0x9e3779b97f4a7c15n) & U64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & U64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & U64;
  z ^= z >> 31n;
  for (let i = 0n; i < 64n; i += 8n) if (((z >> i) & 0xffn) === 0n) z |= 0x5an << i;
  return z;
}

export function caseArb(nBases: number): fc.Arbitrary<FuzzCase> {
  return fc.record({
    base: fc.nat({ max: nBases - 1 }),
    mutations: fc.array(mutationArb, { minLength: 0, maxLength: 4 }),
    op: guestOpArb,
    marker: fc.integer().map(markerOf),
  });
}

// ---------------------------------------------------------------------------------------------
// The property
// ---------------------------------------------------------------------------------------------

export interface CaseStats {
  /** How the case ended: 'opened', or the CowError code that refused the open. */
  open: string;
  /** 'ok' or the code the guest operation failed with; '' when not reached. */
  op: string;
  cleanBefore: boolean;
}

/** Throw unless `e` is a CowError other than ECOW_INTERNAL; returns its code. */
export function cowCode(e: unknown, what: string): string {
  if (e instanceof CowError && e.code !== 'ECOW_INTERNAL') return e.code;
  const err = e instanceof Error ? e : new Error(String(e));
  throw new Error(`${what}: ${e instanceof CowError ? 'ECOW_INTERNAL' : 'not a CowError'}: ${err.message}`, { cause: e });
}

function guestRange(img: Image): [number, number][] {
  const v = img.virtualSize;
  if (v <= READ_CAP + 64 * KiB) return [[0, v]];
  return [
    [0, READ_CAP],
    [v - 64 * KiB, 64 * KiB],
  ];
}

function readView(img: Image): Uint8Array[] {
  return guestRange(img).map(([o, n]) => img.read(o, n));
}

function markerPayload(marker: bigint, len: number): Uint8Array {
  const m = Buffer.alloc(8);
  m.writeBigUInt64BE(marker);
  return Buffer.alloc(len, m);
}

function clean(o: ReturnType<typeof checkOpenImage>): boolean {
  return o.result !== null && (o.result.corruptions ?? 0) === 0 && o.result['check-errors'] === 0;
}

/**
 * Run one case; throws (a plain Error) when the property is violated. `bases` as from makeBases.
 */
export function runCase(bases: BaseImage[], c: FuzzCase): CaseStats {
  const base = bases[c.base % bases.length];
  const bytes = applyMutations(base.bytes, c.mutations);
  const layout = layoutOf(bytes);
  const markerBuf = Buffer.alloc(8);
  markerBuf.writeBigUInt64BE(c.marker);
  const disk = new FuzzBackend(bytes, layout.meta, markerBuf);
  const stats: CaseStats = { open: 'opened', op: '', cleanBefore: false };
  const backingOf = () => (base.backing ? openImageOn(new MemoryBackend(base.backing), { format: 'raw' }) : null);

  let below = backingOf();
  let img: Image;
  try {
    img = openImageOn(disk, { format: 'qcow2', writable: true, backing: below });
  } catch (e) {
    below?.close();
    stats.open = cowCode(e, 'open');
    checkMemory();
    return stats;
  }
  let before: Uint8Array[] | null = null;
  let opRange: [number, number] = [0, 0];
  try {
    try {
      stats.cleanBefore = clean(checkOpenImage(img));
    } catch (e) {
      cowCode(e, 'check before the write');
    }
    try {
      before = readView(img);
    } catch (e) {
      cowCode(e, 'read');
    }
    const v = img.virtualSize;
    const pos = Math.floor((c.op.at / (1 << 20)) * Math.min(v, 64 * MiB));
    const off = c.op.tail ? Math.max(0, v - pos - c.op.len) : pos;
    opRange = [off, c.op.len];
    try {
      if (c.op.kind === 'write') img.write(off, markerPayload(c.marker, c.op.len));
      else if (c.op.kind === 'zero') img.writeZeroes(off, c.op.len);
      else img.discard(off, c.op.len);
      img.flush();
      stats.op = 'ok';
    } catch (e) {
      stats.op = cowCode(e, `${c.op.kind} ${off}+${c.op.len}`);
    }
  } finally {
    try {
      img.close();
    } catch (e) {
      cowCode(e, 'close');
    }
  }
  if (disk.violations.length) {
    throw new Error(`metadata overwritten by ${c.op.kind} ${opRange[0]}+${opRange[1]} (${stats.op || 'no outcome'}, image ${stats.cleanBefore ? 'clean' : 'corrupt'} by our check): ${disk.violations.slice(0, 3).join('; ')}`);
  }

  if (stats.cleanBefore && before) {
    // The image was consistent: it must still be, and read as before with the write applied.
    below = backingOf();
    const again = openImageOn(new MemoryBackend(disk.mem.bytes()), { format: 'qcow2', backing: below });
    try {
      const after = checkOpenImage(again);
      if (!clean(after)) {
        throw new Error(`a clean image became corrupt after ${c.op.kind} ${opRange[0]}+${opRange[1]} (${stats.op}): ${JSON.stringify(after.result)} ${after.log.slice(0, 4).join(' | ')}`);
      }
      if (stats.op === 'ok' && c.op.kind !== 'discard') {
        const view = readView(again);
        const [o, n] = opRange;
        const payload = c.op.kind === 'write' ? markerPayload(c.marker, n) : new Uint8Array(n);
        guestRange(again).forEach(([ro, rn], k) => {
          const want = Buffer.from(before![k]);
          const a = Math.max(ro, o);
          const z = Math.min(ro + rn, o + n);
          if (a < z) want.set(payload.subarray(a - o, z - o), a - ro);
          if (!want.equals(view[k])) {
            let i = 0;
            while (want[i] === view[k][i]) i++;
            throw new Error(`guest byte ${ro + i} reads ${view[k][i]}, expected ${want[i]} after ${c.op.kind} ${o}+${n}`);
          }
        });
      }
    } finally {
      again.close();
    }
  }
  checkMemory();
  return stats;
}

function checkMemory(): void {
  const m = engineMemoryBytes();
  if (m > MEMORY_BOUND) throw new Error(`engine memory grew to ${m} bytes (bound ${MEMORY_BOUND})`);
}

/** A short description of a case, for failure reports. */
export function describeCase(bases: BaseImage[], c: FuzzCase): string {
  return `${bases[c.base % bases.length].name}: ${fc.stringify(c)}`;
}
