// The seed's online path (step 4) and its mirror: attached (`in-use`) snapshot create and delete
// through a fake in-process hypervisor that does libvirt's file work with our engine.
import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { rejection } from '../support/errors.js';
import { FakeHypervisor } from '../support/fake-hypervisor.js';
import { requireQemu, tmpDir } from '../support/qemu.js';
import { BASE, SNAP, VOL, VolumeFixture, f, infoOf } from '../support/volume.js';

requireQemu();

async function seedVolume(options: { hypervisor?: boolean } = {}) {
  const dir = tmpDir('cowchain-attached-');
  const hv = new FakeHypervisor(dir);
  const v = await new VolumeFixture(dir, undefined, options.hypervisor === false ? {} : { hypervisor: hv }).seedSnapshots({ status: 'in-use' });
  return { v, hv };
}

describe('attached create', () => {
  it('creates the overlay, asks the hypervisor with create_info, then records it', async () => {
    const { v, hv } = await seedVolume();
    v.expectInfo(infoOf(f('bbbb'), { aaaa: f('aaaa'), bbbb: f('bbbb') }));
    v.expectChain([f('bbbb'), f('aaaa'), BASE]);
    expect(hv.calls).toEqual([
      { op: 'create', volumeId: VOL, snapshotId: SNAP.aaaa, createInfo: { type: 'qcow2', new_file: f('aaaa'), snapshot_id: SNAP.aaaa } },
      { op: 'create', volumeId: VOL, snapshotId: SNAP.bbbb, createInfo: { type: 'qcow2', new_file: f('bbbb'), snapshot_id: SNAP.bbbb } },
    ]);
    v.expectSnapshotsIntact();
  });

  it('without a hypervisor fails with ECOW_HYPERVISOR_UNAVAILABLE and changes nothing', async () => {
    const dir = tmpDir('cowchain-attached-');
    const v = new VolumeFixture(dir);
    await v.createVolume();
    await v.snap('aaaa');
    const before = { listing: v.listing(), info: fs.readFileSync(v.infoFile()) };
    expect((await rejection(v.driver.createSnapshot(VOL, SNAP.bbbb, { status: 'in-use' }))).code).toBe('ECOW_HYPERVISOR_UNAVAILABLE');
    expect((await rejection(v.driver.deleteSnapshot(VOL, SNAP.aaaa, { status: 'in-use' }))).code).toBe('ECOW_HYPERVISOR_UNAVAILABLE');
    expect(v.listing()).toEqual(before.listing);
    expect(fs.readFileSync(v.infoFile()).equals(before.info)).toBe(true);
  });

  it('a hypervisor error removes the new overlay and leaves the info file untouched', async () => {
    const { v, hv } = await seedVolume();
    const before = { listing: v.listing(), info: fs.readFileSync(v.infoFile()) };
    for (const when of ['before', 'after'] as const) {
      hv.failNext = when;
      expect((await rejection(v.driver.createSnapshot(VOL, SNAP.cccc, { status: 'in-use' }))).code).toBe('ECOW_NOVA_STATUS');
      expect(v.listing()).toEqual(before.listing);
      expect(fs.readFileSync(v.infoFile()).equals(before.info)).toBe(true);
    }
  });
});

describe('attached delete (seed step 4)', () => {
  it('aaaa then bbbb: blockCommit .aaaa into the base, then pull the base into .bbbb', async () => {
    const { v, hv } = await seedVolume();
    const now = v.content();
    hv.calls.length = 0;
    expect(await v.del('aaaa', 'in-use')).toMatchObject({ outcome: 'deleted', removed: [f('aaaa')] });
    expect(hv.calls).toEqual([
      { op: 'delete', volumeId: VOL, snapshotId: SNAP.aaaa, deleteInfo: { type: 'qcow2', file_to_merge: f('aaaa'), merge_target_file: BASE, volume_id: VOL } },
    ]);
    // volume-1234 <- volume-1234.bbbb, {active: .bbbb, bbbb: .bbbb}
    v.expectInfo(infoOf(f('bbbb'), { bbbb: f('bbbb') }));
    v.expectChain([f('bbbb'), BASE]);
    v.expectSnapshotsIntact();
    v.expectContent(now);

    expect(await v.del('bbbb', 'in-use')).toMatchObject({ outcome: 'deleted', removed: [BASE] });
    expect(hv.calls[1]).toEqual({ op: 'delete', volumeId: VOL, snapshotId: SNAP.bbbb, deleteInfo: { type: 'qcow2', file_to_merge: null, merge_target_file: null, volume_id: VOL } });
    // volume-1234.bbbb alone, {active: .bbbb}: the base was pulled in and deleted
    v.expectInfo(infoOf(f('bbbb'), {}));
    v.expectChain([f('bbbb')]);
    v.expectContent(now);
    expect(v.listing()).toEqual([f('bbbb'), `${BASE}.info`].sort());
    v.expectAllClean();
  });

  it('bbbb then aaaa: pull .aaaa into .bbbb (aaaa now maps to .bbbb), then pull the base', async () => {
    const { v, hv } = await seedVolume();
    const now = v.content();
    hv.calls.length = 0;
    expect(await v.del('bbbb', 'in-use')).toMatchObject({ outcome: 'deleted', removed: [f('aaaa')] });
    expect(hv.calls).toEqual([
      { op: 'delete', volumeId: VOL, snapshotId: SNAP.bbbb, deleteInfo: { type: 'qcow2', file_to_merge: BASE, merge_target_file: null, volume_id: VOL } },
    ]);
    v.expectInfo(infoOf(f('bbbb'), { aaaa: f('bbbb') }));
    v.expectChain([f('bbbb'), BASE]);
    v.expectSnapshotsIntact(); // aaaa: still the base's content
    v.expectContent(now);

    expect(await v.del('aaaa', 'in-use')).toMatchObject({ outcome: 'deleted', removed: [BASE] });
    v.expectInfo(infoOf(f('bbbb'), {}));
    v.expectChain([f('bbbb')]);
    v.expectContent(now);
    expect(v.listing()).toEqual([f('bbbb'), `${BASE}.info`].sort());
    v.expectAllClean();
  });

  it('a hypervisor error before the work changes nothing and leaves no journal', async () => {
    const { v, hv } = await seedVolume();
    const before = { listing: v.listing(), info: fs.readFileSync(v.infoFile()) };
    hv.failNext = 'before';
    expect((await rejection(v.driver.deleteSnapshot(VOL, SNAP.aaaa, { status: 'in-use' }))).code).toBe('ECOW_NOVA_STATUS');
    expect(v.listing()).toEqual(before.listing);
    expect(fs.readFileSync(v.infoFile()).equals(before.info)).toBe(true);
    v.expectSnapshotsIntact();
  });

  for (const which of ['aaaa', 'bbbb'] as const) {
    it(`an error reported after the hypervisor moved the data (delete ${which}): nothing deleted, the re-run finishes it`, async () => {
      const { v, hv } = await seedVolume();
      const now = v.content();
      const info = fs.readFileSync(v.infoFile());
      hv.failNext = 'after';
      expect((await rejection(v.driver.deleteSnapshot(VOL, SNAP[which], { status: 'in-use' }))).code).toBe('ECOW_NOVA_STATUS');
      expect(fs.readFileSync(v.infoFile()).equals(info)).toBe(true);
      expect(v.listing()).toContain(`${BASE}.journal`);
      expect((await v.driver.volumeInfo(VOL)).pending).toMatchObject({ op: 'delete-snapshot', snapshot: SNAP[which] });
      const callsBefore = hv.calls.length;
      expect(await v.del(which, 'in-use')).toMatchObject({ outcome: 'deleted' });
      expect(hv.calls.length).toBe(callsBefore); // finished from the journal, no second live merge
      if (which === 'aaaa') {
        v.expectInfo(infoOf(f('bbbb'), { bbbb: f('bbbb') }));
      } else {
        v.expectInfo(infoOf(f('bbbb'), { aaaa: f('bbbb') }));
      }
      v.expectChain([f('bbbb'), BASE]);
      v.expectSnapshotsIntact();
      v.expectContent(now);
      expect(v.listing()).toEqual([BASE, f('bbbb'), `${BASE}.info`].sort());
    });
  }
});
