// Smaller differences from Cinder found with issue 14: clone accepts `downloading`, checks what
// it can before its temporary snapshot exists (never naming that snapshot), and an info file
// without `active` gets a message of its own.
import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CowError } from '../../src/errors.js';
import { expectSameBytes } from '../support/images.js';
import { qemuRaw, requireQemu, tmpDir } from '../support/qemu.js';
import { BASE, MiB, OTHER_VOL, SNAP, VOL, VolumeFixture, f } from '../support/volume.js';

requireQemu();

async function rejection(p: Promise<unknown>): Promise<CowError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(CowError);
    return e as CowError;
  }
  throw new Error('expected a rejection');
}

async function oneSnapshot(): Promise<VolumeFixture> {
  const v = new VolumeFixture(tmpDir('cowchain-cinder-'), 2 * MiB);
  await v.createVolume();
  v.write();
  await v.snap('aaaa');
  v.write();
  return v;
}

describe('clone', () => {
  it('accepts a downloading source (Cinder: available, backing-up, downloading, in-use)', async () => {
    const v = await oneSnapshot();
    const now = v.content();
    const r = await v.driver.cloneVolume(VOL, OTHER_VOL, { status: 'downloading' });
    expectSameBytes(qemuRaw(r.file, v.dir), now, 'clone');
    v.expectChain([f('aaaa'), BASE]);
  });

  it('refuses a too small --size and an existing target before taking its temporary snapshot, and never names it', async () => {
    const v = await oneSnapshot();
    const before = v.listing();
    const small = await rejection(v.driver.cloneVolume(VOL, OTHER_VOL, { status: 'available', size: MiB }));
    expect(small.code).toBe('ECOW_BAD_ARGUMENT');
    fs.writeFileSync(v.p(`volume-${OTHER_VOL}`), 'taken');
    const exists = await rejection(v.driver.cloneVolume(VOL, OTHER_VOL, { status: 'available' }));
    expect(exists.code).toBe('ECOW_EXISTS');
    for (const e of [small, exists]) expect(e.message).not.toMatch(/tmp-snap/);
    expect(v.listing()).toEqual([...before, `volume-${OTHER_VOL}`].sort());
    expect(fs.readFileSync(v.p(`volume-${OTHER_VOL}`), 'utf8')).toBe('taken');
    expect(Object.keys(v.info()!).sort()).toEqual(['active', SNAP.aaaa].sort());
  });
});

it('an info file without "active" is ECOW_INFO_INVALID saying so', async () => {
  const v = await oneSnapshot();
  fs.writeFileSync(v.infoFile(), JSON.stringify({ [SNAP.aaaa]: f('aaaa') }));
  const e = await rejection(v.driver.volumeInfo(VOL));
  expect(e.code).toBe('ECOW_INFO_INVALID');
  expect(e.message).toMatch(/no "active" key/);
});
