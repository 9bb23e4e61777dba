// Pinned formats (issue 14, part 1): the base image's format is given by the caller or recorded
// at creation (`volume-<vol>.format`), an overlay's is qcow2, and nothing is guessed from a
// file's bytes — a raw volume whose guest wrote a qcow2 header at offset 0 stays raw.
import * as fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { FileBackend } from '../../src/engine/backend.js';
import { isCowError } from '../../src/errors.js';
import { openImage } from '../../src/image/open-chain.js';
import { createQcow2On } from '../../src/image/create.js';
import { VolumeDriver } from '../../src/volume/driver.js';
import { cli, expectCliFailure, fails, ok } from '../support/cli.js';
import { expectSameBytes } from '../support/images.js';
import { qemuImg, qemuInfo, qemuRaw, requireQemu, tmpDir } from '../support/qemu.js';
import { BASE, MiB, SNAP, VOL, VolumeFixture, f } from '../support/volume.js';

requireQemu();

afterEach(() => {
  process.exitCode = undefined;
});

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (e) {
    if (isCowError(e)) return e.code;
    throw e;
  }
}

/** A complete qcow2 header (no backing file), as a guest could write it into sector 0 of its disk. */
function qcow2HeaderBytes(dir: string): Buffer {
  const file = `${dir}/guest-header.qcow2`;
  const b = new FileBackend(file, true, true);
  createQcow2On(b, { format: 'qcow2', size: MiB });
  b.close();
  const bytes = fs.readFileSync(file);
  fs.unlinkSync(file);
  return bytes;
}

/** A raw volume whose guest wrote a qcow2 header at offset 0 (and some data after it). */
async function rawVolumeWithGuestHeader(): Promise<VolumeFixture> {
  const dir = tmpDir('cowchain-format-');
  const v = new VolumeFixture(dir, 2 * MiB);
  await v.createVolume('raw');
  const img = openImage(v.p(BASE), { writable: true, format: 'raw' });
  img.write(0, qcow2HeaderBytes(dir));
  img.write(MiB + 4096, Buffer.alloc(8192, 0x5a));
  img.close();
  expect(qemuInfo(v.p(BASE)).format, 'qemu probes it as qcow2').toBe('qcow2');
  return v;
}

describe('a raw volume whose guest wrote a qcow2 header', () => {
  it('stays raw: attachInfo, the snapshot header, and every read see the guest bytes', async () => {
    const v = await rawVolumeWithGuestHeader();
    const guest = qemuImg(['convert', '-f', 'raw', '-O', 'raw', v.p(BASE), v.p('guest.raw')]).status === 0 ? fs.readFileSync(v.p('guest.raw')) : null;
    expect(guest).not.toBeNull();
    expect(await v.driver.attachInfo(VOL)).toEqual({ volumeId: VOL, activeFile: BASE, format: 'raw' });
    await v.driver.createSnapshot(VOL, SNAP.aaaa, { status: 'available' });
    expect(qemuInfo(v.p(f('aaaa')))['backing-filename-format']).toBe('raw');
    expect(await v.driver.attachInfo(VOL)).toEqual({ volumeId: VOL, activeFile: f('aaaa'), format: 'qcow2' });
    // Through the new overlay the guest reads its own bytes, not zeros (ours and qemu's view).
    expectSameBytes(v.content(), guest!, 'through the overlay (our engine)');
    expectSameBytes(qemuRaw(v.p(f('aaaa')), v.dir), guest!, 'through the overlay (qemu)');
    // The delete commits into the raw base and leaves it byte for byte.
    await v.driver.deleteSnapshot(VOL, SNAP.aaaa, { status: 'available' });
    expect(fs.readFileSync(v.p(BASE)).equals(guest!)).toBe(true);
  });

  it('an overlay recording it as qcow2 (made by a prober) is refused with ECOW_FORMAT_CONFLICT, nothing changed', async () => {
    const v = await rawVolumeWithGuestHeader();
    const overlay = new FileBackend(v.p(f('aaaa')), true, true);
    createQcow2On(overlay, { format: 'qcow2', size: 2 * MiB, backingFile: BASE, backingFormat: 'qcow2' });
    overlay.close();
    fs.writeFileSync(v.infoFile(), JSON.stringify({ active: f('aaaa'), [SNAP.aaaa]: f('aaaa') }));
    const before = fs.readFileSync(v.p(BASE));
    expect(await codeOf(v.driver.attachInfo(VOL))).toBe('ECOW_FORMAT_CONFLICT');
    expect(await codeOf(v.driver.createSnapshot(VOL, SNAP.bbbb, { status: 'available' }))).toBe('ECOW_FORMAT_CONFLICT');
    expect(await codeOf(v.driver.deleteSnapshot(VOL, SNAP.aaaa, { status: 'available' }))).toBe('ECOW_FORMAT_CONFLICT');
    expect(fs.readFileSync(v.p(BASE)).equals(before)).toBe(true);
    expect(fs.existsSync(v.p(f('bbbb')))).toBe(false);
  });

  it("an old Cinder overlay without a backing format reads the base in the volume's format", async () => {
    const v = await rawVolumeWithGuestHeader();
    const guest = fs.readFileSync(v.p(BASE));
    const overlay = new FileBackend(v.p(f('aaaa')), true, true);
    createQcow2On(overlay, { format: 'qcow2', size: 2 * MiB, backingFile: BASE });
    overlay.close();
    fs.writeFileSync(v.infoFile(), JSON.stringify({ active: f('aaaa'), [SNAP.aaaa]: f('aaaa') }));
    expect((await v.driver.volumeInfo(VOL)).chain.map((l) => [l.name, l.format])).toEqual([
      [f('aaaa'), 'qcow2'],
      [BASE, 'raw'],
    ]);
    const out = v.p('flat.raw');
    await v.driver.createVolumeFromSnapshot(VOL, SNAP.aaaa, out);
    expectSameBytes(fs.readFileSync(out), guest, "snapshot aaaa's content");
  });
});

describe('the format record', () => {
  it('is written by createVolume and by clone, checked against the given format, validated', async () => {
    const dir = tmpDir('cowchain-format-');
    const d = new VolumeDriver({ dir });
    await d.createVolume(VOL, MiB, { format: 'qcow2' });
    expect(JSON.parse(fs.readFileSync(`${dir}/${BASE}.format`, 'utf8'))).toEqual({ version: 1, format: 'qcow2' });
    expect(await codeOf(new VolumeDriver({ dir, baseFormat: 'raw' }).attachInfo(VOL))).toBe('ECOW_FORMAT_CONFLICT');
    expect(await new VolumeDriver({ dir, baseFormat: 'qcow2' }).attachInfo(VOL)).toEqual({ volumeId: VOL, activeFile: BASE, format: 'qcow2' });
    expect(await codeOf(new VolumeDriver({ dir, baseFormat: 'raw' }).createVolume(VOL, MiB, { format: 'qcow2' }))).toBe('ECOW_FORMAT_CONFLICT');
    const clone = '77777777-7777-4777-8777-777777777777';
    await d.cloneVolume(VOL, clone, { status: 'available', format: 'raw' });
    expect(JSON.parse(fs.readFileSync(`${dir}/volume-${clone}.format`, 'utf8'))).toEqual({ version: 1, format: 'raw' });
    fs.writeFileSync(`${dir}/${BASE}.format`, JSON.stringify({ version: 1, format: 'vmdk' }));
    expect(await codeOf(d.attachInfo(VOL))).toBe('ECOW_INFO_INVALID');
  });

  it('a volume without one (made by another tool) needs the format given; probing only on request, with a warning', async () => {
    const dir = tmpDir('cowchain-format-');
    qemuImg(['create', '-f', 'raw', `${dir}/${BASE}`, '1M']);
    expect(await codeOf(new VolumeDriver({ dir }).attachInfo(VOL))).toBe('ECOW_FORMAT_UNKNOWN');
    expect(await codeOf(new VolumeDriver({ dir }).createSnapshot(VOL, SNAP.aaaa, { status: 'available' }))).toBe('ECOW_FORMAT_UNKNOWN');
    expect(fs.readdirSync(dir)).toEqual([BASE]);
    const warnings: string[] = [];
    expect((await new VolumeDriver({ dir, probeFormat: true, onWarning: (m) => warnings.push(m) }).attachInfo(VOL)).format).toBe('raw');
    expect(warnings.join('\n')).toMatch(/probed; probing is dangerous for raw images/);
    const r = await new VolumeDriver({ dir, baseFormat: 'raw' }).createSnapshot(VOL, SNAP.aaaa, { status: 'available' });
    expect(r.file).toBe(f('aaaa'));
    expect(qemuInfo(`${dir}/${f('aaaa')}`)['backing-filename-format']).toBe('raw');
    // Once an overlay records the base's format, that record speaks for it.
    expect((await new VolumeDriver({ dir }).volumeInfo(VOL)).chain.map((l) => l.format)).toEqual(['qcow2', 'raw']);
  });

  it('CLI: volume create records --format; --base-format, --probe-format; the codes', async () => {
    const dir = tmpDir('cowchain-format-cli-');
    const at = ['--dir', dir, '--volume', VOL];
    expect(await ok('volume', 'create', ...at, '--size', '1M', '--format', 'qcow2')).toBe(`created ${BASE} (qcow2, 1048576 bytes)\n`);
    expect(JSON.parse(fs.readFileSync(`${dir}/${BASE}.format`, 'utf8')).format).toBe('qcow2');
    await fails('ECOW_FORMAT_CONFLICT', 'snapshot', 'create', ...at, '--snapshot', SNAP.aaaa, '--base-format', 'raw');
    fs.unlinkSync(`${dir}/${BASE}.format`);
    await fails('ECOW_FORMAT_UNKNOWN', 'snapshot', 'create', ...at, '--snapshot', SNAP.aaaa);
    const probed = await cli('volume', 'info', ...at, '--probe-format');
    expect(probed.status).toBe(0);
    expect(probed.stderr).toMatch(/^cowchain: warning: the format of volume-\S+ was not given and is probed/);
    await ok('snapshot', 'create', ...at, '--snapshot', SNAP.aaaa, '--base-format', 'qcow2');
    expect(qemuInfo(`${dir}/${f('aaaa')}`)['backing-filename-format']).toBe('qcow2');
    expectCliFailure(await cli('volume', 'info', ...at, '--base-format', 'vmdk'), 'ECOW_UNKNOWN_FORMAT');
  });
});
