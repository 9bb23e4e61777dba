/**
 * Building blocks for volume-driver scenario tests: readable ids, a volume fixture that writes
 * distinct patterns through our engine between snapshots and records what the volume held when
 * each snapshot was taken, and the checks the seed's diagrams call for — the exact info file,
 * the exact chain (backing names read from the headers, by us and by qemu-img), and every
 * snapshot's point-in-time content (its backing chain flattened, by us and by qemu-img convert).
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { expect } from 'vitest';
import { MemoryBackend } from '../../src/engine/backend.js';
import { createQcow2On } from '../../src/image/create.js';
import { openImage, type KeySecrets } from '../../src/image/open-chain.js';
import { serializeInfo, type VolumeInfo } from '../../src/volume/info-file.js';
import { VolumeDriver, type VolumeDriverOptions } from '../../src/volume/driver.js';
import type { VolumeStatus } from '../../src/volume/status.js';
import { defaultEnginePool } from '../../src/worker/pool.js';
import { expectSameBytes, rng } from './images.js';
import { qemuCheck, qemuImg, qemuRaw, tmpDir } from './qemu.js';

export const VOL = '12341234-1234-4234-8234-123412341234';
export const OTHER_VOL = '99999999-9999-4999-8999-999999999999';
/** Snapshot ids named like the seed's `aaaa`, `bbbb`, … */
export const SNAP = {
  aaaa: 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa',
  bbbb: 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb',
  cccc: 'cccccccc-cccc-4ccc-8ccc-cccccccccccc',
  dddd: 'dddddddd-dddd-4ddd-8ddd-dddddddddddd',
} as const;
export type SnapName = keyof typeof SNAP;

export const BASE = `volume-${VOL}`;
/** `volume-<VOL>.<snap>` for a seed name. */
export const f = (s: SnapName): string => `${BASE}.${SNAP[s]}`;

export const MiB = 1 << 20;

/** The info file, written the way Cinder writes it, for an object spelled with seed names. */
export function infoOf(active: string, snaps: Partial<Record<SnapName, string>>): VolumeInfo {
  const info: VolumeInfo = { active };
  for (const [k, v] of Object.entries(snaps)) info[SNAP[k as SnapName]] = v!;
  return info;
}

/**
 * An encrypted volume's key: the secret's bytes, and a file holding them for qemu's
 * `--object secret,id=sec0,file=…` (the only way the tests hand it to qemu).
 */
export interface FixtureKey {
  secret: Buffer;
  file: string;
}

/** qemu's `--image-opts` for `file`, keyed with sec0 for every one of `depth` layers. */
export function keyedImageOpts(file: string, depth: number): string {
  return ['driver=qcow2', `file.filename=${file}`, ...Array.from({ length: depth }, (_, d) => `${'backing.'.repeat(d)}encrypt.key-secret=sec0`)].join(',');
}

/**
 * Tiny qcow2 overlays (512-byte clusters, `size` bytes), one per id, named `<base>.<id>` and each
 * backed by the one before, stacked on `base` in `dir`; returns the top's name. Each is made in
 * memory and written without fsync: these are fixtures, and a thousand durable creations take
 * seconds of I/O wait on a busy disk.
 */
export function stackOverlays(dir: string, base: string, ids: string[], size: number): string {
  let below = base;
  for (const id of ids) {
    const name = `${base}.${id}`;
    const image = new MemoryBackend();
    createQcow2On(image, { format: 'qcow2', size, clusterSize: 512, backingFile: below, backingFormat: 'qcow2' });
    fs.writeFileSync(path.join(dir, name), image.bytes());
    below = name;
  }
  return below;
}

/** Contents written as raw files for qemu-img compare, by hash: each distinct content once per process. */
const rawFiles = new Map<string, string>();
let rawDir: string | undefined;
function rawFileOf(content: Buffer): string {
  const key = crypto.createHash('sha1').update(content).digest('hex');
  let file = rawFiles.get(key);
  if (!file) {
    rawDir ??= tmpDir('cowchain-want-');
    file = path.join(rawDir, `${key}.raw`);
    fs.writeFileSync(file, content);
    rawFiles.set(key, file);
  }
  return file;
}

/** The file starts with qcow2's magic, QFI\xfb. */
function isQcow2(file: string): boolean {
  const fd = fs.openSync(file, 'r');
  try {
    const magic = Buffer.alloc(4);
    return fs.readSync(fd, magic, 0, 4, 0) === 4 && magic.equals(Buffer.from([0x51, 0x46, 0x49, 0xfb]));
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * An engine read as a Buffer without copying it: Buffer.from(u8) copies, and on a VM where a page
 * fault costs ~11 µs a fresh 4 MiB copy costs ~12 ms (the crash tests read hundreds of them).
 */
export function asBuffer(u8: Uint8Array): Buffer {
  return Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
}

export class VolumeFixture {
  readonly driver: VolumeDriver;
  /** Set: the volume is encrypted with this key (the driver gets it through `encryption`). */
  readonly key: FixtureKey | undefined;
  /** Content of the volume when each snapshot was taken (by snapshot id). */
  readonly recorded = new Map<string, Buffer>();
  private seed: number;

  constructor(
    readonly dir: string,
    readonly size = 4 * MiB,
    options: Partial<VolumeDriverOptions> = {},
    readonly vol = VOL,
    key?: FixtureKey,
  ) {
    this.key = key;
    // PBKDF2 kept short (10 ms): unlocking every image must not dominate the run.
    const encryption = key && { keySecret: (id: string) => (id === vol ? key.secret : undefined), iterTimeMs: 10 };
    // Engine jobs in worker threads, as a service runs them (pass `jobs: undefined` for in-process).
    this.driver = new VolumeDriver({ dir, jobs: defaultEnginePool(), ...(encryption ? { encryption } : {}), ...options });
    this.seed = 7;
  }

  /**
   * A copy of this volume in the new directory `dir` — its files, what each snapshot held, where
   * the next write goes — driven by a driver made with `options`: a test that starts from a seeded
   * volume copies one seeded once rather than seeding its own.
   */
  copyTo(dir: string, options: Partial<VolumeDriverOptions> = {}): VolumeFixture {
    fs.cpSync(this.dir, dir, { recursive: true });
    const copy = new VolumeFixture(dir, this.size, options, this.vol, this.key);
    for (const [id, content] of this.recorded) copy.recorded.set(id, content);
    copy.seed = this.seed;
    return copy;
  }

  /** openImage's keySecrets for this volume's images (none unless encrypted). */
  private get keySecrets(): KeySecrets | undefined {
    const secret = this.key?.secret;
    return secret && (() => secret);
  }

  /** qemu-img's way to `file` (with its chain of `depth` images): the plain name, or the secret and --image-opts. */
  qemuTarget(file: string, depth: number): string[] {
    return this.key ? ['--object', `secret,id=sec0,file=${this.key.file}`, '--image-opts', keyedImageOpts(file, depth)] : [file];
  }

  /** How many images `file`'s chain has (qemu opens them all: each needs its key). */
  depthOf(file: string): number {
    const img = openImage(file);
    try {
      return img.chain().length;
    } finally {
      img.close();
    }
  }

  /**
   * qemu reads `want` through `file`'s chain (with the secret when encrypted): qemu-img compare
   * against `want` written once as a raw file, where converting the chain to raw and reading it
   * back would write and read the volume's size on every check.
   */
  expectQemuReads(file: string, want: Buffer, label: string): void {
    const raw = rawFileOf(want);
    const args = this.key
      ? ['compare', ...this.qemuTarget(file, this.depthOf(file)), `driver=raw,file.filename=${raw}`]
      : ['compare', '-F', 'raw', file, raw];
    const r = qemuImg(args, { ok: [0, 1] });
    const out = (r.stdout + r.stderr).trim();
    expect(r.status === 0 && !/size mismatch/i.test(out) ? '' : `${label}: qemu-img compare: ${out}`, label).toBe('');
  }

  /** The guest view of `file`'s chain as qemu-img convert reads it (with the secret when encrypted). */
  qemuGuest(file: string): Buffer {
    if (!this.key) return qemuRaw(file, this.dir);
    const depth = this.depthOf(file);
    const out = path.join(this.dir, `qemu-raw-${Math.random().toString(36).slice(2)}.raw`);
    qemuImg(['convert', ...this.qemuTarget(file, depth), '-O', 'raw', out]);
    const data = fs.readFileSync(out);
    fs.rmSync(out);
    return data;
  }

  get base(): string {
    return `volume-${this.vol}`;
  }

  p(name: string): string {
    return path.join(this.dir, name);
  }

  infoFile(): string {
    return this.p(`${this.base}.info`);
  }

  info(): VolumeInfo | null {
    return fs.existsSync(this.infoFile()) ? (JSON.parse(fs.readFileSync(this.infoFile(), 'utf8')) as VolumeInfo) : null;
  }

  active(): string {
    return this.info()?.active ?? this.base;
  }

  /** Write `count` distinct pseudo-random patterns (unaligned offsets and lengths) into the active file, through our engine. */
  write(count = 6): void {
    const r = rng(this.seed++);
    const img = openImage(this.p(this.active()), { writable: true, keySecrets: this.keySecrets });
    try {
      for (let i = 0; i < count; i++) {
        const len = 1 + Math.floor(r() * 200_000);
        const off = Math.floor(r() * (img.virtualSize - len));
        const data = Buffer.alloc(len);
        for (let j = 0; j < len; j++) data[j] = 1 + Math.floor(r() * 255);
        img.write(off, data);
      }
    } finally {
      img.close();
    }
  }

  /** The volume's current guest view (the active chain), through our engine. */
  content(): Buffer {
    const img = openImage(this.p(this.active()), { keySecrets: this.keySecrets });
    try {
      return asBuffer(img.read(0, img.virtualSize));
    } finally {
      img.close();
    }
  }

  async createVolume(format: 'raw' | 'qcow2' = 'raw'): Promise<void> {
    await this.driver.createVolume(this.vol, this.size, this.key ? { encrypted: true } : { format });
  }

  /** Take snapshot `s` and record what the volume holds at this point. */
  async snap(s: SnapName | string, status: VolumeStatus = 'available'): Promise<void> {
    const id = s in SNAP ? SNAP[s as SnapName] : s;
    const before = this.content();
    await this.driver.createSnapshot(this.vol, id, { status });
    this.recorded.set(id, before);
  }

  /**
   * The seed's chain, volume <- .aaaa <- .bbbb, with data written before, between and after the
   * two snapshots (`writes` patterns each time).
   */
  async seedSnapshots(options: { format?: 'raw' | 'qcow2'; status?: VolumeStatus; writes?: number } = {}): Promise<this> {
    await this.createVolume(options.format);
    this.write(options.writes);
    await this.snap('aaaa', options.status);
    this.write(options.writes);
    await this.snap('bbbb', options.status);
    this.write(options.writes);
    return this;
  }

  async del(s: SnapName | string, status: VolumeStatus = 'available') {
    const id = s in SNAP ? SNAP[s as SnapName] : s;
    const r = await this.driver.deleteSnapshot(this.vol, id, { status });
    this.recorded.delete(id);
    return r;
  }

  /** The chain from the active file down, as [name, backing name as stored] pairs read by qemu-img. */
  qemuChain(): [string, string | null][] {
    const infos = JSON.parse(qemuImg(['info', '--output=json', '--backing-chain', this.p(this.active())]).stdout) as any[];
    return infos.map((i) => [path.basename(i.filename), i['backing-filename'] ?? null]);
  }

  /** The same, read by our engine's headers. */
  engineChain(): [string, string | null][] {
    const img = openImage(this.p(this.active()));
    try {
      const out: [string, string | null][] = [];
      let name = this.active();
      for (const layer of img.chain()) {
        const b = layer.headerInfo().backingFile ?? null;
        out.push([name, b]);
        if (b) name = b;
      }
      return out;
    } finally {
      img.close();
    }
  }

  /** Assert the chain, top first: `volume-1234 <- .aaaa <- .bbbb` is `[.bbbb, .aaaa, volume-1234]`. */
  expectChain(topFirst: string[]): void {
    const want = topFirst.map((n, i) => [n, topFirst[i + 1] ?? null]);
    expect(this.engineChain(), 'chain read by our engine').toEqual(want);
    expect(this.qemuChain(), 'chain read by qemu-img').toEqual(want);
  }

  /** Assert the info file's exact bytes (null: no info file). */
  expectInfo(info: VolumeInfo | null): void {
    if (info === null) {
      expect(fs.existsSync(this.infoFile()), 'no info file').toBe(false);
      return;
    }
    expect(fs.readFileSync(this.infoFile(), 'utf8')).toBe(serializeInfo(info));
  }

  /** The content of snapshot `id`: its file's backing chain flattened, by our engine and (unless `qemu` is false) by qemu-img. */
  /** The file whose chain holds snapshot `id`'s content: the backing file of the file the info file names. */
  snapshotFile(id: string): string {
    const file = this.info()![id];
    const backing = openImage(this.p(file), { noBacking: true });
    try {
      return backing.headerInfo().backingFile!;
    } finally {
      backing.close();
    }
  }

  snapshotContent(id: string, qemu = true): { engine: Buffer; qemu: Buffer | null } {
    const name = this.snapshotFile(id);
    const img = openImage(this.p(name), { keySecrets: this.keySecrets });
    let engine: Buffer;
    try {
      engine = asBuffer(img.read(0, img.virtualSize));
    } finally {
      img.close();
    }
    return { engine, qemu: qemu ? this.qemuGuest(this.p(name)) : null };
  }

  /** Every recorded snapshot still in the info file reads exactly as when it was taken (ours, and qemu's unless `qemu` is false). */
  expectSnapshotsIntact(qemu = true): void {
    const info = this.info() ?? { active: this.base };
    const ids = Object.keys(info).filter((k) => k !== 'active');
    expect(ids.sort()).toEqual([...this.recorded.keys()].sort());
    for (const id of ids) {
      const want = this.recorded.get(id)!;
      const got = this.snapshotContent(id, false);
      expectSameBytes(got.engine, want, `snapshot ${id} (our engine)`);
      if (qemu) this.expectQemuReads(this.p(this.snapshotFile(id)), want, `snapshot ${id} (qemu-img compare)`);
    }
  }

  /** The volume reads `want` through its active file (ours and qemu's). */
  expectContent(want: Buffer): void {
    expectSameBytes(this.content(), want, 'volume content (our engine)');
    this.expectQemuReads(this.p(this.active()), want, 'volume content (qemu-img compare)');
  }

  /**
   * The volume's files in the directory (chain files, info, anything else), but not the format
   * record `volume-<vol>.format` nor the share's `.cinderSecureEnvIndicator`: each is written once
   * (by createVolume / the first file created on a new share) and never changes afterwards
   * (test/volume/format.test.ts and file-modes.test.ts check them).
   */
  listing(): string[] {
    return fs.readdirSync(this.dir).filter((n) => n !== `${this.base}.format` && n !== '.cinderSecureEnvIndicator').sort();
  }

  /** qemu-img check reports no error and no leak on every qcow2 file of the volume (given the secret, when encrypted). */
  expectAllClean(): void {
    for (const n of this.listing()) {
      if (!n.startsWith(this.base) || n.endsWith('.info')) continue;
      // qcow2 by its magic (a raw file has nothing to check).
      if (!isQcow2(this.p(n))) continue;
      if (this.key) {
        // One process says both: driver=qcow2 with encrypt.format=luks opens only a qcow2 whose
        // header says LUKS ("No encryption in image header, but options specified format 'luks'"),
        // where qemu-img info and then check took two.
        const r = qemuImg(['check', '--object', `secret,id=sec0,file=${this.key.file}`, '--image-opts', `${keyedImageOpts(this.p(n), this.depthOf(this.p(n)))},encrypt.format=luks`], { ok: [0, 1, 2, 3] });
        expect({ file: n, status: r.status, out: r.stdout + r.stderr }, `${n}: an encrypted qcow2, clean`).toMatchObject({ file: n, status: 0 });
        continue;
      }
      const { status, result } = qemuCheck(this.p(n));
      expect({ file: n, status, result }).toMatchObject({ file: n, status: 0 });
    }
  }
}
