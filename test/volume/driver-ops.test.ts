// The other volume operations on chains (docs/volume-semantics.md, "Other operations"): create, from snapshot, clone,
// extend, revert, delete volume, attach/info; stale and unknown snapshots; statuses.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { openImage } from '../../src/image/open-chain.js';
import { createImage } from '../../src/image/create.js';
import { VolumeDriver } from '../../src/volume/driver.js';
import { rejection } from '../support/errors.js';
import { FakeHypervisor } from '../support/fake-hypervisor.js';
import { expectSameBytes } from '../support/images.js';
import { qemuInfo, qemuRaw, requireQemu, tmpDir } from '../support/qemu.js';
import { BASE, MiB, OTHER_VOL, SNAP, VOL, VolumeFixture, f, infoOf } from '../support/volume.js';

requireQemu();

/** volume-1234 <- .aaaa <- .bbbb with writes before, between and after: seeded once, copied per test. */
let seeded: Promise<VolumeFixture> | undefined;
async function twoSnapshots(options: ConstructorParameters<typeof VolumeFixture>[2] = {}, dir = tmpDir('cowchain-ops-')) {
  const template = await (seeded ??= new VolumeFixture(tmpDir('cowchain-ops-seed-'), 4 * MiB).seedSnapshots());
  return template.copyTo(dir, options);
}

describe('create volume', () => {
  for (const format of ['raw', 'qcow2'] as const) {
    it(`creates a ${format} base of the size, reading as zeros, and no info file`, async () => {
      const dir = tmpDir('cowchain-ops-');
      const d = new VolumeDriver({ dir });
      expect(await d.createVolume(VOL, 3 * MiB, { format })).toEqual({ file: BASE, format, size: 3 * MiB });
      expect(fs.readdirSync(dir).sort()).toEqual(['.cinderSecureEnvIndicator', BASE, `${BASE}.format`]);
      const q = qemuInfo(path.join(dir, BASE));
      expect([q.format, q['virtual-size']]).toEqual([format, 3 * MiB]);
      expect(qemuRaw(path.join(dir, BASE), dir).equals(Buffer.alloc(3 * MiB))).toBe(true);
      expect(await d.volumeInfo(VOL)).toEqual({
        volumeId: VOL,
        active: BASE,
        snapshots: {},
        chain: [{ name: BASE, format, virtualSize: 3 * MiB, backing: null, backingFormat: null }],
        infoFile: false,
        pending: null,
      });
      expect(await d.attachInfo(VOL)).toEqual({ volumeId: VOL, activeFile: BASE, format });
      expect((await rejection(d.createVolume(VOL, MiB))).code).toBe('ECOW_EXISTS');
    });
  }

  it('refuses sizes that are not whole sectors, and ids that are not uuids', async () => {
    const d = new VolumeDriver({ dir: tmpDir('cowchain-ops-') });
    expect((await rejection(d.createVolume(VOL, 1000))).message).toMatch(/multiple of 512/);
    expect((await rejection(d.createVolume('../etc', MiB))).code).toBe('ECOW_BAD_ARGUMENT');
  });
});

describe('snapshot create', () => {
  it('records the overlay with a bare relative backing name and the backing format', async () => {
    const v = await twoSnapshots();
    const q = qemuInfo(v.p(f('bbbb')));
    expect([q['backing-filename'], q['backing-filename-format'], q['virtual-size']]).toEqual([f('aaaa'), 'qcow2', 4 * MiB]);
    expect(qemuInfo(v.p(f('aaaa')))['backing-filename-format']).toBe('raw');
    expect((await v.driver.volumeInfo(VOL)).chain.map((l) => [l.name, l.format, l.backing, l.backingFormat])).toEqual([
      [f('bbbb'), 'qcow2', f('aaaa'), 'qcow2'],
      [f('aaaa'), 'qcow2', BASE, 'raw'],
      [BASE, 'raw', null, null],
    ]);
  });

  it('refuses an existing id, a smaller size, unknown or wrong statuses — changing nothing', async () => {
    const v = await twoSnapshots();
    const before = { listing: v.listing(), info: fs.readFileSync(v.infoFile()) };
    expect((await rejection(v.driver.createSnapshot(VOL, SNAP.aaaa, { status: 'available' }))).code).toBe('ECOW_EXISTS');
    expect((await rejection(v.driver.createSnapshot(VOL, SNAP.cccc, { status: 'available', size: MiB }))).code).toBe('ECOW_BAD_ARGUMENT');
    expect((await rejection(v.driver.createSnapshot(VOL, SNAP.cccc, { status: 'error' }))).code).toBe('ECOW_INVALID_STATE');
    expect((await rejection(v.driver.createSnapshot(VOL, SNAP.cccc, { status: 'bogus' as never }))).code).toBe('ECOW_BAD_ARGUMENT');
    expect((await rejection(v.driver.createSnapshot(VOL, 'not-a-uuid', { status: 'available' }))).code).toBe('ECOW_BAD_ARGUMENT');
    expect(v.listing()).toEqual(before.listing);
    expect(fs.readFileSync(v.infoFile()).equals(before.info)).toBe(true);
  });

  it('takes a larger size for the overlay when asked', async () => {
    const v = await twoSnapshots();
    await v.driver.createSnapshot(VOL, SNAP.cccc, { status: 'available', size: 6 * MiB });
    expect(qemuInfo(v.p(f('cccc')))['virtual-size']).toBe(6 * MiB);
  });
});

describe('snapshot delete: unknown and stale entries', () => {
  it('an unknown id is success and changes nothing', async () => {
    const v = await twoSnapshots();
    const before = { listing: v.listing(), info: fs.readFileSync(v.infoFile()) };
    expect(await v.driver.deleteSnapshot(VOL, SNAP.dddd, { status: 'available' })).toMatchObject({ outcome: 'not-found', removed: [] });
    expect(v.listing()).toEqual(before.listing);
    expect(fs.readFileSync(v.infoFile()).equals(before.info)).toBe(true);
    // and on a volume without an info file
    const d = new VolumeDriver({ dir: tmpDir('cowchain-ops-') });
    await d.createVolume(VOL, MiB);
    expect(await d.deleteSnapshot(VOL, SNAP.aaaa, { status: 'available' })).toMatchObject({ outcome: 'not-found' });
  });

  it('an entry whose file has no backing file is dropped; the file stays when the chain uses it', async () => {
    const v = await twoSnapshots();
    // A stale entry naming the base (no backing file, bottom of the live chain).
    const info = { ...v.info()!, [SNAP.cccc]: BASE };
    fs.writeFileSync(v.infoFile(), JSON.stringify(info));
    expect(await v.driver.deleteSnapshot(VOL, SNAP.cccc, { status: 'available' })).toMatchObject({ outcome: 'stale', removed: [] });
    v.expectInfo(infoOf(f('bbbb'), { aaaa: f('aaaa'), bbbb: f('bbbb') }));
    v.expectChain([f('bbbb'), f('aaaa'), BASE]);
  });

  it('a stale entry whose file nothing uses: dropped and the file removed', async () => {
    const v = await twoSnapshots();
    createImage(v.p(f('dddd')), { format: 'qcow2', size: MiB });
    fs.writeFileSync(v.infoFile(), JSON.stringify({ ...v.info()!, [SNAP.dddd]: f('dddd') }));
    expect(await v.driver.deleteSnapshot(VOL, SNAP.dddd, { status: 'available' })).toMatchObject({ outcome: 'stale', removed: [f('dddd')] });
    v.expectInfo(infoOf(f('bbbb'), { aaaa: f('aaaa'), bbbb: f('bbbb') }));
    expect(fs.existsSync(v.p(f('dddd')))).toBe(false);
    v.expectSnapshotsIntact();
  });

  it('an entry whose file is already gone is dropped when the chain is whole', async () => {
    const v = await twoSnapshots();
    fs.writeFileSync(v.infoFile(), JSON.stringify({ ...v.info()!, [SNAP.dddd]: f('dddd') }));
    expect(await v.driver.deleteSnapshot(VOL, SNAP.dddd, { status: 'available' })).toMatchObject({ outcome: 'stale' });
    v.expectInfo(infoOf(f('bbbb'), { aaaa: f('aaaa'), bbbb: f('bbbb') }));
  });
});

describe('Cinder interoperability', () => {
  const hasPython = spawnSync('python3', ['-c', 'import json'], { stdio: 'ignore' }).status === 0;
  it('reads an info file Python wrote and writes back the bytes Python writes', async () => {
    expect(hasPython, 'python3 is needed to play Cinder').toBe(true);
    const v = await twoSnapshots();
    const py = (info: object, file: string) =>
      spawnSync('python3', ['-c', `import json,sys\nwith open(sys.argv[1],'w') as f: json.dump(json.loads(sys.argv[2]), f, indent=1, sort_keys=True)`, file, JSON.stringify(info)]);
    py(v.info()!, v.infoFile());
    await v.del('aaaa');
    const expected = path.join(v.dir, 'expected');
    py(infoOf(f('bbbb'), { bbbb: f('bbbb') }), expected);
    expect(fs.readFileSync(v.infoFile()).equals(fs.readFileSync(expected))).toBe(true);
  });
});

describe('create volume from snapshot', () => {
  for (const format of ['raw', 'qcow2'] as const) {
    it(`flattens the snapshot's chain into a new ${format} image (default size, larger size)`, async () => {
      const v = await twoSnapshots();
      for (const s of ['aaaa', 'bbbb'] as const) {
        const out = v.p(`volume-${OTHER_VOL}`);
        expect(await v.driver.createVolumeFromSnapshot(VOL, SNAP[s], out, { format })).toEqual({ file: out, format, size: 4 * MiB });
        expect(qemuInfo(out).format).toBe(format);
        expectSameBytes(qemuRaw(out, v.dir), v.recorded.get(SNAP[s])!, `${s} as a new volume`);
        fs.rmSync(out);
      }
      const out = v.p('bigger');
      await v.driver.createVolumeFromSnapshot(VOL, SNAP.aaaa, out, { format, size: 6 * MiB });
      const got = qemuRaw(out, v.dir);
      expect(got.length).toBe(6 * MiB);
      expectSameBytes(got.subarray(0, 4 * MiB), v.recorded.get(SNAP.aaaa)!, 'aaaa, larger volume');
      expect(got.subarray(4 * MiB).equals(Buffer.alloc(2 * MiB))).toBe(true);
    });
  }

  it('refuses a smaller size, an unknown snapshot, an existing target — leaving no file behind', async () => {
    const v = await twoSnapshots();
    const before = v.listing();
    expect((await rejection(v.driver.createVolumeFromSnapshot(VOL, SNAP.aaaa, v.p('x'), { size: MiB }))).code).toBe('ECOW_BAD_ARGUMENT');
    expect((await rejection(v.driver.createVolumeFromSnapshot(VOL, SNAP.dddd, v.p('x')))).code).toBe('ECOW_NOT_FOUND');
    fs.writeFileSync(v.p('taken'), 'keep');
    expect((await rejection(v.driver.createVolumeFromSnapshot(VOL, SNAP.aaaa, v.p('taken')))).code).toBe('ECOW_EXISTS');
    expect(fs.readFileSync(v.p('taken'), 'utf8')).toBe('keep');
    expect(v.listing()).toEqual([...before, 'taken'].sort());
  });
});

describe('clone', () => {
  it('detached: the new volume holds the current content; the source is as it was', async () => {
    const v = await twoSnapshots();
    const now = v.content();
    const info = fs.readFileSync(v.infoFile());
    const r = await v.driver.cloneVolume(VOL, OTHER_VOL, { status: 'available' });
    expect(r).toEqual({ file: v.p(`volume-${OTHER_VOL}`), format: 'raw', size: 4 * MiB, volumeId: OTHER_VOL });
    expectSameBytes(qemuRaw(r.file, v.dir), now, 'clone');
    expect(fs.readFileSync(v.infoFile()).equals(info)).toBe(true);
    v.expectChain([f('bbbb'), f('aaaa'), BASE]);
    expect(v.listing()).toEqual([BASE, f('aaaa'), f('bbbb'), `${BASE}.info`, `volume-${OTHER_VOL}`, `volume-${OTHER_VOL}.format`].sort());
    v.expectSnapshotsIntact();
    v.expectAllClean();
    // The clone is a volume of its own.
    expect(await v.driver.attachInfo(OTHER_VOL)).toEqual({ volumeId: OTHER_VOL, activeFile: `volume-${OTHER_VOL}`, format: 'raw' });
  });

  it('attached: the temporary snapshot goes through the hypervisor (create, then pull), as Cinder does', async () => {
    const dir = tmpDir('cowchain-ops-');
    const hv = new FakeHypervisor(dir);
    const v = await twoSnapshots({ hypervisor: hv }, dir);
    const now = v.content();
    const r = await v.driver.cloneVolume(VOL, OTHER_VOL, { status: 'in-use', format: 'qcow2', targetDir: tmpDir('cowchain-ops-target-') });
    expectSameBytes(qemuRaw(r.file, v.dir), now, 'clone');
    expect(hv.calls.map((c) => c.op)).toEqual(['create', 'delete']);
    const tmp = (hv.calls[0] as { snapshotId: string }).snapshotId;
    expect(tmp).toMatch(/^tmp-snap-[0-9a-f-]{36}$/);
    // Deleting the active temporary snapshot while attached pulls .bbbb into it: the
    // temporary file becomes the active file and bbbb maps to it.
    const tmpFile = `${BASE}.${tmp}`;
    v.expectInfo(infoOf(tmpFile, { aaaa: f('aaaa'), bbbb: tmpFile }));
    v.expectChain([tmpFile, f('aaaa'), BASE]);
    v.expectSnapshotsIntact();
    v.expectContent(now);
  });

  it('refuses to clone onto itself or onto an existing volume, and leaves no temporary snapshot', async () => {
    const v = await twoSnapshots();
    expect((await rejection(v.driver.cloneVolume(VOL, VOL, { status: 'available' }))).code).toBe('ECOW_BAD_ARGUMENT');
    fs.writeFileSync(v.p(`volume-${OTHER_VOL}`), 'keep');
    const info = fs.readFileSync(v.infoFile());
    expect((await rejection(v.driver.cloneVolume(VOL, OTHER_VOL, { status: 'available' }))).code).toBe('ECOW_EXISTS');
    expect(fs.readFileSync(v.infoFile()).equals(info)).toBe(true);
    expect(v.listing().filter((n) => n.includes('tmp-snap'))).toEqual([]);
  });
});

describe('extend', () => {
  it('grows the active overlay only; snapshots keep their size and content; new space reads as zeros', async () => {
    const v = await twoSnapshots();
    const now = v.content();
    expect(await v.driver.extendVolume(VOL, 6 * MiB, { status: 'available' })).toEqual({ file: f('bbbb'), size: 6 * MiB });
    expect(qemuInfo(v.p(f('bbbb')))['virtual-size']).toBe(6 * MiB);
    expect(qemuInfo(v.p(f('aaaa')))['virtual-size']).toBe(4 * MiB);
    const got = qemuRaw(v.p(f('bbbb')), v.dir);
    expectSameBytes(got.subarray(0, 4 * MiB), now, 'extended volume');
    expect(got.subarray(4 * MiB).equals(Buffer.alloc(2 * MiB))).toBe(true);
    v.expectSnapshotsIntact();
    // Writes past the old end survive deleting the snapshots (commit grows the base).
    v.write();
    const after = v.content();
    await v.del('aaaa');
    await v.del('bbbb');
    v.expectContent(after);
    expect(qemuInfo(v.p(BASE))['virtual-size']).toBe(6 * MiB);
    v.expectAllClean();
  });

  it('grows a volume without snapshots (raw and qcow2)', async () => {
    for (const format of ['raw', 'qcow2'] as const) {
      const dir = tmpDir('cowchain-ops-');
      const d = new VolumeDriver({ dir });
      await d.createVolume(VOL, MiB, { format });
      await d.extendVolume(VOL, 8 * MiB, { status: 'extending' });
      expect(qemuInfo(path.join(dir, BASE))['virtual-size']).toBe(8 * MiB);
    }
  });

  it('is refused while attached, when shrinking, and for partial sectors', async () => {
    const v = await twoSnapshots();
    expect((await rejection(v.driver.extendVolume(VOL, 8 * MiB, { status: 'in-use' }))).code).toBe('ECOW_INVALID_STATE');
    expect((await rejection(v.driver.extendVolume(VOL, 2 * MiB, { status: 'available' }))).code).toBe('ECOW_BAD_ARGUMENT');
    expect((await rejection(v.driver.extendVolume(VOL, 8 * MiB + 1, { status: 'available' }))).message).toMatch(/multiple of 512/);
    expect(qemuInfo(v.p(f('bbbb')))['virtual-size']).toBe(4 * MiB);
  });
});

describe('revert to snapshot', () => {
  it('the latest snapshot: its file becomes a fresh empty overlay on the same backing file', async () => {
    const v = await twoSnapshots();
    const info = fs.readFileSync(v.infoFile());
    await v.driver.revertToSnapshot(VOL, SNAP.bbbb, { status: 'available' });
    v.expectContent(v.recorded.get(SNAP.bbbb)!);
    expect(fs.readFileSync(v.infoFile()).equals(info)).toBe(true);
    v.expectChain([f('bbbb'), f('aaaa'), BASE]);
    expect(qemuInfo(v.p(f('bbbb')))['backing-filename-format']).toBe('qcow2');
    v.expectSnapshotsIntact();
    expect(v.listing()).toEqual([BASE, f('aaaa'), f('bbbb'), `${BASE}.info`].sort());
  });

  it('refuses any other snapshot, an unknown one, and an attached volume', async () => {
    const v = await twoSnapshots();
    const now = v.content();
    expect((await rejection(v.driver.revertToSnapshot(VOL, SNAP.aaaa, { status: 'available' }))).code).toBe('ECOW_INVALID_STATE');
    expect((await rejection(v.driver.revertToSnapshot(VOL, SNAP.dddd, { status: 'available' }))).code).toBe('ECOW_NOT_FOUND');
    expect((await rejection(v.driver.revertToSnapshot(VOL, SNAP.bbbb, { status: 'in-use' }))).code).toBe('ECOW_INVALID_STATE');
    v.expectContent(now);
  });
});

describe('delete volume', () => {
  it('removes every file of the chain, the info file, a journal and temp files — nothing of another volume', async () => {
    const v = await twoSnapshots();
    const other = new VolumeDriver({ dir: v.dir });
    await other.createVolume(OTHER_VOL, MiB);
    fs.writeFileSync(v.p(`${BASE}.journal`), '{}');
    fs.writeFileSync(v.p(`.${BASE}.info.tmp-0123`), '');
    const r = await v.driver.deleteVolume(VOL);
    expect(r.removed.sort()).toEqual([BASE, f('aaaa'), f('bbbb'), `${BASE}.format`, `${BASE}.info`, `${BASE}.journal`, `.${BASE}.info.tmp-0123`].sort());
    expect(fs.readdirSync(v.dir).sort()).toEqual(['.cinderSecureEnvIndicator', `volume-${OTHER_VOL}`, `volume-${OTHER_VOL}.format`]);
    expect(await v.driver.deleteVolume(VOL)).toEqual({ removed: [] });
  });
});

describe('attach info', () => {
  it('hands out the active file and its format', async () => {
    const v = await twoSnapshots();
    expect(await v.driver.attachInfo(VOL)).toEqual({ volumeId: VOL, activeFile: f('bbbb'), format: 'qcow2' });
    const img = openImage(v.p(f('bbbb')));
    expect(img.format).toBe('qcow2');
    img.close();
  });

  it('a missing volume is ECOW_NOT_FOUND', async () => {
    const d = new VolumeDriver({ dir: tmpDir('cowchain-ops-') });
    expect((await rejection(d.attachInfo(VOL))).code).toBe('ECOW_NOT_FOUND');
  });
});

describe('one volume, one operation at a time', () => {
  it('every operation takes the volume lock (ECOW_LOCKED while another holder has it)', async () => {
    const { withVolumeLock } = await import('../../src/volume/lock.js');
    const v = await twoSnapshots({ lock: { acquireTimeoutMs: 200 } });
    const d = v.driver;
    await withVolumeLock(v.dir, VOL, async () => {
      const ops: [string, Promise<unknown>][] = [
        ['createSnapshot', d.createSnapshot(VOL, SNAP.cccc, { status: 'available' })],
        ['deleteSnapshot', d.deleteSnapshot(VOL, SNAP.aaaa, { status: 'available' })],
        ['volumeInfo', d.volumeInfo(VOL)],
        ['attachInfo', d.attachInfo(VOL)],
        ['extendVolume', d.extendVolume(VOL, 8 * MiB, { status: 'available' })],
        ['revertToSnapshot', d.revertToSnapshot(VOL, SNAP.bbbb, { status: 'available' })],
        ['createVolumeFromSnapshot', d.createVolumeFromSnapshot(VOL, SNAP.aaaa, v.p('x'))],
        ['cloneVolume', d.cloneVolume(VOL, OTHER_VOL, { status: 'available' })],
        ['deleteVolume', d.deleteVolume(VOL)],
        ['fsck', d.fsck(VOL)],
      ];
      // Every promise gets its handler now: awaiting them one by one would leave later rejections
      // unhandled for a moment (all ten give up after the same 200 ms).
      const outcomes = ops.map(([name, p]) => [name, rejection(p)] as const);
      for (const [name, r] of outcomes) expect(`${name}: ${(await r).code}`).toBe(`${name}: ECOW_LOCKED`);
    });
    v.expectSnapshotsIntact();
  });

  it('concurrent creates and deletes on one volume serialise into a consistent chain', async () => {
    const v = await twoSnapshots();
    const now = v.content();
    await Promise.all([
      v.driver.createSnapshot(VOL, SNAP.cccc, { status: 'available' }),
      v.driver.deleteSnapshot(VOL, SNAP.aaaa, { status: 'available' }),
      v.driver.createSnapshot(VOL, SNAP.dddd, { status: 'available' }),
      v.driver.deleteSnapshot(VOL, SNAP.bbbb, { status: 'available' }),
    ]);
    const info = v.info()!;
    expect(Object.keys(info).sort()).toEqual(['active', SNAP.cccc, SNAP.dddd].sort());
    v.expectContent(now);
    for (const s of [SNAP.cccc, SNAP.dddd]) expectSameBytes(v.snapshotContent(s).engine, now, `snapshot ${s}`);
    const chain = v.engineChain().map(([n]) => n);
    expect(v.listing()).toEqual([...chain, `${BASE}.info`].sort());
  });
});
