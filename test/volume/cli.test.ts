// `cowchain volume …` / `cowchain snapshot …` through main(): output (human and JSON), exit
// statuses, and the error contract (exit 1, one stderr line `cowchain: ECOW_…: message`).
import * as fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { rebaseImage } from '../../src/image/rebase.js';
import { serializeInfo } from '../../src/volume/info-file.js';
import { cli, fails, ok } from '../support/cli.js';
import { expectSameBytes } from '../support/images.js';
import { qemuInfo, qemuRaw, requireQemu, tmpDir } from '../support/qemu.js';
import { BASE, OTHER_VOL, SNAP, VOL, VolumeFixture, f, infoOf } from '../support/volume.js';

requireQemu();

afterEach(() => {
  process.exitCode = undefined;
});

describe('cowchain volume / snapshot', () => {
  it('walks a volume through its life: create, snapshots, info, from-snapshot, clone, extend, revert, deletes', async () => {
    const dir = tmpDir('cowchain-cli-');
    const v = new VolumeFixture(dir, 2 << 20);
    const at = ['--dir', dir, '--volume', VOL];
    expect(await ok('volume', 'create', ...at, '--size', '2M')).toBe(`created ${BASE} (raw, 2097152 bytes)\n`);
    v.write();
    expect(await ok('snapshot', 'create', ...at, '--snapshot', SNAP.aaaa, '--status', 'available')).toBe(
      `snapshot ${SNAP.aaaa}: ${f('aaaa')} (on ${BASE}) is the active file\n`,
    );
    v.recorded.set(SNAP.aaaa, qemuRaw(v.p(BASE), dir));
    v.write();
    const created = JSON.parse(await ok('snapshot', 'create', ...at, '--snapshot', SNAP.bbbb, '--status', 'available', '--output', 'json'));
    expect(created).toEqual({ snapshotId: SNAP.bbbb, file: f('bbbb'), backing: f('aaaa'), info: infoOf(f('bbbb'), { aaaa: f('aaaa'), bbbb: f('bbbb') }) });
    v.expectInfo(infoOf(f('bbbb'), { aaaa: f('aaaa'), bbbb: f('bbbb') }));

    const info = JSON.parse(await ok('volume', 'info', ...at, '--output', 'json'));
    expect(info).toEqual(await v.driver.volumeInfo(VOL));
    expect(await ok('volume', 'info', ...at)).toBe(
      [
        `volume: ${VOL}`,
        `active: ${f('bbbb')}`,
        'snapshots:',
        `  ${SNAP.aaaa}: ${f('aaaa')}`,
        `  ${SNAP.bbbb}: ${f('bbbb')}`,
        'chain:',
        `  ${f('bbbb')} (qcow2, 2097152 bytes) -> ${f('aaaa')} (qcow2)`,
        `  ${f('aaaa')} (qcow2, 2097152 bytes) -> ${BASE} (raw)`,
        `  ${BASE} (raw, 2097152 bytes)`,
        '',
      ].join('\n'),
    );

    const out = v.p('from-aaaa.qcow2');
    expect(await ok('volume', 'from-snapshot', ...at, '--snapshot', SNAP.aaaa, '--out', out, '--format', 'qcow2', '--size', '3M')).toBe(`created ${out} (qcow2, 3145728 bytes)\n`);
    expectSameBytes(qemuRaw(out, dir).subarray(0, 2 << 20), v.recorded.get(SNAP.aaaa)!, 'from-snapshot');

    const now = v.content();
    expect(await ok('volume', 'clone', ...at, '--to', OTHER_VOL)).toBe(`cloned into ${v.p(`volume-${OTHER_VOL}`)} (raw, 2097152 bytes)\n`);
    expectSameBytes(qemuRaw(v.p(`volume-${OTHER_VOL}`), dir), now, 'clone');

    expect(await ok('volume', 'revert', ...at, '--snapshot', SNAP.bbbb)).toBe(`reverted: ${f('bbbb')} is a fresh overlay\n`);
    expect(await ok('volume', 'extend', ...at, '--size', '4M')).toBe(`extended ${f('bbbb')} to 4194304 bytes\n`);
    expect(qemuInfo(v.p(f('bbbb')))['virtual-size']).toBe(4 << 20);

    expect(await ok('snapshot', 'delete', ...at, '--snapshot', SNAP.aaaa, '--status', 'available')).toBe(
      `snapshot ${SNAP.aaaa} deleted (removed ${f('aaaa')}); active: ${f('bbbb')}\n`,
    );
    expect(await ok('snapshot', 'delete', ...at, '--snapshot', SNAP.aaaa, '--status', 'available')).toBe(`snapshot ${SNAP.aaaa} not found: nothing to do\n`);
    expect(fs.readFileSync(v.infoFile(), 'utf8')).toBe(serializeInfo(infoOf(f('bbbb'), { bbbb: f('bbbb') })));
    expect(await ok('volume', 'fsck', ...at)).toBe('clean\n');
    const fsck = JSON.parse(await ok('volume', 'fsck', ...at, '--output', 'json'));
    expect(fsck).toMatchObject({ volumeId: VOL, clean: true, actions: [], problems: [] });

    expect(await ok('volume', 'delete', ...at)).toBe([BASE, f('bbbb'), `${BASE}.format`, `${BASE}.info`].map((n) => `removed ${n}\n`).join(''));
    expect(await ok('volume', 'delete', ...at)).toBe('nothing to remove\n');
  });

  it('fails with one line and a code, and exit 2 for bad usage', async () => {
    const dir = tmpDir('cowchain-cli-');
    const at = ['--dir', dir, '--volume', VOL];
    await ok('volume', 'create', ...at, '--size', '1M', '--format', 'qcow2');
    await ok('snapshot', 'create', ...at, '--snapshot', SNAP.aaaa, '--status', 'available');
    const before = fs.readdirSync(dir).sort();
    await fails('ECOW_HYPERVISOR_UNAVAILABLE', 'snapshot', 'create', ...at, '--snapshot', SNAP.bbbb, '--status', 'in-use');
    await fails('ECOW_HYPERVISOR_UNAVAILABLE', 'snapshot', 'delete', ...at, '--snapshot', SNAP.aaaa, '--status', 'in-use');
    await fails('ECOW_BAD_ARGUMENT', 'snapshot', 'create', ...at, '--snapshot', SNAP.bbbb, '--status', 'sideways');
    await fails('ECOW_INVALID_STATE', 'volume', 'extend', ...at, '--size', '2M', '--status', 'in-use');
    await fails('ECOW_BAD_ARGUMENT', 'volume', 'create', ...at, '--size', 'lots');
    await fails('ECOW_EXISTS', 'volume', 'create', ...at, '--size', '1M');
    const yaml = await cli('volume', 'info', ...at, '--output', 'yaml');
    expect([yaml.status, yaml.stdout]).toEqual([2, '']);
    expect(yaml.stderr).toMatch(/^cowchain: ECOW_USAGE: [^\n]*'yaml'[^\n]*human, json[^\n]*\n$/);
    await fails('ECOW_BAD_ARGUMENT', 'volume', 'info', '--dir', dir, '--volume', 'not-a-uuid');
    await fails('ECOW_NOT_FOUND', 'volume', 'info', '--dir', dir, '--volume', OTHER_VOL);
    expect(fs.readdirSync(dir).sort()).toEqual(before);
    rebaseImage(`${dir}/${f('aaaa')}`, '/etc/passwd', { unsafe: true, backingFormat: 'raw' });
    await fails('ECOW_BACKING_REJECTED', 'volume', 'info', ...at);
    const r = await cli('volume', 'fsck', ...at);
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/^problem: .*ECOW_BACKING_REJECTED.*\nproblems remain\n$/s);
    expect((await cli('volume', 'info', '--volume', VOL)).status).toBe(2); // --dir missing
  });
});
