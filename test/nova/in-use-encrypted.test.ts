// An encrypted volume attached through Nova (issue 18): the seed's step 4 over real HTTP with the
// loopback Nova, whose guest opened the volume with its secret (as Nova gets it from the key
// manager at attach; Cinder's requests never carry it). The driver creates each new overlay as a
// LUKS qcow2 keyed by the same secret; Nova's live commit and pull move data between encrypted
// files. qemu-img with the secret is the referee for every snapshot's content and the files left.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VolumeDriver } from '../../src/volume/driver.js';
import { readInfo } from '../../src/volume/info-file.js';
import { openImage } from '../../src/image/open-chain.js';
import { NovaClient } from '../../src/nova/client.js';
import { NovaHypervisor } from '../../src/nova/hypervisor.js';
import { SnapshotStatusStore } from '../../src/nova/status-store.js';
import { startStatusServer, type StatusServer } from '../../src/nova/status-endpoint.js';
import { LoopbackNova, type SimulatedGuest } from '../../src/nova/loopback.js';
import { codeOf, rejectionCode } from '../support/errors.js';
import { expectSameBytes } from '../support/images.js';
import { qemuImg, tmpDir } from '../support/qemu.js';
import { keyedImageOpts } from '../support/volume.js';

const VOL = '1234abcd-0000-4000-8000-0000000000e1';
const AAAA = 'aaaaaaaa-0000-4000-8000-00000000000a';
const BBBB = 'bbbbbbbb-0000-4000-8000-00000000000b';
const SIZE = 4 << 20;
const base = `volume-${VOL}`;
const fileA = `${base}.${AAAA}`;
const fileB = `${base}.${BBBB}`;
const SECRET = Buffer.from('attached volume key 0c4e');

interface Rig {
  dir: string;
  keyFile: string;
  nova: LoopbackNova;
  status: StatusServer;
  hypervisor: NovaHypervisor;
  driver: VolumeDriver;
}

let rig: Rig;

beforeEach(async () => {
  const dir = tmpDir('cowchain-inuse-luks-');
  const keyFile = path.join(dir, 'key');
  fs.writeFileSync(keyFile, SECRET);
  const store = new SnapshotStatusStore();
  const status = await startStatusServer({ store, token: 'cinder-token' });
  const nova = new LoopbackNova({ token: 'nova-token', statusUrl: `${status.url}/v3/project`, statusToken: 'cinder-token', stepBytes: 256 << 10 });
  const client = new NovaClient({ endpoint: await nova.start(), token: 'nova-token', timeoutMs: 5000 });
  const hypervisor = new NovaHypervisor({ client, store, intervals: [{ afterMs: 0, everyMs: 5 }] });
  const driver = new VolumeDriver({ dir, hypervisor, encryption: { keySecret: (id) => (id === VOL ? SECRET : undefined), iterTimeMs: 10 } });
  rig = { dir, keyFile, nova, status, hypervisor, driver };
});

afterEach(async () => {
  await rig.nova.stop();
  await rig.status.close();
});

function depthOf(file: string): number {
  const img = openImage(file);
  try {
    return img.chain().length;
  } finally {
    img.close();
  }
}

/** qemu-img's arguments for `name`'s chain with the secret; -U: the guest holds the files open. */
function qemuTarget(name: string): string[] {
  const file = path.join(rig.dir, name);
  return ['--object', `secret,id=sec0,file=${rig.keyFile}`, '--image-opts', keyedImageOpts(file, depthOf(file))];
}

/** The guest view of `name`'s chain as qemu-img convert reads it with the secret. */
function qemuGuest(name: string): Buffer {
  const out = path.join(rig.dir, `qemu-${Math.random().toString(36).slice(2)}.raw`);
  qemuImg(['convert', '-U', ...qemuTarget(name), '-O', 'raw', out]);
  const b = fs.readFileSync(out);
  fs.rmSync(out);
  return b;
}

function backingOf(name: string): string {
  const img = openImage(path.join(rig.dir, name), { noBacking: true });
  try {
    return img.headerInfo().backingFile!;
  } finally {
    img.close();
  }
}

function view(guest: SimulatedGuest): Buffer {
  return Buffer.from(guest.image.read(0, SIZE));
}

describe('encrypted volume attached through Nova', () => {
  it('the seed, step 4: snapshots aaaa and bbbb, delete aaaa (blockCommit) then bbbb (blockRebase); qemu reads every snapshot with the secret', async () => {
    await rig.driver.createVolume(VOL, SIZE, { encrypted: true });
    // Without the secret, the guest cannot boot on it (its first write needs the key).
    const keyless = await rig.nova.attach(VOL, rig.dir);
    expect(codeOf(() => keyless.write())).toBe('ECOW_KEY_REQUIRED');
    await rig.nova.detach(VOL);

    const guest = await rig.nova.attach(VOL, rig.dir, { keySecret: SECRET });
    for (let i = 0; i < 5; i++) guest.write();
    const beforeA = view(guest);
    await rig.driver.createSnapshot(VOL, AAAA, { status: 'in-use' });
    expect(guest.chainNames()).toEqual([fileA, base]);
    for (let i = 0; i < 7; i++) guest.write();
    const beforeB = view(guest);
    await rig.driver.createSnapshot(VOL, BBBB, { status: 'in-use' });
    expect(guest.chainNames()).toEqual([fileB, fileA, base]);
    expect(JSON.parse(qemuImg(['info', '-U', '--output=json', path.join(rig.dir, fileB)]).stdout).encrypted).toBe(true);
    expectSameBytes(qemuGuest(backingOf(fileA)), beforeA, 'snapshot aaaa (qemu)');
    expectSameBytes(qemuGuest(backingOf(fileB)), beforeB, 'snapshot bbbb (qemu)');
    for (let i = 0; i < 9; i++) guest.write();

    await rig.driver.deleteSnapshot(VOL, AAAA, { status: 'in-use' });
    expect(await readInfo(rig.dir, VOL)).toEqual({ active: fileB, [BBBB]: fileB });
    expect(guest.chainNames()).toEqual([fileB, base]);
    expectSameBytes(qemuGuest(backingOf(fileB)), beforeB, 'snapshot bbbb after aaaa was committed (qemu)');

    await rig.driver.deleteSnapshot(VOL, BBBB, { status: 'in-use' });
    expect(await readInfo(rig.dir, VOL)).toEqual({ active: fileB });
    expect(guest.chainNames()).toEqual([fileB]);
    for (const w of guest.expected()) expect(guest.image.read(w.offset, w.length).every((b) => b === w.pattern), `write at ${w.offset}`).toBe(true);
    const final = view(guest);
    await rig.nova.detach(VOL);
    expectSameBytes(qemuGuest(fileB), final, 'the volume after both deletes (qemu)');
    const r = qemuImg(['check', ...qemuTarget(fileB)], { ok: [0, 1, 2, 3] });
    expect(r.status, r.stdout + r.stderr).toBe(0);
  });

  it('without its key the driver refuses a snapshot of the attached volume before asking Nova', async () => {
    await rig.driver.createVolume(VOL, SIZE, { encrypted: true });
    await rig.nova.attach(VOL, rig.dir, { keySecret: SECRET });
    const files = fs.readdirSync(rig.dir).sort();
    const keyless = new VolumeDriver({ dir: rig.dir, hypervisor: rig.hypervisor });
    expect(await rejectionCode(keyless.createSnapshot(VOL, AAAA, { status: 'in-use' }))).toBe('ECOW_KEY_REQUIRED');
    expect(fs.readdirSync(rig.dir).sort()).toEqual(files);
  });
});
