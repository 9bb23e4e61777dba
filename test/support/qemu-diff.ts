/**
 * Differential fuzzing against qemu (issue 20): qemu-made images across the feature matrix are
 * mutated (header fields and extensions, L1/L2/refcount entries and blocks, compressed
 * descriptors, the snapshot table, the bitmap directory, truncation — the mutations of
 * qcow2-fuzz.ts plus a few of our own), then each mutant is read by qemu (`qemu-img info`, then
 * `qemu-img dd` of the guest view) and by cowchain (openImage + read), and the two verdicts are
 * compared:
 *
 *  - crash                      cowchain threw something other than a CowError, or ECOW_INTERNAL;
 *  - accepts-what-qemu-refuses  qemu cannot open or read it, cowchain reads it;
 *  - different-data             both read it, but the virtual size or a byte differs;
 *  - refuses-what-qemu-accepts  qemu reads it, cowchain refuses, and `qemu-img check` finds
 *                               nothing wrong (or the refusal is not a listed strictness);
 *  - allowed-stricter           qemu reads it, cowchain refuses with a code of ALLOWED_STRICTER,
 *                               and `qemu-img check` calls the image corrupt;
 *  - both-refuse / same         agreement.
 * The first four are failures. qemu runs as asynchronous child processes, so a test that runs
 * many mutants never holds the event loop for long.
 *
 * Only the first READ_CAP bytes of the guest view are compared (a mutated size field may claim
 * terabytes); `qemu-img dd` reads exactly that prefix.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import { Decompress as ZstdDecompress } from 'fzstd';
import { CowError, openImage, type CowErrorCode } from '../../src/index.js';
import { applyMutations, mutationArb, type Mutation } from './qcow2-fuzz.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
/** Guest bytes compared per mutant. */
export const READ_CAP = 8 * MiB;
/** A qemu-img run taking longer than this is killed (and counted, not judged). */
const QEMU_TIMEOUT_MS = 120_000;

/**
 * The deliberate strictnesses: codes with which cowchain may refuse an image qemu still reads,
 * provided `qemu-img check` calls that image corrupt. docs/qemu-differences.md gives the reasons.
 */
export const ALLOWED_STRICTER: Partial<Record<CowErrorCode, string>> = {
  ECOW_CORRUPT:
    'metadata that qemu-img check calls corrupt (a table or cluster past the end of the file, an unaligned offset): refused on read instead of read as zeros',
};

// ---------------------------------------------------------------------------------------------
// qemu as child processes
// ---------------------------------------------------------------------------------------------

export interface ProcResult {
  status: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** Run a command asynchronously; a signal or a failure to start counts as status -1. */
export function run(cmd: string, args: string[], timeoutMs = QEMU_TIMEOUT_MS): Promise<ProcResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { killed?: boolean; code?: number | string }) | null;
      const status = e ? (typeof e.code === 'number' ? e.code : -1) : 0;
      resolve({ status, stdout: String(stdout), stderr: String(stderr), timedOut: Boolean(e?.killed) });
    });
  });
}

async function qemuImg(args: string[]): Promise<ProcResult> {
  const r = await run('qemu-img', args);
  return r;
}

async function mustQemu(cmd: string, args: string[]): Promise<void> {
  const r = await run(cmd, args);
  if (r.status !== 0 || /error|fail/i.test(cmd === 'qemu-io' ? r.stdout + r.stderr : '')) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr || r.stdout}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Base images: qemu-made, across the feature matrix
// ---------------------------------------------------------------------------------------------

export interface DiffBase {
  name: string;
  bytes: Uint8Array;
}

async function qemuIo(file: string, cmds: string[]): Promise<void> {
  await mustQemu('qemu-io', [...cmds.flatMap((c) => ['-c', c]), file]);
}

async function create(file: string, size: string, opts: string, backing?: { file: string; format: string }): Promise<void> {
  await mustQemu('qemu-img', ['create', '-f', 'qcow2', ...(opts ? ['-o', opts] : []), ...(backing ? ['-b', backing.file, '-F', backing.format] : []), file, size]);
}

/** Compressible contents with some random and some zero blocks (convert -c keeps the random ones plain). */
function patterned(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  let x = seed >>> 0 || 1;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
  for (let off = 0; off < size; off += 4096) {
    const k = next() % 10;
    if (k < 2) continue;
    if (k < 4) {
      for (let i = off; i < off + 4096 && i < size; i++) b[i] = next() & 0xff;
      continue;
    }
    const motif = next() & 0xff;
    for (let i = off; i < off + 4096 && i < size; i++) b[i] = (motif + ((i >> 5) % 7)) & 0xff;
  }
  return b;
}

/**
 * Make the base images in `dir` (kept there: chains name their backing files by absolute path).
 * Each recipe is qemu-img / qemu-io only, so every base is what qemu itself writes.
 */
export async function makeDiffBases(dir: string): Promise<DiffBase[]> {
  const f = (n: string) => path.join(dir, n);
  const recipes: [string, () => Promise<string>][] = [
    ['v3 64K', async () => {
      await create(f('v3-64k.qcow2'), '2M', '');
      await qemuIo(f('v3-64k.qcow2'), ['write -P 1 0 100k', 'write -P 2 300k 64k', 'write -z 600k 128k', 'write -P 3 1M 4k', 'write -P 4 2044k 4k']);
      return f('v3-64k.qcow2');
    }],
    ['v2 4K', async () => {
      await create(f('v2-4k.qcow2'), '1M', 'compat=0.10,cluster_size=4096');
      await qemuIo(f('v2-4k.qcow2'), ['write -P 5 0 10k', 'write -P 6 500k 20k', 'write -P 7 1020k 4k']);
      return f('v2-4k.qcow2');
    }],
    ['v3 512B refcount_bits=1', async () => {
      await create(f('v3-512-rc1.qcow2'), '256k', 'cluster_size=512,refcount_bits=1');
      await qemuIo(f('v3-512-rc1.qcow2'), ['write -P 8 0 3000', 'write -P 9 70k 5k', 'write -z 100k 2k', 'write -P 10 255k 1k']);
      return f('v3-512-rc1.qcow2');
    }],
    ['v3 4K refcount_bits=64', async () => {
      await create(f('v3-4k-rc64.qcow2'), '1M', 'cluster_size=4096,refcount_bits=64');
      await qemuIo(f('v3-4k-rc64.qcow2'), ['write -P 11 0 9k', 'write -P 12 400k 12k', 'write -z 800k 8k']);
      return f('v3-4k-rc64.qcow2');
    }],
    ['v3 64K extended L2', async () => {
      await create(f('extl2.qcow2'), '2M', 'extended_l2=on');
      await qemuIo(f('extl2.qcow2'), ['write -P 13 2k 3k', 'write -P 14 70k 2k', 'write -z 130k 4k', 'write -P 15 1M 64k', 'write -z 1100k 2k']);
      return f('extl2.qcow2');
    }],
    ['v3 32K extended L2 refcount_bits=8', async () => {
      await create(f('extl2-32k.qcow2'), '1M', 'extended_l2=on,cluster_size=32768,refcount_bits=8');
      await qemuIo(f('extl2-32k.qcow2'), ['write -P 16 1k 1k', 'write -P 17 100k 40k']);
      return f('extl2-32k.qcow2');
    }],
    ['deflate 4K (convert -c)', async () => {
      fs.writeFileSync(f('deflate.raw'), patterned(512 * KiB, 1));
      await mustQemu('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=4096', f('deflate.raw'), f('deflate.qcow2')]);
      return f('deflate.qcow2');
    }],
    ['deflate 64K v2 (convert -c)', async () => {
      fs.writeFileSync(f('deflate64.raw'), patterned(1 * MiB, 2));
      await mustQemu('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'compat=0.10', f('deflate64.raw'), f('deflate64.qcow2')]);
      return f('deflate64.qcow2');
    }],
    ['zstd 16K (convert -c)', async () => {
      fs.writeFileSync(f('zstd.raw'), patterned(512 * KiB, 3));
      await mustQemu('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=16384,compression_type=zstd', f('zstd.raw'), f('zstd.qcow2')]);
      return f('zstd.qcow2');
    }],
    ['overlay over a qcow2 base', async () => {
      await create(f('chain-base.qcow2'), '1M', 'cluster_size=4096');
      await qemuIo(f('chain-base.qcow2'), ['write -P 18 0 64k', 'write -P 19 512k 64k']);
      await create(f('chain-top.qcow2'), '1M', 'cluster_size=4096', { file: f('chain-base.qcow2'), format: 'qcow2' });
      await qemuIo(f('chain-top.qcow2'), ['write -P 20 1k 2k', 'write -z 520k 8k', 'write -P 21 900k 4k']);
      return f('chain-top.qcow2');
    }],
    ['overlay over a raw base (512B clusters)', async () => {
      fs.writeFileSync(f('raw-base.raw'), patterned(256 * KiB, 4));
      await create(f('raw-top.qcow2'), '256k', 'cluster_size=512', { file: f('raw-base.raw'), format: 'raw' });
      await qemuIo(f('raw-top.qcow2'), ['write -P 22 100 700', 'write -P 23 40k 1200', 'write -z 50k 1k']);
      return f('raw-top.qcow2');
    }],
    ['internal snapshot', async () => {
      await create(f('snap.qcow2'), '1M', 'cluster_size=4096');
      await qemuIo(f('snap.qcow2'), ['write -P 24 0 16k']);
      await mustQemu('qemu-img', ['snapshot', '-c', 'first', f('snap.qcow2')]);
      await qemuIo(f('snap.qcow2'), ['write -P 25 4k 8k', 'write -P 26 600k 4k']);
      return f('snap.qcow2');
    }],
    ['persistent bitmap', async () => {
      await create(f('bitmap.qcow2'), '1M', 'cluster_size=4096');
      await qemuIo(f('bitmap.qcow2'), ['write -P 27 0 16k', 'write -P 28 300k 8k']);
      await mustQemu('qemu-img', ['bitmap', '--add', f('bitmap.qcow2'), 'b0']);
      await mustQemu('qemu-img', ['bitmap', '--add', '-g', '65536', f('bitmap.qcow2'), 'b1']);
      return f('bitmap.qcow2');
    }],
  ];
  const out: DiffBase[] = [];
  for (const [name, make] of recipes) out.push({ name, bytes: new Uint8Array(fs.readFileSync(await make())) });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Mutants
// ---------------------------------------------------------------------------------------------

/** Bytes written into a structure the generic mutations do not aim at. */
export interface RegionMutation {
  where: 'snapshot table' | 'bitmap directory' | 'bitmap table';
  at: number;
  bytes: Uint8Array;
}

export interface Mutant {
  base: number;
  mutations: Mutation[];
  regions: RegionMutation[];
  /** Cut the file to this fraction (of 2^16) of its length; null: keep it whole. */
  truncate: number | null;
}

const be = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
const u32 = (b: Uint8Array, o: number) => (o >= 0 && o + 4 <= b.length ? be(b).getUint32(o) : 0);
const u64n = (b: Uint8Array, o: number) => (o >= 0 && o + 8 <= b.length ? Number(be(b).getBigUint64(o)) : 0);

/** Offset of the bitmap directory named by the bitmaps extension (0 when there is none). */
function bitmapDirectory(b: Uint8Array): number {
  const version = u32(b, 4);
  let off = version >= 3 ? u32(b, 100) : 72;
  const clusterBits = u32(b, 20);
  const end = clusterBits >= 9 && clusterBits <= 21 ? Math.min(1 << clusterBits, b.length) : Math.min(65536, b.length);
  for (let n = 0; n < 64 && off + 8 <= end; n++) {
    const magic = u32(b, off);
    const len = u32(b, off + 4);
    if (magic === 0) return 0;
    if (magic === 0x23852875 && len === 24) return u64n(b, off + 8 + 16);
    off += 8 + ((len + 7) & ~7);
  }
  return 0;
}

function regionStart(b: Uint8Array, where: RegionMutation['where']): number {
  if (where === 'snapshot table') return u64n(b, 64);
  const dir = bitmapDirectory(b);
  if (where === 'bitmap directory' || dir === 0) return dir;
  return u64n(b, dir);
}

/** The mutant's bytes. */
function mutantBytes(bases: DiffBase[], m: Mutant): Uint8Array {
  let b = applyMutations(bases[m.base % bases.length].bytes, m.mutations);
  for (const r of m.regions) {
    const start = regionStart(b, r.where);
    if (start <= 0 || start >= b.length) continue;
    const at = start + (r.at % 512);
    if (at < b.length) b.set(r.bytes.subarray(0, b.length - at), at);
  }
  if (m.truncate !== null) b = b.slice(0, Math.floor((b.length * m.truncate) / 65536));
  return b;
}

const regionArb: fc.Arbitrary<RegionMutation> = fc.record({
  where: fc.constantFrom('snapshot table' as const, 'bitmap directory' as const, 'bitmap table' as const),
  at: fc.nat({ max: 511 }),
  bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }),
});

export function mutantArb(nBases: number): fc.Arbitrary<Mutant> {
  return fc.record({
    base: fc.nat({ max: nBases - 1 }),
    mutations: fc.array(mutationArb, { minLength: 0, maxLength: 3 }),
    regions: fc.array(regionArb, { maxLength: 2 }),
    truncate: fc.option(fc.nat({ max: 65535 }), { freq: 6 }),
  }).filter((m) => m.mutations.length + m.regions.length > 0 || m.truncate !== null);
}

export function describeMutant(bases: DiffBase[], m: Mutant): string {
  return `${bases[m.base % bases.length].name}: ${fc.stringify(m)}`;
}

// ---------------------------------------------------------------------------------------------
// The judge
// ---------------------------------------------------------------------------------------------

export type Verdict =
  | 'same'
  | 'both-refuse'
  | 'allowed-stricter'
  | 'crash'
  | 'accepts-what-qemu-refuses'
  | 'different-data'
  | 'refuses-what-qemu-accepts'
  | 'qemu-timeout';

export const FAILURES: Verdict[] = ['crash', 'accepts-what-qemu-refuses', 'different-data', 'refuses-what-qemu-accepts'];

export interface Judgement {
  verdict: Verdict;
  /** What each side said, for the tally and for failure reports. */
  qemu: string;
  ours: string;
  detail: string;
}

interface Side {
  /** Guest bytes read (the first min(size, READ_CAP)), or null when refused. */
  data: Uint8Array | null;
  size: number | null;
  why: string;
  /** cowchain's refusal message, naming what it refused. */
  message?: string;
}

let serial = 0;

/** qemu's verdict: `qemu-img info` (opens, no backing chain), then `qemu-img dd` of the guest view (also of none). */
async function qemuSide(file: string, scratch: string): Promise<Side & { timedOut: boolean }> {
  const info = await qemuImg(['info', '--output=json', '-f', 'qcow2', file]);
  if (info.timedOut) return { data: null, size: null, why: 'info timed out', timedOut: true };
  if (info.status !== 0) return { data: null, size: null, why: `info: ${firstLine(info.stderr)}`, timedOut: false };
  const size = Number(JSON.parse(info.stdout)['virtual-size']);
  const n = Math.min(size, READ_CAP);
  // Even with nothing to read, dd opens the image for I/O (count=0): `qemu-img info` opens it
  // without, which skips checks a read open makes (autoclear data-file-raw without a data file).
  const out = path.join(scratch, `dd-${process.pid}-${serial++}.raw`);
  try {
    const bs = 64 * KiB;
    const dd = await qemuImg(['dd', '-f', 'qcow2', '-O', 'raw', `bs=${bs}`, `count=${Math.ceil(n / bs)}`, `if=${file}`, `of=${out}`]);
    if (dd.timedOut) return { data: null, size, why: 'dd timed out', timedOut: true };
    if (dd.status !== 0) return { data: null, size, why: `read: ${firstLine(dd.stderr)}`, timedOut: false };
    const data = n === 0 ? new Uint8Array(0) : new Uint8Array(fs.readFileSync(out));
    return { data: data.subarray(0, n), size, why: 'read', timedOut: false };
  } finally {
    fs.rmSync(out, { force: true });
  }
}

function firstLine(s: string): string {
  return s.trim().split('\n')[0].replace(/^qemu-img: /, '').replace(/'[^']*'/g, "'…'").slice(0, 120);
}

/** cowchain's verdict: open the chain read-only and read the same prefix. Throws on a crash. */
function oursSide(file: string): Side {
  let img;
  try {
    img = openImage(file, { format: 'qcow2' });
  } catch (e) {
    return refusal(e, 'open');
  }
  try {
    const size = img.virtualSize;
    const n = Math.min(size, READ_CAP);
    return { data: img.read(0, n), size, why: 'read' };
  } catch (e) {
    return refusal(e, 'read');
  } finally {
    try {
      img.close();
    } catch (e) {
      refusal(e, 'close');
    }
  }
}

class Crash extends Error {}

function refusal(e: unknown, what: string): Side {
  if (e instanceof CowError && e.code !== 'ECOW_INTERNAL') return { data: null, size: null, why: `${what}: ${e.code}`, message: e.message };
  const err = e instanceof Error ? e : new Error(String(e));
  throw new Crash(`${what}: ${e instanceof CowError ? 'ECOW_INTERNAL' : 'not a CowError'}: ${err.stack ?? err.message}`);
}

/**
 * A zstd cluster qemu decoded and we refused is allowed only when a second decoder, independent
 * of ours (libzstd 1.5.7 in wasm) and of qemu's (the system libzstd), refuses it too: fzstd, a
 * separate implementation. libzstd versions disagree on some damaged Huffman streams (Debian's
 * 1.5.4 decodes streams 1.5.7 calls corrupt); docs/qemu-differences.md. Returns the reason, or
 * null when the refusal is not of that kind.
 */
function zstdRefusedEverywhere(file: string, message: string): string | null {
  const m = /host 0x([0-9a-f]+), (\d+) bytes/.exec(message);
  if (!m) return null;
  const bytes = fs.readFileSync(file);
  const header = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = header.getUint32(4) >= 3 ? header.getUint32(100) : 72;
  const zstdImage = headerLength > 104 && (header.getBigUint64(72) & 8n) !== 0n && bytes[104] === 1;
  if (!zstdImage) return null;
  const at = parseInt(m[1], 16);
  const cluster = bytes.subarray(at, at + Number(m[2]));
  const clusterSize = 2 ** header.getUint32(20);
  let out = 0;
  let failed = false;
  try {
    // Like qemu: one cluster's worth from the first frame(s); whatever follows is not looked at.
    const d = new ZstdDecompress((chunk) => {
      out += chunk.length;
      if (out >= clusterSize) throw new Error('full');
    });
    d.push(cluster, true);
  } catch (e) {
    failed = (e as Error).message !== 'full';
  }
  return failed ? `zstd cluster at 0x${m[1]}: libzstd 1.5.7 and fzstd both refuse it (qemu's libzstd decodes it)` : null;
}

/** Judge one image file (a mutant, or a regression image) against qemu. */
export async function judgeFile(file: string, scratch: string): Promise<Judgement> {
  let ours: Side;
  try {
    ours = oursSide(file);
  } catch (e) {
    if (!(e instanceof Crash)) throw e;
    return { verdict: 'crash', qemu: '', ours: 'crash', detail: e.message };
  }
  const q = await qemuSide(file, scratch);
  const j = (verdict: Verdict, detail = ''): Judgement => ({ verdict, qemu: q.why, ours: ours.why, detail });
  if (q.timedOut) return j('qemu-timeout');
  if (q.data === null) return ours.data === null ? j('both-refuse') : j('accepts-what-qemu-refuses', `qemu: ${q.why}; cowchain read ${ours.size} bytes`);
  if (ours.data === null) {
    const code = ours.why.split(': ')[1] as CowErrorCode;
    const check = await qemuImg(['check', '--output=json', '-f', 'qcow2', file]);
    const corrupt = check.status === 1 || check.status === 2;
    if (corrupt && ALLOWED_STRICTER[code] !== undefined) return j('allowed-stricter', `qemu-img check exit ${check.status}`);
    const zstd = code === 'ECOW_DECOMPRESS' ? zstdRefusedEverywhere(file, ours.message ?? '') : null;
    if (zstd) return j('allowed-stricter', zstd);
    return j('refuses-what-qemu-accepts', `qemu-img check exit ${check.status}: ${firstLine(check.stderr || check.stdout)}`);
  }
  if (q.size !== ours.size) return j('different-data', `virtual size: qemu ${q.size}, cowchain ${ours.size}`);
  const a = q.data;
  const b = ours.data;
  if (a.length !== b.length) return j('different-data', `read ${a.length} bytes from qemu, ${b.length} from cowchain`);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) return j('different-data', `guest byte ${i}: qemu ${a[i]}, cowchain ${b[i]}`);
  }
  return j('same');
}

/** Write the mutant into `scratch` and judge it; the file is removed afterwards. */
export async function judgeMutant(bases: DiffBase[], m: Mutant, scratch: string): Promise<Judgement> {
  const file = path.join(scratch, `mutant-${process.pid}-${serial++}.qcow2`);
  fs.writeFileSync(file, mutantBytes(bases, m));
  try {
    return await judgeFile(file, scratch);
  } finally {
    fs.rmSync(file, { force: true });
  }
}
