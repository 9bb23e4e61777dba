// Backing names are untrusted (a guest or a forged upload controls header bytes): every name is
// checked before anything is opened — this volume's names only, no '/', no '..', inside the
// directory after symlinks, no loops, bounded depth. Each hostile chain is refused by every
// operation with its code, and no file outside the volume directory is ever opened.
import * as fs from 'node:fs';
import nodeFs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { openImage } from '../../src/image/open-chain.js';
import { FileBackend } from '../../src/engine/backend.js';
import { type CowErrorCode } from '../../src/errors.js';
import { createQcow2On } from '../../src/image/create.js';
import { rebaseImage } from '../../src/image/rebase.js';
import { VolumeDriver } from '../../src/volume/driver.js';
import { rejectionCode } from '../support/errors.js';
import { MAX_CHAIN_DEPTH } from '../../src/volume/volume-files.js';
import { requireQemu, tmpDir } from '../support/qemu.js';
import { BASE, MiB, OTHER_VOL, SNAP, VOL, VolumeFixture, f, stackOverlays } from '../support/volume.js';

// Every file the code under test opens through node:fs (FileBackend, createImage, …): openSync
// is wrapped and the ESM bindings resynced (syncBuiltinESMExports), so modules loaded before
// this file — by a vitest setup file — see the wrapper too (a vi.mock of node:fs would not).
const opened: string[] = [];
const realOpenSync = fs.openSync;
beforeAll(() => {
  nodeFs.openSync = ((p: fs.PathLike, ...rest: unknown[]) => {
    opened.push(String(p));
    return (realOpenSync as (...a: unknown[]) => number)(p, ...rest);
  }) as typeof fs.openSync;
  syncBuiltinESMExports();
});
afterAll(() => {
  nodeFs.openSync = realOpenSync;
  syncBuiltinESMExports();
});

requireQemu();

let root: string;
let outside: string;
beforeEach(() => {
  root = tmpDir('cowchain-hostile-');
  outside = path.join(root, 'outside');
  fs.mkdirSync(outside);
  // A perfectly valid image outside the volume directory, named like one of ours.
  const b = new FileBackend(path.join(outside, BASE), true, true);
  createQcow2On(b, { format: 'qcow2', size: MiB });
  b.close();
  opened.length = 0;
});
afterEach(() => {
  const real = fs.realpathSync(outside);
  const leaked = opened.filter((p) => p.startsWith(outside) || p.startsWith(real) || p.startsWith('/etc'));
  expect(leaked, 'files opened outside the volume directory').toEqual([]);
});

/** volume-1234 <- .aaaa (active) in root/share, then `forge` on it; returns the fixture. */
async function volumeWith(forge: (v: VolumeFixture) => void): Promise<VolumeFixture> {
  const dir = path.join(root, 'share');
  fs.mkdirSync(dir);
  const v = new VolumeFixture(dir, MiB);
  await v.createVolume('qcow2');
  v.write(2);
  await v.snap('aaaa');
  forge(v);
  opened.length = 0;
  return v;
}

/** Forge the backing name of `file` (header only). */
function setBacking(v: VolumeFixture, file: string, name: string): void {
  rebaseImage(v.p(file), name, { unsafe: true, backingFormat: 'qcow2' });
}

/** Every operation that reads the chain refuses with `code`; the files stay as they were. */
async function expectRefused(v: VolumeFixture, code: CowErrorCode): Promise<void> {
  const before = v.listing();
  const d = v.driver;
  expect(await rejectionCode(d.volumeInfo(VOL)), 'volumeInfo').toBe(code);
  expect(await rejectionCode(d.attachInfo(VOL)), 'attachInfo').toBe(code);
  expect(await rejectionCode(d.createSnapshot(VOL, SNAP.bbbb, { status: 'available' })), 'createSnapshot').toBe(code);
  expect(await rejectionCode(d.deleteSnapshot(VOL, SNAP.aaaa, { status: 'available' })), 'deleteSnapshot').toBe(code);
  expect(await rejectionCode(d.createVolumeFromSnapshot(VOL, SNAP.aaaa, v.p('out'))), 'createVolumeFromSnapshot').toBe(code);
  expect(await rejectionCode(d.cloneVolume(VOL, OTHER_VOL, { status: 'available' })), 'cloneVolume').toBe(code);
  expect(await rejectionCode(d.extendVolume(VOL, 2 * MiB, { status: 'available' })), 'extendVolume').toBe(code);
  expect(await rejectionCode(d.revertToSnapshot(VOL, SNAP.aaaa, { status: 'available' })), 'revertToSnapshot').toBe(code);
  const report = await d.fsck(VOL);
  expect(report.problems.join('\n'), 'fsck reports it').toContain(code);
  expect(report.actions, 'fsck repairs nothing it cannot trust').toEqual([]);
  expect(v.listing()).toEqual(before);
}

it('(the open spy sees every image the driver opens)', async () => {
  const v = await volumeWith(() => {});
  await v.driver.volumeInfo(VOL);
  const real = fs.realpathSync(v.dir);
  expect(opened).toEqual(expect.arrayContaining([path.join(real, f('aaaa')), path.join(real, BASE)]));
});

describe('hostile backing names in a header', () => {
  const names: [string, (v: VolumeFixture) => string][] = [
    ['an absolute path', () => '/etc/passwd'],
    ['an absolute path to a valid image', () => path.join(outside, BASE)],
    ["'..' out of the directory", () => `../outside/${BASE}`],
    ['a path with a separator', () => `outside/${BASE}`],
    ["'..' inside a name", () => `${BASE}..`],
    ['another volume’s file', () => `volume-${OTHER_VOL}`],
    ['a name of no volume', () => 'passwd'],
  ];
  for (const [what, name] of names) {
    it(`${what}: ECOW_BACKING_REJECTED`, async () => {
      const v = await volumeWith((v) => {
        // Make the other volume's file exist and be valid: it must be refused by name alone.
        fs.copyFileSync(path.join(outside, BASE), v.p(`volume-${OTHER_VOL}`));
        setBacking(v, f('aaaa'), name(v));
      });
      await expectRefused(v, 'ECOW_BACKING_REJECTED');
    });
  }

  it('a symlink with a valid name that leads out of the directory: ECOW_BACKING_REJECTED', async () => {
    const v = await volumeWith((v) => {
      fs.symlinkSync(path.join(outside, BASE), v.p(f('cccc')));
      setBacking(v, f('aaaa'), f('cccc'));
    });
    await expectRefused(v, 'ECOW_BACKING_REJECTED');
  });

  it('the info file naming a file out of the directory or of another volume', async () => {
    const v = await volumeWith((v) => {
      fs.symlinkSync(path.join(outside, BASE), v.p(f('cccc')));
      fs.writeFileSync(v.infoFile(), JSON.stringify({ active: f('cccc'), [SNAP.aaaa]: f('aaaa') }));
    });
    expect(await rejectionCode(v.driver.attachInfo(VOL))).toBe('ECOW_BACKING_REJECTED');
    fs.writeFileSync(v.infoFile(), JSON.stringify({ active: `volume-${OTHER_VOL}` }));
    expect(await rejectionCode(v.driver.attachInfo(VOL))).toBe('ECOW_BACKING_REJECTED');
    fs.writeFileSync(v.infoFile(), JSON.stringify({ active: '../outside/x' }));
    expect(await rejectionCode(v.driver.attachInfo(VOL))).toBe('ECOW_INFO_INVALID');
  });

  it('a loop: ECOW_CHAIN_LOOP', async () => {
    const v = await volumeWith((v) => {
      setBacking(v, BASE, f('aaaa')); // the qcow2 base now claims .aaaa as its backing file
    });
    await expectRefused(v, 'ECOW_CHAIN_LOOP');
  });

  it('a chain deeper than MAX_CHAIN_DEPTH: ECOW_CHAIN_TOO_DEEP after opening at most MAX_CHAIN_DEPTH images', async () => {
    const dir = path.join(root, 'share');
    fs.mkdirSync(dir);
    const v = new VolumeFixture(dir, MiB);
    await v.createVolume('qcow2');
    // MAX_CHAIN_DEPTH tiny overlays (512-byte clusters), each on the previous one: with the base,
    // one image too many.
    const ids = Array.from({ length: MAX_CHAIN_DEPTH }, (_, i) => `${i.toString(16).padStart(8, '0')}-0000-4000-8000-000000000000`);
    const below = stackOverlays(dir, BASE, ids, MiB);
    const last = ids[MAX_CHAIN_DEPTH - 1];
    fs.writeFileSync(v.infoFile(), JSON.stringify({ active: below, [last]: below }));
    opened.length = 0;
    expect(await rejectionCode(v.driver.attachInfo(VOL))).toBe('ECOW_CHAIN_TOO_DEEP');
    // Images only: the info file is opened too, and the lock's owner record.
    const images = opened.filter((p) => !p.endsWith('.info') && !p.endsWith('.lock/owner'));
    expect(images.length).toBeGreaterThan(0); // the spy sees the driver's opens
    expect(images.length).toBeLessThanOrEqual(MAX_CHAIN_DEPTH);
    expect(await rejectionCode(v.driver.createSnapshot(VOL, SNAP.aaaa, { status: 'available' }))).toBe('ECOW_CHAIN_TOO_DEEP');
    expect(await rejectionCode(v.driver.deleteSnapshot(VOL, last, { status: 'available' }))).toBe('ECOW_CHAIN_TOO_DEEP');
  });
});

describe('a guest that writes a qcow2 header into its raw base', () => {
  it('cannot make the driver follow a backing name: probing the top refuses it, overlays pin the format', async () => {
    const dir = path.join(root, 'share');
    fs.mkdirSync(dir);
    const v = new VolumeFixture(dir, MiB);
    await v.createVolume('raw');
    // The guest writes a complete qcow2 image naming an outside file into sector 0 of its disk.
    const evil = path.join(root, 'evil.qcow2');
    const b = new FileBackend(evil, true, true);
    createQcow2On(b, { format: 'qcow2', size: MiB, backingFile: path.join(outside, BASE), backingFormat: 'qcow2' });
    b.close();
    const img = openImage(v.p(BASE), { writable: true, format: 'raw' });
    img.write(0, fs.readFileSync(evil));
    img.close();
    opened.length = 0;
    // No overlay yet: the base's format was recorded at creation and is never probed.
    expect(await v.driver.attachInfo(VOL)).toEqual({ volumeId: VOL, activeFile: BASE, format: 'raw' });
    // Without the record (a volume made by another tool) nothing is guessed.
    fs.unlinkSync(v.p(`${BASE}.format`));
    expect(await rejectionCode(v.driver.attachInfo(VOL))).toBe('ECOW_FORMAT_UNKNOWN');
    // Probing, asked for, sees qcow2 and refuses its backing name.
    expect(await rejectionCode(new VolumeDriver({ dir, probeFormat: true }).attachInfo(VOL))).toBe('ECOW_BACKING_REJECTED');
    // With an overlay created by the driver (backing format recorded: raw), the base stays raw.
    fs.writeFileSync(v.infoFile(), JSON.stringify({ active: BASE }));
    const overlay = new FileBackend(v.p(f('aaaa')), true, true);
    createQcow2On(overlay, { format: 'qcow2', size: MiB, backingFile: BASE, backingFormat: 'raw' });
    overlay.close();
    fs.writeFileSync(v.infoFile(), JSON.stringify({ active: f('aaaa'), [SNAP.aaaa]: f('aaaa') }));
    expect((await v.driver.volumeInfo(VOL)).chain.map((l) => [l.name, l.format])).toEqual([
      [f('aaaa'), 'qcow2'],
      [BASE, 'raw'],
    ]);
    expect((await v.driver.deleteSnapshot(VOL, SNAP.aaaa, { status: 'available' })).outcome).toBe('deleted');
  });
});
