// The seed's step 4 end to end over real HTTP: the driver talks to the loopback Nova through the
// Nova client; the loopback Nova plays libvirt with our engine on a guest that keeps writing, and
// reports back through Cinder's status endpoint into the store the driver waits on.
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
import type { Clock } from '../../src/nova/wait.js';
import { isCowError } from '../../src/errors.js';
import { expectClean, qemuImg, tmpDir } from '../support/qemu.js';

const VOL = '1234abcd-0000-4000-8000-000000000001';
const AAAA = 'aaaaaaaa-0000-4000-8000-00000000000a';
const BBBB = 'bbbbbbbb-0000-4000-8000-00000000000b';
const SIZE = 4 << 20;
const base = `volume-${VOL}`;
const fileA = `${base}.${AAAA}`;
const fileB = `${base}.${BBBB}`;

/** A clock whose sleeps pass instantly, so a 600 s time-out is reached in milliseconds. */
function instantClock(): Clock {
  let t = 0;
  return {
    now: () => t,
    sleep: async (ms: number) => {
      t += ms;
      await new Promise((r) => setImmediate(r));
    },
  };
}

interface Rig {
  dir: string;
  nova: LoopbackNova;
  status: StatusServer;
  store: SnapshotStatusStore;
  driver: VolumeDriver;
}

let rig: Rig;

async function makeRig(clock?: Clock): Promise<Rig> {
  const dir = tmpDir('cowchain-inuse-');
  const store = new SnapshotStatusStore();
  const status = await startStatusServer({ store, token: 'cinder-secret' });
  const nova = new LoopbackNova({ token: 'nova-secret', statusUrl: `${status.url}/v3/project`, statusToken: 'cinder-secret', stepBytes: 256 << 10 });
  const endpoint = await nova.start();
  const client = new NovaClient({ endpoint, token: 'nova-secret', timeoutMs: 5000 });
  // Real time polls every 5 ms; the instant clock keeps Cinder's own back-off (1 s … 10 s).
  const hypervisor = new NovaHypervisor({ client, store, clock, intervals: clock ? undefined : [{ afterMs: 0, everyMs: 5 }] });
  const driver = new VolumeDriver({ dir, hypervisor });
  return { dir, nova, status, store, driver };
}

beforeEach(async () => {
  rig = await makeRig();
});

afterEach(async () => {
  await rig.nova.stop();
  await rig.status.close();
});

/** Byte equality without vitest's element-wise diff (which is unusable on megabytes). */
function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}

/** Guest view of the whole disk right now. */
function view(guest: SimulatedGuest): Uint8Array {
  return guest.image.read(0, SIZE);
}

/** Content of a snapshot: the chain below its file, read from disk by a fresh open. */
function snapshotContent(dir: string, file: string): Uint8Array {
  const top = openImage(path.join(dir, file));
  try {
    const below = top.backing!;
    return below.read(0, SIZE);
  } finally {
    top.close();
  }
}

function chainOnDisk(dir: string, active: string): string[] {
  const img = openImage(path.join(dir, active));
  try {
    return img.chain().map((i) => path.basename(i.filename));
  } finally {
    img.close();
  }
}

async function attachWithData(): Promise<SimulatedGuest> {
  await rig.driver.createVolume(VOL, SIZE, { format: 'raw' });
  const guest = await rig.nova.attach(VOL, rig.dir);
  for (let i = 0; i < 5; i++) guest.write();
  return guest;
}

describe('attached volume: the seed, step 4, over HTTP', () => {
  it('snapshots aaaa and bbbb, deletes aaaa (blockCommit) then bbbb (blockRebase); info and chain as drawn; every write survives', async () => {
    const guest = await attachWithData();

    const beforeA = view(guest);
    await rig.driver.createSnapshot(VOL, AAAA, { status: 'in-use' });
    expect(await readInfo(rig.dir, VOL)).toEqual({ active: fileA, [AAAA]: fileA });
    expect(guest.chainNames()).toEqual([fileA, base]);

    for (let i = 0; i < 7; i++) guest.write();
    const beforeB = view(guest);
    await rig.driver.createSnapshot(VOL, BBBB, { status: 'in-use' });
    expect(await readInfo(rig.dir, VOL)).toEqual({ active: fileB, [AAAA]: fileA, [BBBB]: fileB });
    expect(guest.chainNames()).toEqual([fileB, fileA, base]);
    expect(same(snapshotContent(rig.dir, fileA), beforeA)).toBe(true);
    expect(same(snapshotContent(rig.dir, fileB), beforeB)).toBe(true);

    for (let i = 0; i < 9; i++) guest.write();

    // First snapshot deleted: Nova commits .aaaa into volume-1234; .bbbb now points at the base.
    await rig.driver.deleteSnapshot(VOL, AAAA, { status: 'in-use' });
    expect(await readInfo(rig.dir, VOL)).toEqual({ active: fileB, [BBBB]: fileB });
    expect(guest.chainNames()).toEqual([fileB, base]);
    expect(fs.existsSync(path.join(rig.dir, fileA))).toBe(false);
    expect(same(snapshotContent(rig.dir, fileB), beforeB)).toBe(true);

    // Second snapshot deleted: Nova pulls volume-1234's data into .bbbb, which stays active.
    await rig.driver.deleteSnapshot(VOL, BBBB, { status: 'in-use' });
    expect(await readInfo(rig.dir, VOL)).toEqual({ active: fileB });
    expect(guest.chainNames()).toEqual([fileB]);
    expect(fs.existsSync(path.join(rig.dir, base))).toBe(false);

    // Writes were made during each live operation (one per job step) and all of them are there.
    expect(guest.writes.length).toBeGreaterThan(21 + 2);
    for (const w of guest.expected()) {
      expect(guest.image.read(w.offset, w.length).every((b) => b === w.pattern), `write at ${w.offset}`).toBe(true);
    }
    const final = view(guest);
    await rig.nova.detach(VOL);
    expect(chainOnDisk(rig.dir, fileB)).toEqual([fileB]);
    expectClean(path.join(rig.dir, fileB));
    // qemu reads the same guest view from the files we and the "hypervisor" left.
    const raw = path.join(rig.dir, 'final.raw');
    qemuImg(['convert', '-O', 'raw', path.join(rig.dir, fileB), raw]);
    expect(same(new Uint8Array(fs.readFileSync(raw)), final)).toBe(true);
  });

  it('deleting bbbb first (active: blockRebase onto .aaaa) keeps aaaa intact', async () => {
    const guest = await attachWithData();
    const beforeA = view(guest);
    await rig.driver.createSnapshot(VOL, AAAA, { status: 'in-use' });
    for (let i = 0; i < 4; i++) guest.write();
    await rig.driver.createSnapshot(VOL, BBBB, { status: 'in-use' });
    for (let i = 0; i < 4; i++) guest.write();

    await rig.driver.deleteSnapshot(VOL, BBBB, { status: 'in-use' });
    const info = await readInfo(rig.dir, VOL);
    expect(info?.active).toBe(fileB);
    expect(Object.keys(info!).sort()).toEqual([AAAA, 'active'].sort());
    expect(same(snapshotContent(rig.dir, info![AAAA]), beforeA)).toBe(true);
    for (const w of guest.expected()) expect(guest.image.read(w.offset, w.length).every((b) => b === w.pattern)).toBe(true);
    await rig.nova.detach(VOL);
    for (const f of fs.readdirSync(rig.dir).filter((f) => f.startsWith(base) && !f.endsWith('.info') && !f.endsWith('.lock') && !f.endsWith('.format'))) {
      if (fs.statSync(path.join(rig.dir, f)).isFile() && f !== base) expectClean(path.join(rig.dir, f));
    }
  });
});

describe('attached volume: Nova failures change nothing', () => {
  async function withTwoSnapshots(): Promise<{ guest: SimulatedGuest; info: unknown; files: string[] }> {
    const guest = await attachWithData();
    await rig.driver.createSnapshot(VOL, AAAA, { status: 'in-use' });
    guest.write();
    await rig.driver.createSnapshot(VOL, BBBB, { status: 'in-use' });
    guest.write();
    return { guest, info: await readInfo(rig.dir, VOL), files: fs.readdirSync(rig.dir).sort() };
  }

  it('500 on create: ECOW_NOVA_UNAVAILABLE, the new overlay is removed, info unchanged', async () => {
    const guest = await attachWithData();
    rig.nova.faults.createFails = true;
    const files = fs.readdirSync(rig.dir).sort();
    await expect(rig.driver.createSnapshot(VOL, AAAA, { status: 'in-use' })).rejects.toSatisfy((e) => isCowError(e, 'ECOW_NOVA_UNAVAILABLE'));
    expect(await readInfo(rig.dir, VOL)).toBeNull();
    expect(fs.readdirSync(rig.dir).sort()).toEqual(files);
    expect(guest.chainNames()).toEqual([base]);
  });

  it('a token Nova rejects: ECOW_UNAUTHORIZED, nothing changes', async () => {
    const { info, files } = await withTwoSnapshots();
    rig.nova.faults.rejectToken = true;
    await expect(rig.driver.deleteSnapshot(VOL, AAAA, { status: 'in-use' })).rejects.toSatisfy((e) => isCowError(e, 'ECOW_UNAUTHORIZED'));
    expect(await readInfo(rig.dir, VOL)).toEqual(info);
    expect(fs.readdirSync(rig.dir).sort()).toEqual(files);
  });

  it('error status mid-delete: ECOW_NOVA_STATUS, no file deleted, info unchanged', async () => {
    const { guest, info, files } = await withTwoSnapshots();
    rig.nova.faults.deleteErrors = true;
    await expect(rig.driver.deleteSnapshot(VOL, AAAA, { status: 'in-use' })).rejects.toSatisfy((e) => isCowError(e, 'ECOW_NOVA_STATUS'));
    expect(await readInfo(rig.dir, VOL)).toEqual(info);
    expect(fs.readdirSync(rig.dir).sort()).toEqual(files);
    expect(guest.chainNames()).toEqual([fileB, fileA, base]);
  });

  it('Nova never reports: ECOW_NEEDS_FSCK (a time-out through the injected clock), nothing deleted, info unchanged', async () => {
    await rig.nova.stop();
    await rig.status.close();
    rig = await makeRig(instantClock());
    const { info, files } = await withTwoSnapshots();
    rig.nova.faults.neverReport = true;
    const started = Date.now();
    await expect(rig.driver.deleteSnapshot(VOL, BBBB, { status: 'in-use' })).rejects.toSatisfy(
      (e) => isCowError(e, 'ECOW_NEEDS_FSCK') && isCowError((e as Error).cause, 'ECOW_NOVA_TIMEOUT'),
    );
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(await readInfo(rig.dir, VOL)).toEqual(info);
    // Nova did move the data (it only failed to say so): nothing is deleted, and a journal of the
    // unfinished delete stays for recovery, which the next operation on the volume runs.
    const journal = `${base}.journal`;
    expect(fs.readdirSync(rig.dir).sort()).toEqual([...files, journal].sort());
    rig.nova.faults.neverReport = false;
    await rig.driver.deleteSnapshot(VOL, BBBB, { status: 'in-use' });
    expect(await readInfo(rig.dir, VOL)).toEqual({ active: fileB, [AAAA]: fileB });
    expect(fs.existsSync(path.join(rig.dir, journal))).toBe(false);
    expect(fs.existsSync(path.join(rig.dir, fileA))).toBe(false);
  });
});
