// Deleting any snapshot never changes another snapshot's content nor the volume's: every order
// of deleting three snapshots, detached, attached, and mixed (the status decides the method per
// delete), checked after every step against what the volume held when each snapshot was taken.
// The quick tier runs every order once: detached and attached each take a Latin square of the
// orders (each snapshot deleted first, second and last once), the two squares together all six.
import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { VolumeStatus } from '../../src/volume/status.js';
import { FakeHypervisor } from '../support/fake-hypervisor.js';
import { rng } from '../support/images.js';
import { requireQemu, tmpDir } from '../support/qemu.js';
import { FULL } from '../support/tier.js';
import { BASE, VolumeFixture, type SnapName } from '../support/volume.js';

requireQemu();

const NAMES: SnapName[] = ['aaaa', 'bbbb', 'cccc'];

function permutations<T>(xs: T[]): T[][] {
  if (xs.length <= 1) return [xs];
  return xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p]));
}

async function scenario(order: SnapName[], statuses: VolumeStatus[], createStatus: VolumeStatus[]): Promise<void> {
  const dir = tmpDir('cowchain-orders-');
  const v = new VolumeFixture(dir, 2 << 20, { hypervisor: new FakeHypervisor(dir), stepBytes: 256 << 10 });
  await v.createVolume('qcow2');
  v.write();
  for (const [i, s] of NAMES.entries()) {
    await v.snap(s, createStatus[i]);
    v.write();
  }
  const now = v.content();
  for (const [i, s] of order.entries()) {
    expect(await v.del(s, statuses[i])).toMatchObject({ outcome: 'deleted' });
    v.expectSnapshotsIntact();
    v.expectContent(now);
    // Nothing left over: every file is in the active chain, and every snapshot maps into it.
    const chain = v.engineChain().map(([n]) => n);
    expect(v.listing()).toEqual([...chain, `${BASE}.info`].sort());
    for (const [k, file] of Object.entries(v.info()!)) expect(chain, `${k} -> ${file}`).toContain(file);
  }
  expect(Object.keys(v.info()!)).toEqual(['active']);
  expect(v.engineChain()).toHaveLength(1);
  v.expectAllClean();
}

/** abc, bca, cab: each snapshot deleted at each position once; the other three orders form the other square. */
const SQUARE = new Set(['aaaa,bbbb,cccc', 'bbbb,cccc,aaaa', 'cccc,aaaa,bbbb']);

describe('every delete order keeps every other snapshot intact', () => {
  for (const order of permutations(NAMES)) {
    const inSquare = SQUARE.has(order.join(','));
    if (FULL || inSquare) it(`detached: ${order.join(', ')}`, () => scenario(order, ['available', 'available', 'available'], ['available', 'available', 'available']));
    if (FULL || !inSquare) it(`attached: ${order.join(', ')}`, () => scenario(order, ['in-use', 'in-use', 'in-use'], ['in-use', 'in-use', 'in-use']));
  }
  const r = rng(2024);
  const pick = (): VolumeStatus => (r() < 0.5 ? 'available' : 'in-use');
  for (const order of permutations(NAMES).filter((_, i) => i % 2 === 1)) {
    const del = [pick(), pick(), pick()];
    const create = [pick(), pick(), pick()];
    it(`mixed: created ${create.join('/')}, deleted ${order.map((s, i) => `${s} ${del[i]}`).join(', ')}`, () => scenario(order, del, create));
  }
});

it('a volume that went through attached deletes (base gone) takes and deletes snapshots again', async () => {
  const dir = tmpDir('cowchain-orders-');
  const v = new VolumeFixture(dir, 2 << 20, { hypervisor: new FakeHypervisor(dir) });
  await v.createVolume();
  v.write();
  await v.snap('aaaa', 'in-use');
  v.write();
  await v.del('aaaa', 'in-use'); // pulls the base into .aaaa and deletes the base
  expect(fs.existsSync(v.p(BASE))).toBe(false);
  await v.snap('bbbb');
  v.write();
  await v.snap('cccc');
  v.write();
  const now = v.content();
  await v.del('bbbb');
  v.expectSnapshotsIntact();
  await v.del('cccc');
  v.expectContent(now);
  v.expectAllClean();
});
