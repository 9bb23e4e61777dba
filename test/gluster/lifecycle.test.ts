// The seed's lifecycle with the volume directory on the GlusterFS mount (A), as Cinder's
// GlusterFS driver keeps it: offline snapshot create and delete in both orders, raw and qcow2
// base, a volume from a snapshot, a clone, the volume's deletion. After every step: the exact
// info file, the chain (our engine and qemu-img), and every snapshot's content — read through
// mount A and again through mount B, the other "host".
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { VolumeDriver } from '../../src/volume/driver.js';
import { expectSameBytes } from '../support/images.js';
import { qemuImg, qemuRaw, requireQemu } from '../support/qemu.js';
import { BASE, OTHER_VOL, SNAP, VOL, VolumeFixture, f, infoOf } from '../support/volume.js';
import { glusterMounts, sharedDir } from './support.js';

requireQemu();
const m = glusterMounts();
const SIZE = 4 << 20;

/** The volume on mount A, and the same volume seen through mount B (sharing the recordings). */
function volume(label: string): { a: VolumeFixture; b: VolumeFixture } {
  const d = sharedDir(m, label);
  const a = new VolumeFixture(d.a, SIZE);
  const b = new VolumeFixture(d.b, SIZE);
  (b as { recorded: Map<string, Buffer> }).recorded = a.recorded;
  return { a, b };
}

/**
 * Everything the seed's diagrams check, through both mounts: through A with our engine, through
 * B with our engine and qemu-img (info, convert) as the referee.
 */
function expectState(v: { a: VolumeFixture; b: VolumeFixture }, info: Parameters<VolumeFixture['expectInfo']>[0], chain: string[], content: Buffer): void {
  for (const x of [v.a, v.b]) x.expectInfo(info);
  expect(v.a.engineChain(), 'chain through mount A').toEqual(chain.map((n, i) => [n, chain[i + 1] ?? null]));
  v.a.expectSnapshotsIntact(false);
  expectSameBytes(v.a.content(), content, 'volume content through mount A');
  v.b.expectChain(chain);
  v.b.expectSnapshotsIntact();
  v.b.expectContent(content);
}

async function seedVolume(format: 'raw' | 'qcow2') {
  const v = volume(`seed-${format}`);
  await v.a.createVolume(format);
  v.a.write();
  await v.a.snap('aaaa');
  v.a.write(); // w1
  await v.a.snap('bbbb');
  v.a.write(); // w2
  expectState(v, infoOf(f('bbbb'), { aaaa: f('aaaa'), bbbb: f('bbbb') }), [f('bbbb'), f('aaaa'), BASE], v.a.content());
  return v;
}

describe('the seed lifecycle on GlusterFS (detached)', () => {
  for (const format of ['raw', 'qcow2'] as const) {
    it(`${format} base: delete aaaa (commit + rebase) then bbbb (active)`, async () => {
      const v = await seedVolume(format);
      const now = v.a.content();
      expect(await v.a.del('aaaa')).toMatchObject({ outcome: 'deleted', removed: [f('aaaa')] });
      expectState(v, infoOf(f('bbbb'), { bbbb: f('bbbb') }), [f('bbbb'), BASE], now);
      expect(await v.a.del('bbbb')).toMatchObject({ outcome: 'deleted', removed: [f('bbbb')] });
      expectState(v, infoOf(BASE, {}), [BASE], now);
      expect(v.b.listing()).toEqual([BASE, `${BASE}.info`]);
      v.b.expectAllClean();
    });

    it(`${format} base: delete bbbb (active) then aaaa`, async () => {
      const v = await seedVolume(format);
      const now = v.a.content();
      expect(await v.a.del('bbbb')).toMatchObject({ outcome: 'deleted', removed: [f('bbbb')] });
      expectState(v, infoOf(f('aaaa'), { aaaa: f('aaaa') }), [f('aaaa'), BASE], now);
      expect(await v.a.del('aaaa')).toMatchObject({ outcome: 'deleted', removed: [f('aaaa')] });
      expectState(v, infoOf(BASE, {}), [BASE], now);
      expect(v.b.listing()).toEqual([BASE, `${BASE}.info`]);
      v.b.expectAllClean();
    });
  }

  it('deleting the same snapshot again, through the other mount, is a no-op', async () => {
    const v = await seedVolume('raw');
    await v.a.del('aaaa');
    const before = fs.readFileSync(v.b.infoFile());
    expect(await v.b.driver.deleteSnapshot(VOL, SNAP.aaaa, { status: 'available' })).toMatchObject({ outcome: 'not-found' });
    expect(fs.readFileSync(v.a.infoFile()).equals(before)).toBe(true);
  });

  it('a volume from each snapshot (raw and qcow2), then a clone — read through mount B, checked by qemu-img', async () => {
    const v = await seedVolume('qcow2');
    const dirA = v.a.dir;
    const dirB = v.b.dir;
    for (const s of ['aaaa', 'bbbb'] as const) {
      for (const format of ['raw', 'qcow2'] as const) {
        const out = `from-${s}.${format}`;
        await v.a.driver.createVolumeFromSnapshot(VOL, SNAP[s], path.join(dirA, out), { format });
        const want = v.a.recorded.get(SNAP[s])!;
        expectSameBytes(qemuRaw(path.join(dirB, out), dirB), want, `volume from snapshot ${s} (${format}), via mount B`);
        // the snapshot's content is the backing chain of its file: aaaa's is the base, bbbb's is .aaaa
        const chainTop = s === 'aaaa' ? BASE : f('aaaa');
        const cmp = qemuImg(['compare', '-f', format, '-F', 'qcow2', path.join(dirB, out), path.join(dirB, chainTop)], { ok: [0, 1] });
        expect(cmp.status, `qemu-img compare ${out} ${chainTop}: ${cmp.stdout}`).toBe(0);
        if (format === 'qcow2') expect(qemuImg(['check', path.join(dirB, out)], { ok: [0, 1, 2, 3] }).status, out).toBe(0);
      }
    }
    const infoBefore = fs.readFileSync(v.a.infoFile());
    const now = v.a.content();
    await v.a.driver.cloneVolume(VOL, OTHER_VOL, { status: 'available' });
    expectSameBytes(qemuRaw(path.join(dirB, `volume-${OTHER_VOL}`), dirB), now, 'clone, via mount B');
    // the temporary snapshot is gone, the source volume is as it was
    expect(fs.readFileSync(v.b.infoFile()).equals(infoBefore)).toBe(true);
    expect(v.b.listing().filter((n) => n.includes('tmp-snap'))).toEqual([]);
    v.b.expectSnapshotsIntact();
    v.b.expectContent(now);
    // a second driver on mount B sees the clone as a volume of its own
    expect(await new VolumeDriver({ dir: dirB }).volumeInfo(OTHER_VOL)).toMatchObject({ active: `volume-${OTHER_VOL}`, snapshots: {}, infoFile: false });
  });

  it('delete volume: every file goes, as seen through both mounts', async () => {
    const v = await seedVolume('raw');
    const { removed } = await v.a.driver.deleteVolume(VOL);
    expect(removed.sort()).toEqual([BASE, f('aaaa'), f('bbbb'), `${BASE}.format`, `${BASE}.info`].sort());
    expect(v.a.listing()).toEqual([]);
    expect(v.b.listing()).toEqual([]);
  });
});
