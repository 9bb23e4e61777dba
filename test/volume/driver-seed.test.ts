// The seed's diagrams, detached: build the chain, act, assert the exact info file, the exact
// chain (backing names from the headers, ours and qemu's) and every surviving snapshot's data.
import { describe, expect, it } from 'vitest';
import { tmpDir, requireQemu } from '../support/qemu.js';
import { BASE, SNAP, VolumeFixture, f, infoOf } from '../support/volume.js';

requireQemu();

async function seedVolume(format: 'raw' | 'qcow2' = 'raw'): Promise<VolumeFixture> {
  const v = new VolumeFixture(tmpDir('cowchain-seed-'));
  await v.createVolume(format);
  v.write();
  // 1. first snapshot: volume-1234 <- volume-1234.aaaa
  await v.snap('aaaa');
  v.expectInfo(infoOf(f('aaaa'), { aaaa: f('aaaa') }));
  v.expectChain([f('aaaa'), BASE]);
  v.write(); // w1
  // 2./3. second snapshot: volume-1234 <- .aaaa <- .bbbb
  await v.snap('bbbb');
  v.expectInfo(infoOf(f('bbbb'), { aaaa: f('aaaa'), bbbb: f('bbbb') }));
  v.expectChain([f('bbbb'), f('aaaa'), BASE]);
  v.write(); // w2
  v.expectSnapshotsIntact();
  return v;
}

describe('seed diagrams, detached (commit down)', () => {
  for (const format of ['raw', 'qcow2'] as const) {
    it(`${format} base: delete aaaa then bbbb`, async () => {
      const v = await seedVolume(format);
      const now = v.content();
      expect(await v.del('aaaa')).toMatchObject({ outcome: 'deleted', removed: [f('aaaa')] });
      // volume-1234 <- .bbbb, {active: .bbbb, bbbb: .bbbb}: the same as the seed's online step 4
      v.expectInfo(infoOf(f('bbbb'), { bbbb: f('bbbb') }));
      v.expectChain([f('bbbb'), BASE]);
      v.expectSnapshotsIntact(); // bbbb still reads base + w1 (not + w2)
      v.expectContent(now);
      expect(await v.del('bbbb')).toMatchObject({ outcome: 'deleted', removed: [f('bbbb')] });
      v.expectInfo(infoOf(BASE, {}));
      v.expectChain([BASE]);
      v.expectContent(now);
      expect(v.listing()).toEqual([BASE, `${BASE}.info`]);
      v.expectAllClean();
    });

    it(`${format} base: delete bbbb then aaaa`, async () => {
      const v = await seedVolume(format);
      const now = v.content();
      expect(await v.del('bbbb')).toMatchObject({ outcome: 'deleted', removed: [f('bbbb')] });
      // .bbbb was active: committed into .aaaa, which is active again
      v.expectInfo(infoOf(f('aaaa'), { aaaa: f('aaaa') }));
      v.expectChain([f('aaaa'), BASE]);
      v.expectSnapshotsIntact();
      v.expectContent(now);
      expect(await v.del('aaaa')).toMatchObject({ outcome: 'deleted', removed: [f('aaaa')] });
      v.expectInfo(infoOf(BASE, {}));
      v.expectChain([BASE]);
      v.expectContent(now);
      expect(v.listing()).toEqual([BASE, `${BASE}.info`]);
      v.expectAllClean();
    });
  }

  it('the w1/w2 example: bbbb keeps base + w1 after aaaa is deleted', async () => {
    const v = await seedVolume();
    const bbbb = v.recorded.get(SNAP.bbbb)!;
    await v.del('aaaa');
    expect(v.snapshotContent(SNAP.bbbb).engine.equals(bbbb)).toBe(true);
    expect(v.content().equals(bbbb)).toBe(false); // w2 is only in the volume
  });
});
