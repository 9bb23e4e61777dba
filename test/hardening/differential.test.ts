// Differential fuzz against qemu (issue 20): seeded mutants of qemu-made images, each read by
// qemu and by cowchain, judged by test/support/qemu-diff.ts. Never accept what qemu refuses,
// never read other bytes than qemu reads, never crash; refuse what qemu reads only where
// `qemu-img check` calls the image corrupt and the refusal is a listed strictness
// (docs/qemu-differences.md).
//
// Counts, never time (a loaded machine judges the same mutants, slower): 50 in `npm test`, 5000
// in `npm run test:full`, COWCHAIN_DIFF_MUTANTS when set (`npm run fuzz:diff`: 5000). COWCHAIN_DIFF_SEED fixes the seed (default: random, printed; under CI=true a
// fixed one, see fuzzSeed). Every
// divergence found is kept below in REGRESSIONS.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fieldIndex } from '../support/qcow2-fuzz.js';
import { requireQemu } from '../support/qemu.js';
import { byTier, fuzzSeed } from '../support/tier.js';
import {
  ALLOWED_STRICTER, FAILURES, describeMutant, judgeMutant, makeDiffBases, mutantArb, type DiffBase, type Judgement, type Mutant,
} from '../support/qemu-diff.js';

const MUTANTS = Number(process.env.COWCHAIN_DIFF_MUTANTS ?? byTier(50, 5000));
const SEED = fuzzSeed('COWCHAIN_DIFF_SEED', 1124128831);
/** Mutants judged at once: qemu runs as child processes, two keep both cores busy. */
const PARALLEL = 2;

const SCRATCH = fs.mkdtempSync(path.join(os.tmpdir(), 'cowchain-diff-'));
afterAll(() => fs.rmSync(SCRATCH, { recursive: true, force: true }));

let bases: DiffBase[];

beforeAll(async () => {
  requireQemu();
  bases = await makeDiffBases(SCRATCH);
}, 180_000);

function baseIndex(name: string): number {
  const i = bases.findIndex((b) => b.name === name);
  if (i < 0) throw new Error(`no base image "${name}"`);
  return i;
}

describe('differential fuzz against qemu', () => {
  it(
    `${MUTANTS} mutants of qemu-made images: no crash, never accepts what qemu refuses, same data, stricter only where qemu-img check calls it corrupt`,
    async () => {
      const t0 = Date.now();
      const mutants = fc.sample(mutantArb(bases.length), { seed: SEED, numRuns: MUTANTS });
      const tally = new Map<string, number>();
      const failures: string[] = [];
      let next = 0;
      let done = 0;
      const worker = async () => {
        for (;;) {
          const i = next++;
          if (i >= mutants.length) return;
          const m = mutants[i];
          const j = await judgeMutant(bases, m, SCRATCH);
          done++;
          const key = `${j.verdict.padEnd(26)} qemu ${j.qemu} | cowchain ${j.ours}`;
          tally.set(key, (tally.get(key) ?? 0) + 1);
          if (FAILURES.includes(j.verdict)) failures.push(`#${i} ${j.verdict}: ${j.detail}\n   qemu: ${j.qemu}; cowchain: ${j.ours}\n   ${describeMutant(bases, m)}`);
        }
      };
      await Promise.all(Array.from({ length: PARALLEL }, worker));
      const verdicts = new Map<string, number>();
      for (const [k, v] of tally) {
        const verdict = k.split(' ')[0];
        verdicts.set(verdict, (verdicts.get(verdict) ?? 0) + v);
      }
      console.log(
        `differential fuzz: ${done} mutants (COWCHAIN_DIFF_SEED=${SEED}) in ${((Date.now() - t0) / 1000).toFixed(1)} s: ` +
          [...verdicts].map(([k, v]) => `${k} ${v}`).join(', ') +
          '\n' +
          [...tally].sort((a, b) => b[1] - a[1]).map(([k, v]) => `  ${String(v).padStart(6)}  ${k}`).join('\n'),
      );
      expect(failures.slice(0, 10).join('\n'), `COWCHAIN_DIFF_SEED=${SEED}: ${failures.length} failures`).toBe('');
      expect(done).toBe(MUTANTS);
      // The mix is real: both verdicts of agreement happen.
      expect(verdicts.get('same') ?? 0).toBeGreaterThan(0);
      expect(verdicts.get('both-refuse') ?? 0).toBeGreaterThan(0);
    },
    Math.max(300_000, MUTANTS * 2_000),
  );
});

// ---------- regressions: every divergence found, as a named mutant ----------

const field = (name: string, value: bigint) => ({ k: 'field' as const, field: fieldIndex(name), choice: 0, random: value, useRandom: true });
const bytesAt = (at: number, bytes: number[]) => ({ k: 'bytes' as const, where: 'any' as const, at, bytes: Uint8Array.from(bytes) });

interface Regression {
  name: string;
  base: string;
  mutant: Omit<Mutant, 'base'>;
  /** What the judge must find (default: no failure). */
  expect?: (j: Judgement) => void;
}

const REGRESSIONS: Regression[] = [
  {
    // qemu counts whole sectors: info shows 67108864 and the raw copy has 67108864 bytes; we
    // reported 67108865 and wrote 67109376.
    name: 'issue 20: virtual size 0x4000001 reads as 0x4000000 bytes',
    base: 'v3 64K',
    mutant: { mutations: [field('size', 0x4000001n), field('l1_size', 1n)], regions: [], truncate: null },
    expect: (j) => expect(j.verdict).toBe('same'),
  },
  {
    name: 'issue 20: autoclear data-file-raw without an external data file is refused',
    base: 'v3 64K',
    mutant: { mutations: [field('autoclear_features', 2n)], regions: [], truncate: null },
    expect: (j) => {
      expect(j.verdict).toBe('both-refuse');
      expect(j.ours).toBe('open: ECOW_UNSUPPORTED_FEATURE');
    },
  },
  {
    // The table overlaps the header: entry 0's extra_data_size is the header's l1_size field.
    name: 'issue 20: a snapshot table at offset 0 (over the header) is refused',
    base: 'v3 64K',
    mutant: { mutations: [field('nb_snapshots', 3n), field('snapshots_offset', 0n), field('l1_size', 4096n)], regions: [], truncate: null },
    expect: (j) => {
      expect(j.verdict).toBe('both-refuse');
      expect(j.ours).toBe('open: ECOW_BAD_SNAPSHOT_TABLE');
    },
  },
  {
    // The name stored in the header is the base's absolute path; NULs after it are not part of it.
    name: 'issue 20: a backing file name with NUL bytes after it names the file before the NUL',
    base: 'overlay over a qcow2 base',
    mutant: { mutations: [field('backing_file_size', 0n)], regions: [], truncate: null },
    expect: (j) => expect(j.verdict).toBe('same'),
  },
  {
    // qemu-img info opens an image without I/O and so without the data-file checks; with a
    // virtual size of 0 the judge took that open as qemu's read and saw cowchain refuse what qemu
    // "reads". A read open (qemu-img dd, convert) refuses it. Found by the 5000-mutant run of
    // COWCHAIN_DIFF_SEED=2030873568 (#2985); the judge now opens for I/O even with nothing to read.
    name: 'a zero-size image with autoclear data-file-raw is refused by both (qemu-img info alone opens it)',
    base: 'v3 64K',
    mutant: { mutations: [field('size', 0n), field('autoclear_features', 0xd68642b2f256b8an)], regions: [], truncate: null },
    expect: (j) => {
      expect(j.verdict).toBe('both-refuse');
      expect(j.qemu).toMatch(/data-file-raw requires a data file/);
      expect(j.ours).toBe('open: ECOW_UNSUPPORTED_FEATURE');
    },
  },
  // Found by the fuzz while it was being written:
  {
    // The file ends 0x220 bytes before the end of the L1 table (512-byte clusters). qemu counts
    // the file in whole sectors (0x600), so the table overshoots it by less than a cluster: qemu
    // reads zeros and qemu-img check finds nothing wrong. We refused the open.
    name: 'an L1 table cut off by the end of the file by less than a cluster reads as zeros',
    base: 'v3 512B refcount_bits=1',
    mutant: { mutations: [], regions: [], truncate: 5203 },
    expect: (j) => expect(j.verdict).toBe('same'),
  },
  {
    // backing_file_offset set, backing_file_size 0: qemu sees no backing file. We looked for a
    // backing file named "" (the image's own directory) and failed with EISDIR.
    name: 'a backing file name of length 0 is no backing file',
    base: 'v3 4K refcount_bits=64',
    mutant: { mutations: [field('backing_file_offset', 0x800n)], regions: [], truncate: null },
    expect: (j) => expect(j.verdict).toBe('same'),
  },
  {
    // 70 bytes of a version 2 image: qemu reads the rest of the header as zeros and opens it
    // (qemu-img check calls it corrupt). We refused it as too short for a header, which is not a
    // listed strictness; now the zeros are read and the L1 table past the end is what we refuse.
    name: 'a file that ends inside the header reads as zeros from there',
    base: 'deflate 64K v2 (convert -c)',
    mutant: { mutations: [], regions: [], truncate: 8 },
    expect: (j) => {
      expect(j.verdict).toBe('allowed-stricter');
      expect(j.ours).toBe('open: ECOW_CORRUPT');
    },
  },
  {
    // Twelve bytes inside a zstd cluster's Huffman-coded literals. Debian's libzstd 1.5.4 (what
    // qemu links) decodes the stream; zstd 1.5.7's reference decoder, which we run, and fzstd
    // both call it corrupt. Before, fzstd alone decided, and refused streams every libzstd reads.
    name: 'a zstd stream only some libzstd versions decode is refused, and the judge checks a second decoder agrees',
    base: 'zstd 16K (convert -c)',
    mutant: {
      mutations: [{ k: 'bytes', where: 'compressed', at: 88756804, bytes: Uint8Array.from([197, 131, 28, 152, 47, 87, 245, 145, 147, 149, 226, 64]) }],
      regions: [],
      truncate: null,
    },
    expect: (j) => {
      expect(j.ours).toBe('read: ECOW_DECOMPRESS');
      // A qemu linked with a newer libzstd refuses it too.
      if (j.verdict !== 'both-refuse') expect(j.detail).toMatch(/libzstd 1\.5\.7 and fzstd both refuse/);
    },
  },
];

describe('differential regressions', () => {
  it.each(REGRESSIONS.map((r) => [r.name, r] as const))('%s', async (_n, r) => {
    const m: Mutant = { base: baseIndex(r.base), ...r.mutant };
    if (r.name.includes('NUL')) {
      // Lengthen the stored name over trailing NULs: the header keeps the name, then zeros.
      const top = bases[m.base].bytes;
      const off = Number(new DataView(top.buffer, top.byteOffset).getBigUint64(8));
      const len = new DataView(top.buffer, top.byteOffset).getUint32(16);
      m.mutations = [field('backing_file_size', BigInt(len + 5)), bytesAt(off + len, [0, 0, 0, 0x41, 0x42])];
    }
    const j = await judgeMutant(bases, m, SCRATCH);
    expect(FAILURES.includes(j.verdict), `${j.verdict}: ${j.detail} (qemu: ${j.qemu}; cowchain: ${j.ours})`).toBe(false);
    r.expect?.(j);
  }, 60_000);

  it('every listed strictness is explained in docs/qemu-differences.md', () => {
    const doc = fs.readFileSync(new URL('../../docs/qemu-differences.md', import.meta.url), 'utf8');
    for (const code of Object.keys(ALLOWED_STRICTER)) expect(doc, code).toContain(code);
  });
});
