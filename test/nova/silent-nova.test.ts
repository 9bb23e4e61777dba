// A Nova that accepts a request (2xx) and then never reports (issue 14, part 3): the guest may
// already run on the new overlay, or a merge may still be running. Nothing is deleted or
// rewritten; the operation fails with ECOW_NEEDS_FSCK, the journal says `accepted`, and fsck
// decides from the chain — or from --nova-outcome — for both cases: guest moved / not moved.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isCowError } from '../../src/errors.js';
import { NovaClient } from '../../src/nova/client.js';
import { NovaHypervisor } from '../../src/nova/hypervisor.js';
import { LoopbackNova, type SimulatedGuest } from '../../src/nova/loopback.js';
import { startStatusServer, type StatusServer } from '../../src/nova/status-endpoint.js';
import { SnapshotStatusStore, type StatusRejection } from '../../src/nova/status-store.js';
import { VolumeDriver } from '../../src/volume/driver.js';
import { readInfo } from '../../src/volume/info-file.js';
import { fails } from '../support/cli.js';
import { tmpDir } from '../support/qemu.js';

const VOL = '1234abcd-0000-4000-8000-000000000002';
const AAAA = 'aaaaaaaa-0000-4000-8000-00000000000a';
const BBBB = 'bbbbbbbb-0000-4000-8000-00000000000b';
const SIZE = 2 << 20;
const base = `volume-${VOL}`;
const fileA = `${base}.${AAAA}`;
const fileB = `${base}.${BBBB}`;
const journal = `${base}.journal`;

interface Rig {
  dir: string;
  nova: LoopbackNova;
  status: StatusServer;
  driver: VolumeDriver;
  rejections: StatusRejection[];
}

const rigs: Rig[] = [];

/**
 * A volume attached to a loopback Nova. The waits poll every 5 ms and give up after 400 ms, so
 * a silent Nova ends in a time-out quickly. `statusPath` is where Nova reports (Cinder's URL).
 */
async function makeRig(options: { statusToken?: string; statusPath?: string; requestTimeoutMs?: number } = {}): Promise<Rig> {
  const dir = tmpDir('cowchain-silent-');
  const store = new SnapshotStatusStore();
  const rejections: StatusRejection[] = [];
  const status = await startStatusServer({ store, token: 'cinder-secret', onRejected: (r) => rejections.push(r) });
  const nova = new LoopbackNova({ token: 'nova-secret', statusUrl: `${status.url}${options.statusPath ?? '/v3/project'}`, statusToken: options.statusToken ?? 'cinder-secret' });
  const endpoint = await nova.start();
  const client = new NovaClient({ endpoint, token: 'nova-secret', timeoutMs: options.requestTimeoutMs ?? 10_000 });
  const hypervisor = new NovaHypervisor({ client, store, intervals: [{ afterMs: 0, everyMs: 5 }], createTimeoutMs: 400, deleteTimeoutMs: 400 });
  const rig = { dir, nova, status, driver: new VolumeDriver({ dir, hypervisor }), rejections };
  rigs.push(rig);
  return rig;
}

afterEach(async () => {
  for (const r of rigs.splice(0)) {
    await r.nova.stop();
    await r.status.close();
  }
});

async function attached(rig: Rig): Promise<SimulatedGuest> {
  await rig.driver.createVolume(VOL, SIZE, { format: 'raw' });
  const guest = await rig.nova.attach(VOL, rig.dir);
  for (let i = 0; i < 3; i++) guest.write();
  return guest;
}

function listing(rig: Rig): string[] {
  return fs.readdirSync(rig.dir).sort();
}

function journalOf(rig: Rig): Record<string, unknown> {
  return JSON.parse(fs.readFileSync(path.join(rig.dir, journal), 'utf8')) as Record<string, unknown>;
}

async function needsFsck(p: Promise<unknown>, cause?: string): Promise<void> {
  await expect(p).rejects.toSatisfy((e) => isCowError(e, 'ECOW_NEEDS_FSCK') && (cause === undefined || isCowError((e as Error).cause, cause as never)));
}

/** Every write the guest made reads back through the chain it runs on. */
function expectGuestIntact(guest: SimulatedGuest): void {
  for (const w of guest.expected()) expect(guest.image.read(w.offset, w.length).every((b) => b === w.pattern), `write at ${w.offset}`).toBe(true);
}

describe('create accepted, never reported', () => {
  it('guest not moved: the overlay survives, other operations refuse, fsck --nova-outcome failed removes it', async () => {
    const rig = await makeRig();
    const guest = await attached(rig);
    rig.nova.faults.acceptOnly = true;
    await needsFsck(rig.driver.createSnapshot(VOL, AAAA, { status: 'in-use' }), 'ECOW_NOVA_TIMEOUT');
    expect(listing(rig)).toContain(fileA);
    expect(journalOf(rig)).toMatchObject({ op: 'create-snapshot', snapshot: AAAA, phase: 'hypervisor', accepted: true });
    expect(await readInfo(rig.dir, VOL)).toBeNull();
    const files = listing(rig);
    // The next operation on the attached volume refuses to guess, and changes nothing.
    await needsFsck(rig.driver.createSnapshot(VOL, BBBB, { status: 'in-use' }));
    expect(listing(rig)).toEqual(files);
    // fsck without the outcome shows the evidence and leaves everything.
    const report = await rig.driver.fsck(VOL, { status: 'in-use' });
    expect(report.problems.join('\n')).toMatch(/Nova accepted the request and never reported its outcome; \S+ holds no data/);
    expect(listing(rig)).toEqual(files);
    // The operator knows Nova failed: the overlay goes, the guest is untouched.
    const fixed = await rig.driver.fsck(VOL, { status: 'in-use', novaOutcome: 'failed' });
    expect(fixed.problems).toEqual([]);
    expect(listing(rig)).not.toContain(fileA);
    expect(listing(rig)).not.toContain(journal);
    expect(guest.chainNames()).toEqual([base]);
    expectGuestIntact(guest);
  });

  it('guest moved and wrote: the overlay is kept and fsck (no outcome needed) records it as active', async () => {
    const rig = await makeRig();
    const guest = await attached(rig);
    rig.nova.faults.neverReport = true;
    await needsFsck(rig.driver.createSnapshot(VOL, AAAA, { status: 'in-use' }), 'ECOW_NOVA_TIMEOUT');
    await rig.nova.idle();
    expect(guest.chainNames()).toEqual([fileA, base]);
    expect(fs.existsSync(path.join(rig.dir, fileA))).toBe(true);
    guest.write();
    guest.image.flush(); // what the files show; until qemu flushes, its new L2 entries are in its memory
    const report = await rig.driver.fsck(VOL, { status: 'in-use' });
    expect(report.problems).toEqual([]);
    expect(report.actions.map((a) => a.detail).join('\n')).toMatch(/adopted/);
    expect(await readInfo(rig.dir, VOL)).toEqual({ active: fileA, [AAAA]: fileA });
    expectGuestIntact(guest);
  });

  it('guest moved, wrote nothing: fsck cannot tell and refuses; --nova-outcome done records it; --nova-outcome failed is refused', async () => {
    const rig = await makeRig();
    const guest = await attached(rig);
    rig.nova.faults.neverReport = true;
    rig.nova.faults.quietGuest = true;
    await needsFsck(rig.driver.createSnapshot(VOL, AAAA, { status: 'in-use' }));
    await rig.nova.idle();
    expect(guest.chainNames()).toEqual([fileA, base]);
    expect((await rig.driver.fsck(VOL, { status: 'in-use' })).problems.join('\n')).toMatch(/ECOW_NEEDS_FSCK/);
    expect(fs.existsSync(path.join(rig.dir, fileA))).toBe(true);
    const done = await rig.driver.fsck(VOL, { status: 'in-use', novaOutcome: 'done' });
    expect(done.problems).toEqual([]);
    expect(await readInfo(rig.dir, VOL)).toEqual({ active: fileA, [AAAA]: fileA });
    // Now the guest writes; everything it wrote is in the recorded chain.
    guest.write();
    expectGuestIntact(guest);
    expect((await rig.driver.volumeInfo(VOL)).chain.map((l) => l.name)).toEqual([fileA, base]);
  });

  it('a guest that wrote into the overlay is never removed, even when told --nova-outcome failed', async () => {
    const rig = await makeRig();
    const guest = await attached(rig);
    rig.nova.faults.neverReport = true;
    await needsFsck(rig.driver.createSnapshot(VOL, AAAA, { status: 'in-use' }));
    await rig.nova.idle();
    guest.image.flush();
    const r = await rig.driver.fsck(VOL, { status: 'in-use', novaOutcome: 'failed' });
    expect(r.problems.join('\n')).toMatch(/holds data/);
    expect(fs.existsSync(path.join(rig.dir, fileA))).toBe(true);
    expectGuestIntact(guest);
  });
});

describe('a request Nova acted on whose answer was lost (the client timed out)', () => {
  it('create: Nova\'s status report still completes it; the guest runs on the recorded overlay', async () => {
    const rig = await makeRig({ requestTimeoutMs: 150 });
    const guest = await attached(rig);
    rig.nova.faults.loseAnswers = true;
    await rig.driver.createSnapshot(VOL, AAAA, { status: 'in-use' });
    expect(await readInfo(rig.dir, VOL)).toEqual({ active: fileA, [AAAA]: fileA });
    expect(listing(rig)).not.toContain(journal);
    expect(guest.chainNames()).toEqual([fileA, base]);
    guest.write();
    expectGuestIntact(guest);
  });

  it('create, and no report either: the overlay the guest moved onto is kept (it used to be removed), fsck adopts it', async () => {
    const rig = await makeRig({ requestTimeoutMs: 150 });
    const guest = await attached(rig);
    rig.nova.faults.loseAnswers = true;
    rig.nova.faults.neverReport = true;
    await needsFsck(rig.driver.createSnapshot(VOL, AAAA, { status: 'in-use' }), 'ECOW_NOVA_TIMEOUT');
    await rig.nova.idle();
    expect(guest.chainNames()).toEqual([fileA, base]);
    expect(listing(rig)).toContain(fileA);
    expect(journalOf(rig)).toMatchObject({ op: 'create-snapshot', snapshot: AAAA, accepted: true });
    guest.image.flush();
    const report = await rig.driver.fsck(VOL, { status: 'in-use' });
    expect(report.problems).toEqual([]);
    expect(await readInfo(rig.dir, VOL)).toEqual({ active: fileA, [AAAA]: fileA });
    expectGuestIntact(guest);
  });

  it('delete: the merge Nova ran and reported completes the delete', async () => {
    const rig = await makeRig({ requestTimeoutMs: 150 });
    const guest = await attached(rig);
    await rig.driver.createSnapshot(VOL, AAAA, { status: 'in-use' });
    guest.write();
    await rig.driver.createSnapshot(VOL, BBBB, { status: 'in-use' });
    guest.write();
    rig.nova.faults.loseAnswers = true;
    await rig.driver.deleteSnapshot(VOL, AAAA, { status: 'in-use' });
    expect(await readInfo(rig.dir, VOL)).toEqual({ active: fileB, [BBBB]: fileB });
    expect(listing(rig)).not.toContain(journal);
    expectGuestIntact(guest);
  });

  it('a request that never left (nothing listens) is no acceptance: the overlay is removed, nothing kept', async () => {
    const rig = await makeRig({ requestTimeoutMs: 150 });
    await attached(rig);
    const before = listing(rig);
    await rig.nova.stop();
    await expect(rig.driver.createSnapshot(VOL, AAAA, { status: 'in-use' })).rejects.toSatisfy((e) => isCowError(e, 'ECOW_NOVA_UNAVAILABLE'));
    expect(listing(rig)).toEqual(before);
  });
});

describe('delete accepted, never reported', () => {
  async function twoSnapshots(rig: Rig): Promise<SimulatedGuest> {
    const guest = await attached(rig);
    await rig.driver.createSnapshot(VOL, AAAA, { status: 'in-use' });
    guest.write();
    await rig.driver.createSnapshot(VOL, BBBB, { status: 'in-use' });
    guest.write();
    return guest;
  }

  it('merge not done: nothing changes, the next delete refuses, fsck --nova-outcome failed drops the journal; the delete then works', async () => {
    const rig = await makeRig();
    const guest = await twoSnapshots(rig);
    const info = await readInfo(rig.dir, VOL);
    const files = listing(rig);
    rig.nova.faults.acceptOnly = true;
    await needsFsck(rig.driver.deleteSnapshot(VOL, AAAA, { status: 'in-use' }), 'ECOW_NOVA_TIMEOUT');
    expect(journalOf(rig)).toMatchObject({ op: 'delete-snapshot', snapshot: AAAA, accepted: true });
    expect(listing(rig)).toEqual([...files, journal].sort());
    await needsFsck(rig.driver.deleteSnapshot(VOL, AAAA, { status: 'in-use' }));
    const report = await rig.driver.fsck(VOL, { status: 'in-use' });
    expect(report.problems.join('\n')).toMatch(/Nova accepted the merge and never reported its outcome/);
    expect(listing(rig)).toEqual([...files, journal].sort());
    expect(await readInfo(rig.dir, VOL)).toEqual(info);
    // told the merge failed but the headers show nothing moved: the snapshot is kept.
    const told = await rig.driver.fsck(VOL, { status: 'in-use', novaOutcome: 'failed' });
    expect(told.problems).toEqual([]);
    expect(listing(rig)).toEqual(files);
    rig.nova.faults.acceptOnly = false;
    await rig.driver.deleteSnapshot(VOL, AAAA, { status: 'in-use' });
    expect(await readInfo(rig.dir, VOL)).toEqual({ active: fileB, [BBBB]: fileB });
    expectGuestIntact(guest);
  });

  it('--nova-outcome done while the headers show no merge is refused, nothing changed', async () => {
    const rig = await makeRig();
    await twoSnapshots(rig);
    rig.nova.faults.acceptOnly = true;
    await needsFsck(rig.driver.deleteSnapshot(VOL, AAAA, { status: 'in-use' }));
    const files = listing(rig);
    const r = await rig.driver.fsck(VOL, { status: 'in-use', novaOutcome: 'done' });
    expect(r.problems.join('\n')).toMatch(/ECOW_INVALID_STATE.*do not show the merge done/);
    expect(listing(rig)).toEqual(files);
  });
});

describe('status reports the endpoint refuses', () => {
  it('a wrong token: the wait ends at once with ECOW_STATUS_REJECTED (then ECOW_NEEDS_FSCK), and the rejection is reported', async () => {
    const rig = await makeRig({ statusToken: 'wrong' });
    await attached(rig);
    await needsFsck(rig.driver.createSnapshot(VOL, AAAA, { status: 'in-use' }), 'ECOW_STATUS_REJECTED');
    expect(rig.rejections).toContainEqual(expect.objectContaining({ httpStatus: 401, snapshotId: AAAA }));
  });

  it('an unknown URL (404) is reported too', async () => {
    const rig = await makeRig({ statusPath: '/v2/project' });
    await attached(rig);
    await needsFsck(rig.driver.createSnapshot(VOL, AAAA, { status: 'in-use' }), 'ECOW_STATUS_REJECTED');
    expect(rig.rejections).toContainEqual(expect.objectContaining({ httpStatus: 404, snapshotId: AAAA }));
  });

  it("Cinder's project-less /v3/snapshots/{id}/action (API 3.67) is accepted", async () => {
    const rig = await makeRig({ statusPath: '/v3' });
    const guest = await attached(rig);
    await rig.driver.createSnapshot(VOL, AAAA, { status: 'in-use' });
    expect(await readInfo(rig.dir, VOL)).toEqual({ active: fileA, [AAAA]: fileA });
    expect(rig.rejections).toEqual([]);
    expectGuestIntact(guest);
  });
});

describe('CLI', () => {
  it('--nova-create-timeout / --nova-delete-timeout / --nova-outcome are validated; in-use without Nova names the options', async () => {
    const dir = tmpDir('cowchain-silent-cli-');
    const at = ['--dir', dir, '--volume', VOL];
    await new VolumeDriver({ dir }).createVolume(VOL, SIZE);
    expect(await fails('ECOW_BAD_ARGUMENT', 'snapshot', 'create', ...at, '--snapshot', AAAA, '--nova-create-timeout', '0')).toMatch(/--nova-create-timeout "0": expected a number of seconds above 0/);
    expect(await fails('ECOW_BAD_ARGUMENT', 'snapshot', 'delete', ...at, '--snapshot', AAAA, '--nova-delete-timeout', '10m')).toMatch(/--nova-delete-timeout "10m"/);
    expect(await fails('ECOW_BAD_ARGUMENT', 'volume', 'fsck', ...at, '--nova-outcome', 'maybe')).toMatch(/--nova-outcome must be done or failed/);
    expect(await fails('ECOW_HYPERVISOR_UNAVAILABLE', 'snapshot', 'create', ...at, '--snapshot', AAAA, '--status', 'in-use')).toMatch(/--nova-endpoint and --status-listen/);
    expect(listingOf(dir)).toEqual(['.cinderSecureEnvIndicator', base, `${base}.format`]);
  });
});

function listingOf(dir: string): string[] {
  return fs.readdirSync(dir).sort();
}
