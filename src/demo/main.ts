#!/usr/bin/env node
/**
 * `npm start`: the seed's docstring, replayed on a temporary directory with cowchain alone (no
 * qemu). A volume gets two snapshots; they are deleted in both orders, first detached (we commit
 * down ourselves) and then attached (a loopback Nova on 127.0.0.1 does the live work while a
 * simulated guest keeps writing). After every step it prints the chain and the info file and
 * checks every remaining snapshot's content against a copy taken when the snapshot was made.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { openImage } from '../image/open-chain.js';
import { VolumeDriver } from '../volume/driver.js';
import { serializeInfo, readInfo } from '../volume/info-file.js';
import { NovaClient } from '../nova/client.js';
import { NovaHypervisor } from '../nova/hypervisor.js';
import { SnapshotStatusStore } from '../nova/status-store.js';
import { startStatusServer } from '../nova/status-endpoint.js';
import { LoopbackNova, type SimulatedGuest } from '../nova/loopback.js';

const SIZE = 8 << 20;
const AAAA = 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa';
const BBBB = 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb';

let passed = 0;
const failures: string[] = [];

function check(ok: boolean, what: string): void {
  if (ok) passed++;
  else failures.push(what);
  console.log(`  ${ok ? 'ok  ' : 'FAIL'} ${what}`);
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}

/** What a snapshot holds: the guest view of the chain below its file. */
function snapshotContent(dir: string, file: string): Uint8Array {
  const top = openImage(path.join(dir, file));
  try {
    return top.backing ? top.backing.read(0, SIZE) : new Uint8Array(SIZE);
  } finally {
    top.close();
  }
}

function activeContent(dir: string, file: string): Uint8Array {
  const img = openImage(path.join(dir, file));
  try {
    return img.read(0, SIZE);
  } finally {
    img.close();
  }
}

/** Write a pattern into the volume's active file, as a guest of a detached volume never would but a test can. */
function writeDetached(dir: string, active: string, offset: number, byte: number): void {
  const img = openImage(path.join(dir, active), { writable: true });
  try {
    img.write(offset, new Uint8Array(1 << 20).fill(byte));
  } finally {
    img.close();
  }
}

async function show(driver: VolumeDriver, volumeId: string, title: string): Promise<void> {
  const d = await driver.volumeInfo(volumeId);
  // Names as the seed draws them: volume-1234.aaaa rather than two full uuids.
  const short = (n: string) => n.replaceAll(volumeId, '1234').replaceAll(AAAA, 'aaaa').replaceAll(BBBB, 'bbbb');
  console.log(`\n${title}`);
  console.log(`  chain: ${[...d.chain].reverse().map((l) => short(l.name)).join(' <- ')}`);
  const info = await readInfo(driver.dir, volumeId);
  console.log(`  info:  ${info ? short(serializeInfo(info)).replace(/\n\s*/g, ' ') : '(no info file)'}`);
}

/** Snapshots still recorded, checked against the copies taken when they were made. */
async function verifySnapshots(driver: VolumeDriver, volumeId: string, recorded: Map<string, Uint8Array>): Promise<void> {
  const info = (await readInfo(driver.dir, volumeId)) ?? { active: `volume-${volumeId}` };
  for (const [snap, content] of recorded) {
    if (!(snap in info)) continue;
    check(same(snapshotContent(driver.dir, info[snap]), content), `snapshot ${snap.slice(0, 4)} still holds what the volume held when it was taken`);
  }
}

async function detached(root: string, volumeId: string, order: 'aaaa-first' | 'bbbb-first'): Promise<void> {
  const dir = fs.mkdtempSync(path.join(root, 'detached-'));
  const driver = new VolumeDriver({ dir });
  const base = `volume-${volumeId}`;
  console.log(`\n=== detached volume (status available), deleting ${order === 'aaaa-first' ? 'aaaa then bbbb' : 'bbbb then aaaa'} ===`);
  await driver.createVolume(volumeId, SIZE, { format: 'raw' });
  writeDetached(dir, base, 0, 0x10);
  await show(driver, volumeId, '1. new volume');

  const recorded = new Map<string, Uint8Array>();
  recorded.set(AAAA, activeContent(dir, base));
  await driver.createSnapshot(volumeId, AAAA, { status: 'available' });
  await show(driver, volumeId, '2. snapshot aaaa: volume-1234.aaaa becomes the active file');
  writeDetached(dir, `${base}.${AAAA}`, 2 << 20, 0x2a);

  recorded.set(BBBB, activeContent(dir, `${base}.${AAAA}`));
  await driver.createSnapshot(volumeId, BBBB, { status: 'available' });
  await show(driver, volumeId, '3. snapshot bbbb: volume-1234.bbbb becomes the active file');
  writeDetached(dir, `${base}.${BBBB}`, 4 << 20, 0x3b);
  const final = activeContent(dir, `${base}.${BBBB}`);
  await verifySnapshots(driver, volumeId, recorded);

  for (const [i, snap] of (order === 'aaaa-first' ? [AAAA, BBBB] : [BBBB, AAAA]).entries()) {
    await driver.deleteSnapshot(volumeId, snap, { status: 'available' });
    recorded.delete(snap);
    await show(driver, volumeId, `${4 + i}. snapshot ${snap.slice(0, 4)} deleted (committed down into its backing file)`);
    await verifySnapshots(driver, volumeId, recorded);
    const info = await readInfo(dir, volumeId);
    check(same(activeContent(dir, info?.active ?? base), final), 'the volume reads exactly as before the delete');
  }
  const info = await readInfo(dir, volumeId);
  check(info !== null && Object.keys(info).length === 1, 'no snapshot is left in the info file');
}

async function attached(root: string, volumeId: string): Promise<void> {
  const dir = fs.mkdtempSync(path.join(root, 'attached-'));
  console.log('\n=== attached volume (status in-use): Nova does the live work (seed step 4) ===');
  const store = new SnapshotStatusStore();
  const status = await startStatusServer({ store, token: 'cinder-demo-token' });
  const nova = new LoopbackNova({ token: 'nova-demo-token', statusUrl: `${status.url}/v3/demo`, statusToken: 'cinder-demo-token', stepBytes: 1 << 20 });
  try {
    const endpoint = await nova.start();
    console.log(`  loopback Nova on ${endpoint}, Cinder status endpoint on ${status.url}`);
    const client = new NovaClient({ endpoint, token: 'nova-demo-token' });
    const driver = new VolumeDriver({ dir, hypervisor: new NovaHypervisor({ client, store, intervals: [{ afterMs: 0, everyMs: 10 }] }) });
    await driver.createVolume(volumeId, SIZE, { format: 'raw' });
    const guest: SimulatedGuest = await nova.attach(volumeId, dir);
    for (let i = 0; i < 4; i++) guest.write();
    await show(driver, volumeId, '1. volume attached, the guest writes');

    const recorded = new Map<string, Uint8Array>();
    recorded.set(AAAA, guest.image.read(0, SIZE));
    await driver.createSnapshot(volumeId, AAAA, { status: 'in-use' });
    await show(driver, volumeId, '2. snapshot aaaa: Nova moves the guest onto volume-1234.aaaa');
    for (let i = 0; i < 4; i++) guest.write();
    recorded.set(BBBB, guest.image.read(0, SIZE));
    await driver.createSnapshot(volumeId, BBBB, { status: 'in-use' });
    await show(driver, volumeId, '3. snapshot bbbb: the guest now writes to volume-1234.bbbb');
    for (let i = 0; i < 4; i++) guest.write();
    await verifySnapshots(driver, volumeId, recorded);

    await driver.deleteSnapshot(volumeId, AAAA, { status: 'in-use' });
    recorded.delete(AAAA);
    await show(driver, volumeId, '4. first snapshot deleted: Nova commits .aaaa into volume-1234 while the guest writes');
    await verifySnapshots(driver, volumeId, recorded);
    await driver.deleteSnapshot(volumeId, BBBB, { status: 'in-use' });
    await show(driver, volumeId, '5. second snapshot deleted: Nova pulls volume-1234 into .bbbb, which stays active');
    const info = await readInfo(dir, volumeId);
    check(JSON.stringify(info) === JSON.stringify({ active: `volume-${volumeId}.${BBBB}` }), "info file is { 'active': 'volume-1234.bbbb' }, as the seed draws it");
    check(
      guest.expected().every((w) => guest.image.read(w.offset, w.length).every((b) => b === w.pattern)),
      `every one of the guest's ${guest.writes.length} writes (made before and during the live operations) is on the disk`,
    );
    await nova.detach(volumeId);
  } finally {
    await nova.stop();
    await status.close();
  }
}

async function main(): Promise<number> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cowchain-demo-'));
  console.log(`cowchain demo — the seed's snapshot lifecycle, in ${root}`);
  console.log(`(names abbreviated as the seed draws them: volume and snapshot ids are UUIDs, e.g. volume-1234.aaaa stands for volume-<volume uuid>.${AAAA})`);
  try {
    await detached(root, '1234aaaa-0000-4000-8000-000000000001', 'aaaa-first');
    await detached(root, '1234bbbb-0000-4000-8000-000000000002', 'bbbb-first');
    await attached(root, '1234cccc-0000-4000-8000-000000000003');
  } catch (e) {
    failures.push(`the demo stopped: ${(e as Error).message}`);
    console.error(e);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
  console.log(
    failures.length === 0
      ? `\nverdict: all ${passed} checks passed — every snapshot kept its content through every delete, detached and attached.`
      : `\nverdict: FAILED — ${failures.length} of ${passed + failures.length} checks failed: ${failures.join('; ')}`,
  );
  return failures.length === 0 ? 0 : 1;
}

main().then((code) => process.exit(code));
