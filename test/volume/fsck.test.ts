// fsck and recovery decisions, state by state: the journal's two look-alike crash states, the
// create decisions (roll back / adopt / undecidable), and the states Cinder's own driver leaves
// when it dies mid-delete or mid-create (no journal) — each reconciled without losing a
// snapshot's data, with the report saying what was done.
import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CowError } from '../../src/errors.js';
import { commitImage } from '../../src/image/commit.js';
import { rebaseImage } from '../../src/image/rebase.js';
import { openImage } from '../../src/image/open-chain.js';
import { serializeInfo } from '../../src/volume/info-file.js';
import { writeJournal } from '../../src/volume/journal.js';
import { VolumeFiles } from '../../src/volume/volume-files.js';
import { VolumeDriver } from '../../src/volume/driver.js';
import { FakeHypervisor } from '../support/fake-hypervisor.js';
import { requireQemu, tmpDir } from '../support/qemu.js';
import { BASE, MiB, SNAP, VOL, VolumeFixture, f, infoOf } from '../support/volume.js';

requireQemu();

/** volume-1234 <- .aaaa <- .bbbb (active), writes before, between, after. */
async function seeded(options: ConstructorParameters<typeof VolumeFixture>[2] = {}): Promise<VolumeFixture> {
  const dir = tmpDir('cowchain-fsck-');
  const v = new VolumeFixture(dir, 2 * MiB, { hypervisor: new FakeHypervisor(dir), ...options });
  await v.createVolume('qcow2');
  v.write();
  await v.snap('aaaa');
  v.write();
  await v.snap('bbbb');
  v.write();
  return v;
}

class Stop extends Error {}

/** Make the driver stop (as if killed) right after step `at`. */
function stopAt(v: VolumeFixture, at: string): VolumeDriver {
  return new VolumeDriver({
    dir: v.dir,
    hypervisor: new FakeHypervisor(v.dir),
    onStep: (s) => {
      if (s === at) throw new Stop(at);
    },
  });
}

async function stopped(p: Promise<unknown>): Promise<void> {
  await expect(p).rejects.toBeInstanceOf(Stop);
}

describe('the journal tells look-alike crash states apart', () => {
  it('detached delete of aaaa and attached delete of bbbb, both stopped after the data moved, look the same on disk and end differently — each right', async () => {
    const a = await seeded();
    const b = await seeded();
    await stopped(stopAt(a, 'delete:rebase').deleteSnapshot(VOL, SNAP.aaaa, { status: 'available' }));
    await stopped(stopAt(b, 'delete:hypervisor').deleteSnapshot(VOL, SNAP.bbbb, { status: 'in-use' }));
    // Same files, same chain, same (old) info file.
    for (const v of [a, b]) {
      expect(v.listing()).toEqual([BASE, f('aaaa'), f('bbbb'), `${BASE}.info`, `${BASE}.journal`].sort());
      v.expectChain([f('bbbb'), BASE]);
      v.expectInfo(infoOf(f('bbbb'), { aaaa: f('aaaa'), bbbb: f('bbbb') }));
    }
    const ra = await a.driver.fsck(VOL);
    expect(ra.actions.map((x) => x.kind)).toEqual(['recovered']);
    expect(ra.actions[0].detail).toMatch(/^finished: snapshot aaaa.* delete \(commit\)/);
    a.recorded.delete(SNAP.aaaa);
    a.expectInfo(infoOf(f('bbbb'), { bbbb: f('bbbb') })); // the base holds bbbb's content now
    a.expectSnapshotsIntact();

    const rb = await b.driver.fsck(VOL, { status: 'in-use' });
    expect(rb.actions[0].detail).toMatch(/delete \(hypervisor-pull\)/);
    b.recorded.delete(SNAP.bbbb);
    b.expectInfo(infoOf(f('bbbb'), { aaaa: f('bbbb') })); // the base still holds aaaa's content
    b.expectSnapshotsIntact();
    for (const v of [a, b]) expect(v.listing()).toEqual([BASE, f('bbbb'), `${BASE}.info`].sort());
  });

  it('a delete stopped before the data moved is run again by the next delete', async () => {
    const v = await seeded();
    const now = v.content();
    await stopped(stopAt(v, 'delete:journal').deleteSnapshot(VOL, SNAP.aaaa, { status: 'available' }));
    expect((await v.driver.volumeInfo(VOL)).pending).toMatchObject({ op: 'delete-snapshot', method: 'commit', snapshot: SNAP.aaaa });
    expect(await v.del('aaaa')).toMatchObject({ outcome: 'deleted' });
    v.expectInfo(infoOf(f('bbbb'), { bbbb: f('bbbb') }));
    v.expectSnapshotsIntact();
    v.expectContent(now);
  });

  it('another operation finishes the interrupted one first', async () => {
    const v = await seeded();
    await stopped(stopAt(v, 'delete:info').deleteSnapshot(VOL, SNAP.bbbb, { status: 'available' }));
    await v.snap('cccc');
    v.recorded.delete(SNAP.bbbb);
    v.expectInfo(infoOf(f('cccc'), { aaaa: f('aaaa'), cccc: f('cccc') }));
    v.expectChain([f('cccc'), f('aaaa'), BASE]);
    v.expectSnapshotsIntact();
  });
});

describe('interrupted creates', () => {
  async function interruptedCreate(phase: 'overlay' | 'hypervisor', guestData: boolean) {
    const v = await seeded();
    const files = new VolumeFiles(v.dir, VOL);
    await writeJournal(files, { version: 1, op: 'create-snapshot', snapshot: SNAP.cccc, file: f('cccc'), backing: f('bbbb'), phase });
    await files.createOverlay(f('cccc'), { size: 2 * MiB, backing: f('bbbb'), backingFormat: 'qcow2' });
    if (guestData) {
      const img = openImage(v.p(f('cccc')), { writable: true });
      img.write(4096, Buffer.alloc(8192, 7));
      img.close();
    }
    return v;
  }

  it('before the hypervisor was asked: the overlay is removed', async () => {
    const v = await interruptedCreate('overlay', false);
    const r = await v.driver.fsck(VOL, { status: 'in-use' });
    expect(r.actions.map((a) => a.detail)).toEqual([expect.stringMatching(/^rolled-back: .*removed .*cccc/)]);
    v.expectInfo(infoOf(f('bbbb'), { aaaa: f('aaaa'), bbbb: f('bbbb') }));
    expect(v.listing()).not.toContain(f('cccc'));
  });

  it('after the guest wrote into the overlay: it is adopted as the active file', async () => {
    const v = await interruptedCreate('hypervisor', true);
    const img = openImage(v.p(f('cccc'))); // what the guest sees: the overlay it wrote into
    const now = Buffer.from(img.read(0, img.virtualSize));
    img.close();
    const r = await v.driver.fsck(VOL, { status: 'in-use' });
    expect(r.actions.map((a) => a.detail)).toEqual([expect.stringMatching(/^adopted: /)]);
    v.expectInfo(infoOf(f('cccc'), { aaaa: f('aaaa'), bbbb: f('bbbb'), cccc: f('cccc') }));
    v.expectContent(now);
  });

  it('an empty overlay the guest may be on: undecidable while attached (nothing changed), removed once detached', async () => {
    const v = await interruptedCreate('hypervisor', false);
    const before = v.listing();
    const r = await v.driver.fsck(VOL, { status: 'in-use' });
    expect(r.problems.join()).toMatch(/ECOW_NEEDS_FSCK: .* holds no data .* whether the guest moved onto \S+ cannot be told from the files/);
    expect(r.actions).toEqual([]);
    expect(v.listing()).toEqual(before);
    const code = await v.driver.createSnapshot(VOL, SNAP.dddd, { status: 'in-use' }).catch((e: CowError) => e.code);
    expect(code).toBe('ECOW_NEEDS_FSCK');
    const r2 = await v.driver.fsck(VOL);
    expect(r2.actions.map((a) => a.detail)).toEqual([expect.stringMatching(/^rolled-back: .*removed .*cccc/)]);
    expect(r2.problems).toEqual([]);
  });
});

describe('states Cinder’s driver leaves (no journal)', () => {
  it('active delete killed after unlinking the committed file: the active file is set to the single top', async () => {
    const v = await seeded();
    const now = v.content();
    commitImage(v.p(f('bbbb'))); // qemu-img commit (empties the top), then Cinder unlinks it
    fs.rmSync(v.p(f('bbbb')));
    const r = await v.driver.fsck(VOL);
    expect(r.actions.map((a) => [a.kind, a.files])).toEqual([['set-active', [f('aaaa')]]]);
    expect(r.problems).toEqual([]);
    v.recorded.delete(SNAP.bbbb);
    v.expectInfo(infoOf(f('aaaa'), { aaaa: f('aaaa') }));
    v.expectSnapshotsIntact();
    v.expectContent(now);
  });

  it('lower delete killed between the unlink and the rebase: the broken link is bridged to the committed base', async () => {
    const v = await seeded();
    const now = v.content();
    commitImage(v.p(f('aaaa')));
    fs.rmSync(v.p(f('aaaa')));
    const r = await v.driver.fsck(VOL);
    expect(r.actions.map((a) => [a.kind, a.files])).toEqual([['bridged-missing-file', [f('bbbb'), BASE]]]);
    v.recorded.delete(SNAP.aaaa);
    v.expectInfo(infoOf(f('bbbb'), { bbbb: f('bbbb') }));
    v.expectChain([f('bbbb'), BASE]);
    v.expectSnapshotsIntact();
    v.expectContent(now);
  });

  it('online delete killed after the info file, before the unlink: the leftover is removed', async () => {
    const v = await seeded();
    commitImage(v.p(f('aaaa')), { base: v.p(BASE) });
    rebaseImage(v.p(f('bbbb')), BASE, { unsafe: true, backingFormat: 'qcow2' });
    fs.writeFileSync(v.infoFile(), JSON.stringify({ active: f('bbbb'), [SNAP.bbbb]: f('bbbb') }));
    const r = await v.driver.fsck(VOL);
    expect(r.actions.map((a) => [a.kind, a.files])).toEqual([['removed-unreferenced', [f('aaaa')]]]);
    expect(v.listing()).toEqual([BASE, f('bbbb'), `${BASE}.info`].sort());
  });

  it('create killed before the info file: an empty orphan overlay is removed, one holding data adopted', async () => {
    for (const data of [false, true]) {
      const v = await seeded();
      const files = new VolumeFiles(v.dir, VOL);
      await files.createOverlay(f('cccc'), { size: 2 * MiB, backing: f('bbbb'), backingFormat: 'qcow2' });
      if (data) {
        const img = openImage(v.p(f('cccc')), { writable: true });
        img.write(0, Buffer.alloc(512, 1));
        img.close();
      }
      const r = await v.driver.fsck(VOL);
      expect(r.actions.map((a) => [a.kind, a.files])).toEqual([[data ? 'adopted-orphan' : 'removed-orphan', [f('cccc')]]]);
      v.expectInfo(data ? infoOf(f('cccc'), { aaaa: f('aaaa'), bbbb: f('bbbb'), cccc: f('cccc') }) : infoOf(f('bbbb'), { aaaa: f('aaaa'), bbbb: f('bbbb') }));
    }
  });

  it('entries naming missing files are dropped, temp files removed, leftover temporary snapshots deleted', async () => {
    const v = await seeded();
    const now = v.content();
    const tmp = 'tmp-snap-00000000-0000-4000-8000-000000000000';
    await v.driver.createSnapshot(VOL, tmp, { status: 'available' });
    fs.writeFileSync(v.infoFile(), JSON.stringify({ ...v.info()!, [SNAP.dddd]: f('dddd') }));
    fs.writeFileSync(v.p(`.${BASE}.info.tmp-0011223344556677`), '{"act');
    const r = await v.driver.fsck(VOL);
    expect(r.actions.map((a) => a.kind)).toEqual(['removed-temp-file', 'dropped-entry', 'deleted-temporary-snapshot']);
    v.expectInfo(infoOf(f('bbbb'), { aaaa: f('aaaa'), bbbb: f('bbbb') }));
    v.expectChain([f('bbbb'), f('aaaa'), BASE]);
    v.expectContent(now);
    expect((await v.driver.fsck(VOL)).clean).toBe(true);
  });

  it('a dry run reports the repairs and changes nothing', async () => {
    const v = await seeded();
    commitImage(v.p(f('aaaa')));
    fs.rmSync(v.p(f('aaaa')));
    const before = v.listing().map((n) => [n, fs.readFileSync(v.p(n)).toString('base64')]);
    const dry = await v.driver.fsck(VOL, { dryRun: true });
    expect(dry.actions.map((a) => a.kind)).toEqual(['bridged-missing-file']);
    expect(v.listing().map((n) => [n, fs.readFileSync(v.p(n)).toString('base64')])).toEqual(before);
    const real = await v.driver.fsck(VOL);
    expect(real.actions.map((a) => a.kind)).toEqual(['bridged-missing-file']);
  });

  it('ambiguous states are reported and left alone', async () => {
    const v = await seeded();
    fs.rmSync(v.p(f('bbbb')));
    fs.copyFileSync(v.p(f('aaaa')), v.p(f('cccc'))); // a second top: which one is the volume?
    const before = v.listing();
    const r = await v.driver.fsck(VOL);
    expect(r.problems.join()).toMatch(/no single top image/);
    expect(r.actions).toEqual([]);
    expect(v.listing()).toEqual(before);
  });
});

describe('fsck basics', () => {
  it('a healthy volume is clean; a missing volume is ECOW_NOT_FOUND', async () => {
    const v = await seeded();
    const r = await v.driver.fsck(VOL);
    expect(r).toMatchObject({ clean: true, actions: [], problems: [], notes: [] });
    expect(r.info).toEqual(v.info());
    const d = new VolumeDriver({ dir: tmpDir('cowchain-fsck-') });
    expect(await d.fsck(VOL).catch((e: CowError) => e.code)).toBe('ECOW_NOT_FOUND');
  });
});

describe('fsck never deletes what it cannot account for', () => {
  it('a lost info file: the snapshot chain above the base is reported, not removed', async () => {
    const v = await seeded();
    const now = v.content();
    fs.rmSync(v.infoFile());
    const before = v.listing().map((n) => [n, fs.readFileSync(v.p(n)).toString('base64')]);
    const r = await v.driver.fsck(VOL);
    expect(r.actions).toEqual([]);
    expect(r.problems.join('\n')).toMatch(/was the info file lost/);
    expect(v.listing().map((n) => [n, fs.readFileSync(v.p(n)).toString('base64')])).toEqual(before);
    // Put the info file back: everything is there.
    fs.writeFileSync(v.infoFile(), serializeInfo(infoOf(f('bbbb'), { aaaa: f('aaaa'), bbbb: f('bbbb') })));
    expect((await v.driver.fsck(VOL)).clean).toBe(true);
    v.expectContent(now);
  });
});
