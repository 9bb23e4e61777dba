/**
 * Deno smoke suite: the BUILT package (dist/*.js + build/cowchain.wasm, as `npm run build` leaves
 * them) run by Deno 2 instead of Node. Only `node:` built-ins are used, so the same code is also
 * type-checked by the repo's tsc; Deno supplies them through its Node compatibility layer.
 *
 *   deno run --no-lock --no-prompt --allow-read --allow-write --allow-sys=uid --allow-env=COWCHAIN_SMOKE_SELF_TEST test/deno/smoke.ts [WORKDIR]
 *
 * (The package itself needs no --allow-net and no environment variable; --allow-sys=uid is for
 * the driver's access(2) checks, which Deno answers from the uid; the one variable is this
 * suite's own self-test switch.) test/deno/deno.test.ts spawns exactly that, with the Deno binary
 * from node_modules. WORKDIR (default: the OS temp dir) gets a scratch folder, removed at the end. Each
 * check runs in turn; the last line is `N passed, N failed`, and the exit status is 1 when any
 * check failed (or the suite itself could not start), 0 otherwise.
 *
 * Sections: the engine (create, write/read, compressed convert, a 2-layer chain committed into its base, LUKS
 * encryption, and — when deno.test.ts left them in WORKDIR — LUKS images Node and qemu-img made, memory backend), the async API (jobs in Web Workers: commit, progress, cancel, a coded error, a
 * host-supplied engine) and the volume driver (snapshot lifecycle, both delete orders). A new
 * section is one more `check(...)` call.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import process from 'node:process';
import {
  commit,
  check as checkAsync,
  CowError,
  EnginePool,
  defaultEnginePool,
  commitImage,
  convertImage,
  createImage,
  createQcow2On,
  MemoryBackend,
  openImage,
  openImageOn,
  qemuStyleInfo,
  isCowError,
} from '../../dist/index.js';
import { VolumeDriver } from '../../dist/volume/driver.js';
// Deno resolves the file as named (.ts); tsc without allowImportingTsExtensions objects to the name only.
// @ts-ignore TS5097
import { cryptoPrimitivesDigest } from './crypto-primitives.ts';

const KiB = 1024;
const MiB = 1024 * KiB;

// ---------------------------------------------------------------- tiny harness

interface Outcome {
  name: string;
  ok: boolean;
  ms: number;
  error?: unknown;
}
const checks: { name: string; fn: () => void | Promise<void> }[] = [];
function check(name: string, fn: () => void | Promise<void>): void {
  checks.push({ name, fn });
}

class SmokeFailure extends Error {}
function assert(cond: unknown, message: string): asserts cond {
  if (!cond) throw new SmokeFailure(message);
}
function assertEqual<T>(actual: T, expected: T, what: string): void {
  if (actual !== expected) throw new SmokeFailure(`${what}: expected ${String(expected)}, got ${String(actual)}`);
}
/** Byte-for-byte equality, naming the first differing offset. */
function assertBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  assertEqual(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    if (actual[i] !== expected[i]) throw new SmokeFailure(`${what}: byte ${i} is ${actual[i]}, expected ${expected[i]}`);
  }
}

/** Deterministic pseudo-random bytes (xorshift32), never zero, so a lost write cannot read as a hole. */
function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = 1 + (x % 255);
  }
  return out;
}

/** Writes into a model of the guest view and into the image alike. */
function writeBoth(model: Uint8Array, img: { write(off: number, data: Uint8Array): void }, off: number, data: Uint8Array): void {
  img.write(off, data);
  model.set(data, off);
}

function readAll(file: string): Uint8Array {
  const img = openImage(file);
  try {
    return img.read(0, img.virtualSize);
  } finally {
    img.close();
  }
}

// ---------------------------------------------------------------- the suite

const workArg = process.argv[2];
const work = workArg ? fs.mkdtempSync(path.join(workArg, 'smoke-')) : fs.mkdtempSync(path.join(os.tmpdir(), 'cowchain-deno-smoke-'));
const at = (name: string) => path.join(work, name);

check('runtime is Deno', () => {
  const deno = (globalThis as { Deno?: { version?: { deno?: string } } }).Deno;
  assert(deno?.version?.deno, 'globalThis.Deno is missing: this suite must run under Deno');
  assert(Number(deno.version.deno.split('.')[0]) >= 2, `Deno 2 or later required, got ${deno.version.deno}`);
});

check('engine: createImage qcow2, write a pattern through openImage, read it back', () => {
  const file = at('plain.qcow2');
  createImage(file, { format: 'qcow2', size: 8 * MiB });
  const model = new Uint8Array(8 * MiB);
  const img = openImage(file, { writable: true });
  try {
    assertEqual(img.format, 'qcow2', 'format');
    assertEqual(img.virtualSize, 8 * MiB, 'virtual size');
    writeBoth(model, img, 0, pattern(4 * KiB, 1));
    writeBoth(model, img, 65_536 - 100, pattern(300, 2)); // straddles a cluster boundary
    writeBoth(model, img, 3 * MiB + 12_345, pattern(200_000, 3)); // several clusters, unaligned
    writeBoth(model, img, 8 * MiB - 512, pattern(512, 4)); // the very end
    img.flush();
  } finally {
    img.close();
  }
  assertBytes(readAll(file), model, 'reopened image');
  const reopened = openImage(file);
  try {
    const info = qemuStyleInfo(reopened);
    assertEqual(info['virtual-size'], 8 * MiB, 'qemuStyleInfo virtual-size');
    assertEqual(info.format, 'qcow2', 'qemuStyleInfo format');
    assertEqual(info['cluster-size'], 65_536, 'qemuStyleInfo cluster-size');
  } finally {
    reopened.close();
  }
});

check('engine: createImage raw, write/read back', () => {
  const file = at('plain.raw');
  createImage(file, { format: 'raw', size: 1 * MiB });
  const model = new Uint8Array(1 * MiB);
  const img = openImage(file, { writable: true, format: 'raw' });
  try {
    writeBoth(model, img, 777, pattern(10_000, 5));
  } finally {
    img.close();
  }
  assertBytes(readAll(file), model, 'raw image');
  assertEqual(fs.statSync(file).size, 1 * MiB, 'raw file size');
});

check('engine: convert -c with deflate and zstd (node:zlib and the zstd encoder under Deno), read back', () => {
  const src = at('to-compress.qcow2');
  createImage(src, { format: 'qcow2', size: 2 * MiB });
  const model = new Uint8Array(2 * MiB);
  const img = openImage(src, { writable: true });
  try {
    writeBoth(model, img, 0, new Uint8Array(300_000).fill(0x61));
    writeBoth(model, img, MiB + 4321, pattern(200_000, 7));
  } finally {
    img.close();
  }
  for (const compressionType of ['zlib', 'zstd'] as const) {
    const out = at(`compressed-${compressionType}.qcow2`);
    const from = openImage(src);
    try {
      convertImage(from, out, { format: 'qcow2', compressed: true, create: { compressionType } });
    } finally {
      from.close();
    }
    assertBytes(readAll(out), model, `${compressionType} image`);
    assert(fs.statSync(out).size < fs.statSync(src).size, `${compressionType}: compressed image not smaller than its source`);
  }
});

check('engine: 2-layer chain, commitImage into the base, read back', () => {
  const base = at('base.qcow2');
  const top = at('top.qcow2');
  const size = 4 * MiB;
  const model = new Uint8Array(size);
  createImage(base, { format: 'qcow2', size });
  let img = openImage(base, { writable: true });
  try {
    writeBoth(model, img, 0, pattern(1 * MiB, 10));
    writeBoth(model, img, 2 * MiB, pattern(1 * MiB, 11));
  } finally {
    img.close();
  }
  const baseBefore = model.slice();

  createImage(top, { format: 'qcow2', backingFile: 'base.qcow2', backingFormat: 'qcow2' });
  img = openImage(top, { writable: true });
  try {
    assertEqual(img.virtualSize, size, 'overlay size (from its backing file)');
    assertEqual(img.chain().length, 2, 'chain length');
    writeBoth(model, img, 512 * KiB, pattern(1 * MiB, 12)); // over base data and a hole
    writeBoth(model, img, 3 * MiB + 1, pattern(4097, 13));
  } finally {
    img.close();
  }
  assertBytes(readAll(top), model, 'top before commit');
  assertBytes(readAll(base), baseBefore, 'base before commit (untouched by overlay writes)');

  commitImage(top);
  assertBytes(readAll(base), model, 'base after commit');
  assertBytes(readAll(top), model, 'top after commit (emptied, reads through)');
  const topImg = openImage(top);
  try {
    const own = topImg.map().filter((e) => e.depth === 0 && e.data);
    assertEqual(own.length, 0, 'data extents left in the emptied top');
  } finally {
    topImg.close();
  }
});

check('engine: memory backend (no file system)', () => {
  const backend = new MemoryBackend();
  createQcow2On(backend, { size: 2 * MiB });
  const img = openImageOn(backend, { writable: true });
  try {
    const data = pattern(70_000, 20);
    img.write(100_000, data);
    assertBytes(img.read(100_000, data.length), data, 'memory image');
  } finally {
    img.close();
  }
});

check('node:crypto under Deno: the PBKDF2, hashes, HMAC and AES-ECB that LUKS uses (digest compared with Node by deno.test.ts)', () => {
  console.log(`crypto primitives digest: ${cryptoPrimitivesDigest()}`);
});

/** The secret of the LUKS check; test/deno/deno.test.ts opens what it leaves with the same one. */
const LUKS_SECRET = new TextEncoder().encode('deno luks smoke secret');

check('engine: LUKS-encrypted qcow2 (node:crypto AES-ECB, PBKDF2, HMAC under Deno): create, write, read back, overlay committed, wrong secret refused', () => {
  const keySecrets = () => LUKS_SECRET;
  const encrypt = { format: 'luks' as const, keySecret: LUKS_SECRET, iterTimeMs: 10 };
  const base = at('luks-base.qcow2');
  const top = at('luks-top.qcow2');
  const size = 4 * MiB;
  const model = new Uint8Array(size);
  createImage(base, { format: 'qcow2', size, encrypt });
  let img = openImage(base, { writable: true, keySecrets });
  try {
    writeBoth(model, img, 0, pattern(1 * MiB + 300, 60)); // past the engine's 1 MiB pass, a ragged end
    writeBoth(model, img, 2 * MiB - 100, pattern(700, 61)); // ragged first and last sector
  } finally {
    img.close();
  }
  createImage(top, { format: 'qcow2', backingFile: 'luks-base.qcow2', backingFormat: 'qcow2', encrypt });
  img = openImage(top, { writable: true, keySecrets });
  try {
    assert(img.encrypted, 'the overlay is encrypted');
    writeBoth(model, img, 3 * MiB + 7, pattern(200_000, 62));
    writeBoth(model, img, 100, pattern(5000, 63));
    assertBytes(img.read(0, size), model, 'encrypted chain before commit');
  } finally {
    img.close();
  }
  commitImage(top, { keySecrets });
  img = openImage(base, { keySecrets });
  try {
    assertBytes(img.read(0, size), model, 'encrypted base after commit');
  } finally {
    img.close();
  }
  const code = (fn: () => void): string => {
    try {
      fn();
      return 'none';
    } catch (e) {
      return isCowError(e) ? e.code : String(e);
    }
  };
  assertEqual(code(() => openImage(base, { keySecrets: () => new TextEncoder().encode('wrong') }).close()), 'ECOW_BAD_SECRET', 'a wrong secret');
  const locked = openImage(base);
  try {
    assertEqual(code(() => locked.read(0, 512)), 'ECOW_KEY_REQUIRED', 'a read without the key');
  } finally {
    locked.close();
  }
  // Left for the Node side (deno.test.ts) to decrypt and compare: the image and what it must read.
  if (workArg) {
    fs.copyFileSync(base, path.join(workArg, 'luks-from-deno.qcow2'));
    fs.writeFileSync(path.join(workArg, 'luks-from-deno.raw'), model);
  }
});

/**
 * Set by test/deno/deno.test.ts in WORKDIR: encrypted images made by Node and by qemu-img, with
 * the bytes each must read (all keyed by LUKS_SECRET). The check runs when the file is there.
 */
const LUKS_INPUTS = workArg ? path.join(workArg, 'luks-inputs.json') : undefined;
if (LUKS_INPUTS && fs.existsSync(LUKS_INPUTS)) {
  check('engine: LUKS images made by Node and by qemu-img read here as they read there; a wrong secret is refused', () => {
    const inputs = JSON.parse(fs.readFileSync(LUKS_INPUTS, 'utf8')) as { name: string; file: string; raw: string }[];
    assert(inputs.length >= 2, `${LUKS_INPUTS} lists ${inputs.length} images`);
    for (const input of inputs) {
      const file = path.join(workArg!, input.file);
      const img = openImage(file, { keySecrets: () => LUKS_SECRET });
      try {
        assert(img.encrypted, `${input.name}: encrypted`);
        assertBytes(img.read(0, img.virtualSize), fs.readFileSync(path.join(workArg!, input.raw)), input.name);
      } finally {
        img.close();
      }
      let code = 'none';
      try {
        openImage(file, { keySecrets: () => new TextEncoder().encode('not the secret') }).close();
      } catch (e) {
        code = isCowError(e) ? e.code : String(e);
      }
      assertEqual(code, 'ECOW_BAD_SECRET', `${input.name}: a wrong secret`);
    }
  });
}

check('engine: errors are CowErrors with codes', () => {
  let caught: unknown;
  try {
    openImage(at('does-not-exist.qcow2'));
  } catch (e) {
    caught = e;
  }
  assert(isCowError(caught), `expected a CowError, got ${String(caught)}`);
});

// The async API (src/worker): the same jobs in Web Workers.

/** A base with data and an overlay over part of it; returns what the chain reads. */
function chainWithData(name: string, size: number): { top: string; base: string; model: Uint8Array } {
  const base = at(`${name}-base.qcow2`);
  const top = at(`${name}-top.qcow2`);
  const model = new Uint8Array(size);
  createImage(base, { format: 'qcow2', size });
  let img = openImage(base, { writable: true });
  try {
    writeBoth(model, img, 0, pattern(size / 2, 40));
  } finally {
    img.close();
  }
  createImage(top, { format: 'qcow2', backingFile: `${name}-base.qcow2`, backingFormat: 'qcow2' });
  img = openImage(top, { writable: true });
  try {
    for (let off = 0; off < size; off += 1 * MiB) writeBoth(model, img, off + 4096, pattern(300 * KiB, 41 + off / MiB));
  } finally {
    img.close();
  }
  return { top, base, model };
}

check('async: commit in a worker, with progress; the base reads as the chain did', async () => {
  const { top, base, model } = chainWithData('async', 8 * MiB);
  const seen: number[] = [];
  await commit(top, { keepTop: true, stepBytes: 1 * MiB, onProgress: (done) => seen.push(done) });
  assert(seen.length >= 4, `progress calls: ${seen.length}`);
  assertEqual(seen[seen.length - 1], 8 * MiB, 'last progress');
  assertBytes(readAll(base), model, 'base after the async commit');
  const outcome = await checkAsync(base);
  assertEqual(outcome.exitCode, 0, 'check of the committed base');
});

check('async: an AbortSignal cancels a running commit (ECOW_CANCELLED); a re-run finishes it', async () => {
  const { top, base, model } = chainWithData('cancel', 8 * MiB);
  const ac = new AbortController();
  let caught: unknown;
  try {
    await commit(top, { keepTop: true, stepBytes: 1 * MiB, signal: ac.signal, onProgress: () => ac.abort() });
  } catch (e) {
    caught = e;
  }
  assert(isCowError(caught, 'ECOW_CANCELLED'), `expected ECOW_CANCELLED, got ${String(caught)}`);
  await commit(top, { keepTop: true });
  assertBytes(readAll(base), model, 'base after the re-run');
});

check('async: errors arrive as CowErrors with their codes; a host-supplied engine module runs jobs', async () => {
  let caught: unknown;
  try {
    await commit(at('nothing-here.qcow2'));
  } catch (e) {
    caught = e;
  }
  assert(caught instanceof CowError && caught.code === 'ECOW_NOT_FOUND', `expected ECOW_NOT_FOUND, got ${String(caught)}`);
  const wasm = fs.readFileSync(new URL('../../build/cowchain.wasm', import.meta.url));
  const pool = new EnginePool({ size: 1, wasm: new WebAssembly.Module(wasm) });
  try {
    const { top, base, model } = chainWithData('module', 2 * MiB);
    await commit(top, { pool, keepTop: true });
    assertBytes(readAll(base), model, 'base committed by a pool with a supplied module');
  } finally {
    await pool.close();
  }
});

// The volume driver (src/volume/driver.ts): Cinder snapshot semantics over the engine.

const VOL_A = '12341234-1234-4234-8234-123412341234';
const VOL_B = '56785678-5678-4678-8678-567856785678';
const SNAP_1 = 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa';
const SNAP_2 = 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb';
const VOLUME_SIZE = 4 * MiB;

/**
 * A volume with two snapshots over different data: returns the driver, what each snapshot must
 * hold, and what the volume holds now.
 */
async function volumeWithTwoSnapshots(dir: string, volumeId: string) {
  fs.mkdirSync(dir, { recursive: true });
  const driver = new VolumeDriver({ dir, jobs: defaultEnginePool() }); // its commits and flattens in Web Workers
  await driver.createVolume(volumeId, VOLUME_SIZE, { format: 'raw' });
  const model = new Uint8Array(VOLUME_SIZE);
  const writeActive = async (seed: number, off: number, len: number) => {
    const { activeFile } = await driver.attachInfo(volumeId);
    const img = openImage(path.join(dir, activeFile), { writable: true });
    try {
      writeBoth(model, img, off, pattern(len, seed));
    } finally {
      img.close();
    }
  };
  await writeActive(31, 0, 1 * MiB + 3);
  const at1 = model.slice();
  const s1 = await driver.createSnapshot(volumeId, SNAP_1, { status: 'available' });
  assertEqual(s1.backing, `volume-${volumeId}`, 'snapshot 1 backing');
  await writeActive(32, 512 * KiB, 2 * MiB); // overlaps snapshot 1's data
  const at2 = model.slice();
  await driver.createSnapshot(volumeId, SNAP_2, { status: 'available' });
  await writeActive(33, 3 * MiB, 100_000);
  return { driver, expected: new Map([[SNAP_1, at1], [SNAP_2, at2]]), current: model };
}

/** Flatten every listed snapshot and the active chain; compare with what they must hold. */
async function verifyVolume(driver: VolumeDriver, dir: string, volumeId: string, expected: Map<string, Uint8Array>, current: Uint8Array, when: string) {
  const desc = await driver.volumeInfo(volumeId);
  assertEqual(Object.keys(desc.snapshots).sort().join(','), [...expected.keys()].sort().join(','), `${when}: snapshots listed`);
  assertEqual(desc.pending, null, `${when}: pending journal`);
  assertBytes(readAll(path.join(dir, desc.active)), current, `${when}: active content`);
  for (const [id, bytes] of expected) {
    const out = path.join(dir, `flat-${id}-${Math.random().toString(36).slice(2)}.raw`);
    await driver.createVolumeFromSnapshot(volumeId, id, out);
    try {
      assertBytes(fs.readFileSync(out), bytes, `${when}: snapshot ${id} content`);
    } finally {
      fs.rmSync(out, { force: true });
    }
  }
}

for (const [label, volumeId, order] of [
  ['older first', VOL_A, [SNAP_1, SNAP_2]],
  ['newer first', VOL_B, [SNAP_2, SNAP_1]],
] as const) {
  check(`driver: volume, two snapshots, delete ${label}, content verified`, async () => {
    const dir = at(`volumes-${volumeId.slice(0, 8)}`);
    const { driver, expected, current } = await volumeWithTwoSnapshots(dir, volumeId);
    await verifyVolume(driver, dir, volumeId, expected, current, 'after two snapshots');
    for (const id of order) {
      const r = await driver.deleteSnapshot(volumeId, id, { status: 'available' });
      assertEqual(r.outcome, 'deleted', `delete ${id} outcome`);
      expected.delete(id);
      await verifyVolume(driver, dir, volumeId, expected, current, `after deleting ${id}`);
    }
    const again = await driver.deleteSnapshot(volumeId, order[0], { status: 'available' });
    assertEqual(again.outcome, 'not-found', 'deleting a deleted snapshot');
    const desc = await driver.volumeInfo(volumeId);
    assertEqual(desc.chain.length, 1, 'chain length once every snapshot is gone');
    const fsck = await driver.fsck(volumeId);
    assert(fsck, 'fsck report');
    await driver.deleteVolume(volumeId);
    const left = fs.readdirSync(dir).filter((n) => n.includes(volumeId));
    assertEqual(left.join(','), '', 'files left after deleteVolume');
  });
}

// The wrapper test proves that a failing check fails the run (exit 1) by setting this variable.
// Only the harness is under test then: the first check (the runtime) passes, this one fails, and
// the rest (run by the wrapper's other test) is left out.
if (process.env.COWCHAIN_SMOKE_SELF_TEST === 'fail') {
  checks.splice(1);
  check('harness self-test: this check fails on purpose', () => assert(false, 'deliberate failure'));
}

// ---------------------------------------------------------------- run

async function run(): Promise<number> {
  const outcomes: Outcome[] = [];
  for (const { name, fn } of checks) {
    const t0 = performance.now();
    try {
      await fn();
      outcomes.push({ name, ok: true, ms: performance.now() - t0 });
    } catch (error) {
      outcomes.push({ name, ok: false, ms: performance.now() - t0, error });
    }
    const o = outcomes[outcomes.length - 1];
    console.log(`${o.ok ? 'ok  ' : 'FAIL'} ${o.name} (${o.ms.toFixed(0)} ms)`);
    if (!o.ok) console.log(`     ${o.error instanceof Error ? (o.error.stack ?? o.error.message) : String(o.error)}`.replace(/\n/g, '\n     '));
  }
  const failed = outcomes.filter((o) => !o.ok).length;
  console.log(`${outcomes.length - failed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

let code = 1;
try {
  code = await run();
} catch (e) {
  console.log(`smoke suite crashed: ${e instanceof Error ? e.stack : String(e)}`);
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
process.exit(code);
