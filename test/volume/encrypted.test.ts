// Encrypted volumes (issue 18): the seed's lifecycle on a volume whose every image is a LUKS
// qcow2 keyed by the volume's one secret, as Cinder's encrypted volume types make them. qemu-img
// is the referee: every snapshot's content as `qemu-img convert --object secret,… --image-opts …`
// reads it, every file clean under `qemu-img check` with the secret. A missing or wrong secret
// fails with its own code before any file changes, and the secret's bytes appear in no file the
// driver writes (info file, journal, images) and in no message.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { VolumeDriver } from '../../src/volume/driver.js';
import { openImage } from '../../src/image/open-chain.js';
import { requireQemu, qemuImg, tmpDir } from '../support/qemu.js';
import { expectSameBytes } from '../support/images.js';
import { codeOf, rejection, rejectionCode } from '../support/errors.js';
import { cli, expectCliFailure } from '../support/cli.js';
import { BASE, OTHER_VOL, SNAP, VOL, VolumeFixture, f, infoOf, type FixtureKey } from '../support/volume.js';

requireQemu();

/** A passphrase no file or message has any business containing. */
const SECRET = Buffer.from('volume key 7f3c9e21 do-not-leak');
let root: string;
let key: FixtureKey;

/** The seeded volume, its snapshots taken with engine jobs in workers and in this thread. */
let seeded: { workers: VolumeFixture; thread: VolumeFixture };

beforeAll(async () => {
  root = tmpDir('cowchain-encrypted-');
  key = { secret: SECRET, file: path.join(root, 'volume.key') };
  fs.writeFileSync(key.file, SECRET);
  seeded = { workers: await seedEncrypted(false), thread: await seedEncrypted(true) };
});

/** `inThread`: engine jobs in this thread (as the CLI runs them), on the chains the driver opened; else in an engine pool. */
async function seedEncrypted(inThread = false): Promise<VolumeFixture> {
  const v = new VolumeFixture(fs.mkdtempSync(path.join(root, 'vol-')), 4 << 20, inThread ? { jobs: undefined } : {}, VOL, key);
  await v.createVolume();
  v.write();
  await v.snap('aaaa');
  v.write();
  await v.snap('bbbb');
  v.write();
  v.expectChain([f('bbbb'), f('aaaa'), BASE]);
  v.expectSnapshotsIntact();
  v.expectAllClean();
  return v;
}

/** A fresh copy of the seeded volume (checked once, in beforeAll), jobs as `seedEncrypted`'s `inThread`. */
function seededCopy(inThread = false): VolumeFixture {
  return seeded[inThread ? 'thread' : 'workers'].copyTo(fs.mkdtempSync(path.join(root, 'vol-')), inThread ? { jobs: undefined } : {});
}

/** Every file of `dir` by name → sha256 of its bytes: "nothing changed" is this map unchanged. */
function fingerprint(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of fs.readdirSync(dir).sort()) out[n] = crypto.createHash('sha256').update(fs.readFileSync(path.join(dir, n))).digest('hex');
  return out;
}

describe('the seed lifecycle on an encrypted volume, refereed by qemu-img with the secret', () => {
  for (const inThread of [false, true]) {
    it(`create snapshots; delete the non-active one, then the active one (commit down, rebase); jobs ${inThread ? 'in this thread' : 'in workers'}`, async () => {
      const v = seededCopy(inThread);
      const now = v.content();
      expect(await v.del('aaaa')).toMatchObject({ outcome: 'deleted', removed: [f('aaaa')] });
      v.expectInfo(infoOf(f('bbbb'), { bbbb: f('bbbb') }));
      v.expectChain([f('bbbb'), BASE]);
      v.expectSnapshotsIntact();
      v.expectContent(now);
      v.expectAllClean();
      expect(await v.del('bbbb')).toMatchObject({ outcome: 'deleted', removed: [f('bbbb')] });
      v.expectInfo(infoOf(BASE, {}));
      v.expectChain([BASE]);
      v.expectContent(now);
      v.expectAllClean();
    });

    it(`volume from a snapshot, jobs ${inThread ? 'in this thread' : 'in workers'}: encrypted qcow2 with the content qemu reads`, async () => {
      const v = seededCopy(inThread);
      const out = v.p('from-bbbb.qcow2');
      expect(await v.driver.createVolumeFromSnapshot(VOL, SNAP.bbbb, out)).toMatchObject({ format: 'qcow2' });
      expectSameBytes(v.qemuGuest(out), v.recorded.get(SNAP.bbbb)!, 'volume from snapshot bbbb (qemu-img convert)');
      const r = qemuImg(['check', ...v.qemuTarget(out, 1)], { ok: [0, 1, 2, 3] });
      expect(r.status, r.stdout + r.stderr).toBe(0);
    });
  }

  it('delete the active snapshot first, then the other', async () => {
    const v = seededCopy();
    const now = v.content();
    await v.del('bbbb');
    v.expectInfo(infoOf(f('aaaa'), { aaaa: f('aaaa') }));
    v.expectChain([f('aaaa'), BASE]);
    v.expectSnapshotsIntact();
    v.expectContent(now);
    await v.del('aaaa');
    v.expectChain([BASE]);
    v.expectContent(now);
    v.expectAllClean();
  });

  it('volume from a snapshot and a clone are encrypted qcow2 with the content qemu reads', async () => {
    const v = seededCopy();
    const out = v.p('from-aaaa.qcow2');
    expect(await v.driver.createVolumeFromSnapshot(VOL, SNAP.aaaa, out)).toMatchObject({ format: 'qcow2' });
    expect(JSON.parse(qemuImg(['info', '--output=json', out]).stdout).encrypted).toBe(true);
    expectSameBytes(v.qemuGuest(out), v.recorded.get(SNAP.aaaa)!, 'volume from snapshot aaaa (qemu-img convert)');
    const r = qemuImg(['check', ...v.qemuTarget(out, 1)], { ok: [0, 1, 2, 3] });
    expect(r.status, r.stdout + r.stderr).toBe(0);

    // The clone is keyed by the new volume's secret (here another one).
    const otherKey = Buffer.from('clone key 51aa');
    const otherFile = path.join(root, 'other.key');
    fs.writeFileSync(otherFile, otherKey);
    const driver = new VolumeDriver({ dir: v.dir, encryption: { keySecret: (id) => (id === VOL ? SECRET : id === OTHER_VOL ? otherKey : undefined), iterTimeMs: 10 } });
    const now = v.content();
    expect(await driver.cloneVolume(VOL, OTHER_VOL, { status: 'available' })).toMatchObject({ format: 'qcow2', volumeId: OTHER_VOL });
    const clone = v.p(`volume-${OTHER_VOL}`);
    const clonedByQemu = new VolumeFixture(v.dir, v.size, {}, OTHER_VOL, { secret: otherKey, file: otherFile });
    expectSameBytes(clonedByQemu.qemuGuest(clone), now, 'clone (qemu-img convert with the new volume key)');
    expect(codeOf(() => openImage(clone, { keySecrets: () => SECRET }))).toBe('ECOW_BAD_SECRET');
    // The temporary snapshot is gone again; the source's chain is as before.
    v.expectChain([f('bbbb'), f('aaaa'), BASE]);
    v.expectAllClean();
  });

  it('revert to the latest snapshot and extend: a fresh encrypted overlay, the grown size', async () => {
    const v = seededCopy();
    await v.driver.revertToSnapshot(VOL, SNAP.bbbb, { status: 'available' });
    v.expectContent(v.recorded.get(SNAP.bbbb)!);
    await v.driver.extendVolume(VOL, 8 << 20, { status: 'available' });
    const grown = Buffer.concat([v.recorded.get(SNAP.bbbb)!, Buffer.alloc(4 << 20)]);
    v.expectContent(grown);
    v.write();
    v.expectAllClean();
    expect(await v.driver.fsck(VOL)).toMatchObject({ problems: [] });
  });
});

describe('a missing or wrong secret', () => {
  it('is ECOW_KEY_REQUIRED / ECOW_BAD_SECRET before any file changes, for every operation', async () => {
    const v = seededCopy();
    const before = fingerprint(v.dir);
    const missing = new VolumeDriver({ dir: v.dir });
    const noKeyForIt = new VolumeDriver({ dir: v.dir, encryption: { keySecret: () => undefined } });
    const wrong = new VolumeDriver({ dir: v.dir, encryption: { keySecret: () => Buffer.from('not the key') } });
    const ops = (d: VolumeDriver) => [
      () => d.createSnapshot(VOL, SNAP.cccc, { status: 'available' }),
      () => d.deleteSnapshot(VOL, SNAP.aaaa, { status: 'available' }),
      () => d.deleteSnapshot(VOL, SNAP.bbbb, { status: 'available' }),
      () => d.createVolumeFromSnapshot(VOL, SNAP.aaaa, v.p('out.qcow2')),
      () => d.cloneVolume(VOL, OTHER_VOL, { status: 'available' }),
      () => d.revertToSnapshot(VOL, SNAP.bbbb, { status: 'available' }),
    ];
    for (const [d, code] of [
      [missing, 'ECOW_KEY_REQUIRED'],
      [noKeyForIt, 'ECOW_KEY_REQUIRED'],
      [wrong, 'ECOW_BAD_SECRET'],
    ] as const) {
      for (const op of ops(d)) {
        expect(await rejectionCode(op()), String(op)).toBe(code);
        expect(fingerprint(v.dir)).toEqual(before);
      }
    }
    // Without the key the volume is still described (as qemu-img info describes it).
    const described = await missing.volumeInfo(VOL);
    expect(described.chain.map((l) => [l.name, l.encrypted])).toEqual([
      [f('bbbb'), true],
      [f('aaaa'), true],
      [BASE, true],
    ]);
    // A clone whose new volume has no key is refused before the temporary snapshot.
    const halfKeyed = new VolumeDriver({ dir: v.dir, encryption: { keySecret: (id) => (id === VOL ? SECRET : undefined) } });
    expect(await rejectionCode(halfKeyed.cloneVolume(VOL, OTHER_VOL, { status: 'available' }))).toBe('ECOW_KEY_REQUIRED');
    expect(fingerprint(v.dir)).toEqual(before);
  });

  it('a provider answer that is not bytes, and an encryption option that is not one, are ECOW_BAD_ARGUMENT', async () => {
    const v = seededCopy();
    const bad = new VolumeDriver({ dir: v.dir, encryption: { keySecret: () => 'a string' as unknown as Uint8Array } });
    const err = await rejection(bad.createSnapshot(VOL, SNAP.cccc, { status: 'available' }), 'ECOW_BAD_ARGUMENT');
    expect(err.message).not.toContain('a string');
    expect(codeOf(() => new VolumeDriver({ dir: v.dir, encryption: { keySecret: SECRET as never } }))).toBe('ECOW_BAD_ARGUMENT');
    expect(codeOf(() => new VolumeDriver({ dir: v.dir, encryption: { keySecret: () => SECRET, iterTimeMs: -1 } }))).toBe('ECOW_BAD_ARGUMENT');
  });
});

describe('the secret stays secret', () => {
  it('appears in no file the driver writes (journal, info file, images) and in no message', async () => {
    const dir = fs.mkdtempSync(path.join(root, 'leak-'));
    const seen: string[] = [];
    const journals: Buffer[] = [];
    const v = new VolumeFixture(dir, 4 << 20, {
      onNotice: (m) => seen.push(m),
      onWarning: (m) => seen.push(m),
      // Every journal as it stands at each durable point of a create or delete.
      onStep: () => {
        const j = path.join(dir, `${BASE}.journal`);
        if (fs.existsSync(j)) journals.push(fs.readFileSync(j));
      },
    }, VOL, key);
    await v.createVolume();
    v.write();
    await v.snap('aaaa');
    v.write();
    await v.snap('bbbb');
    await v.del('aaaa');
    await v.snap('cccc');
    await v.del('cccc');
    await v.driver.createVolumeFromSnapshot(VOL, SNAP.bbbb, v.p('copy.qcow2'));
    expect(journals.length).toBeGreaterThan(0);
    // Failures: each message, with its causes.
    const failures: unknown[] = [];
    for (const d of [new VolumeDriver({ dir }), new VolumeDriver({ dir, encryption: { keySecret: () => Buffer.from(`${SECRET}x`) } })]) {
      failures.push(await d.createSnapshot(VOL, SNAP.dddd, { status: 'available' }).catch((e: unknown) => e));
      failures.push(await d.deleteSnapshot(VOL, SNAP.bbbb, { status: 'available' }).catch((e: unknown) => e));
    }
    for (let e = failures.shift(); e !== undefined; e = failures.shift()) {
      expect(e).toBeInstanceOf(Error);
      seen.push((e as Error).message, (e as Error).stack ?? '');
      if ((e as Error).cause) failures.push((e as Error).cause);
    }
    const needle = SECRET.toString('latin1');
    for (const m of seen) expect(m).not.toContain(needle);
    for (const j of journals) expect(j.includes(SECRET)).toBe(false);
    const written = fs.readdirSync(dir);
    expect(written).toContain(`${BASE}.info`);
    for (const n of written) expect(fs.readFileSync(path.join(dir, n)).includes(SECRET), n).toBe(false);
    v.expectAllClean(); // and every image is encrypted (qemu-img info says so)
  });
});

describe('the CLI takes the volume key the qemu-img way', () => {
  it('--object secret,id=…,file=… with --key-secret: create, snapshot, delete, from-snapshot; never prints the secret', async () => {
    const dir = fs.mkdtempSync(path.join(root, 'cli-'));
    const at = ['--dir', dir, '--volume', VOL];
    const keyed = [...at, '--object', `secret,id=vk,file=${key.file}`, '--key-secret', 'vk', '--encrypt-iter-time', '10'];
    const outputs: string[] = [];
    const run = async (...argv: string[]) => {
      const r = await cli(...argv);
      outputs.push(r.stdout, r.stderr);
      return r;
    };
    expect((await run('volume', 'create', ...keyed, '--size', '1M', '--encrypt')).stdout).toContain('(qcow2, encrypted, 1048576 bytes)');
    expect(await run('snapshot', 'create', ...keyed, '--snapshot', SNAP.aaaa)).toMatchObject({ status: 0, stderr: '' });
    expect(await run('snapshot', 'create', ...keyed, '--snapshot', SNAP.bbbb)).toMatchObject({ status: 0, stderr: '' });
    // Without the key: its own code, nothing changed; info still describes the volume.
    const before = fingerprint(dir);
    expectCliFailure(await run('snapshot', 'delete', ...at, '--snapshot', SNAP.aaaa), 'ECOW_KEY_REQUIRED');
    const wrongFile = path.join(root, 'wrong.key');
    fs.writeFileSync(wrongFile, 'wrong');
    expectCliFailure(await run('snapshot', 'delete', ...at, '--object', `secret,id=vk,file=${wrongFile}`, '--key-secret', 'vk', '--snapshot', SNAP.aaaa), 'ECOW_BAD_SECRET');
    expectCliFailure(await run('snapshot', 'delete', ...at, '--key-secret', 'nope', '--snapshot', SNAP.aaaa), 'ECOW_BAD_ARGUMENT');
    expect(fingerprint(dir)).toEqual(before);
    expect((await run('volume', 'info', ...at)).stdout).toContain(`${BASE} (qcow2, encrypted, 1048576 bytes)`);

    expect(await run('snapshot', 'delete', ...keyed, '--snapshot', SNAP.aaaa)).toMatchObject({ status: 0, stderr: '' });
    const out = path.join(dir, 'copy.qcow2');
    expect((await run('volume', 'from-snapshot', ...keyed, '--snapshot', SNAP.bbbb, '--out', out)).stdout).toContain('(qcow2, ');
    const r = qemuImg(['check', '--object', `secret,id=sec0,file=${key.file}`, '--image-opts', `driver=qcow2,file.filename=${out},encrypt.key-secret=sec0`], { ok: [0, 1, 2, 3] });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    for (const o of outputs) expect(o).not.toContain(SECRET.toString('latin1'));
  });
});
