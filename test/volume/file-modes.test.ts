// Modes of every file the driver creates (issue 14, part 4), as Cinder's NAS drivers set them so
// that qemu, running as another user, can write the new active overlay: secure mode 660 (a new
// overlay owned like its backing file), otherwise ugo+rw (666); `auto` decides per share.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { VolumeDriver } from '../../src/volume/driver.js';
import type { SecureFilePermissions } from '../../src/volume/file-modes.js';
import { fails, ok } from '../support/cli.js';
import { qemuImg, requireQemu, tmpDir } from '../support/qemu.js';
import { BASE, MiB, OTHER_VOL, SNAP, VOL, f } from '../support/volume.js';

requireQemu();

const INDICATOR = '.cinderSecureEnvIndicator';
const mode = (file: string) => fs.statSync(file).mode & 0o7777;

interface Case {
  name: string;
  setting: SecureFilePermissions;
  /** What the share holds before the first operation. */
  prepare?: (dir: string) => void;
  want: number;
}

const cases: Case[] = [
  { name: 'true', setting: true, want: 0o660 },
  { name: 'false', setting: false, want: 0o666 },
  { name: 'auto on a new share (the indicator is created)', setting: 'auto', want: 0o660 },
  { name: 'auto on a share that already holds volumes', setting: 'auto', prepare: (d) => qemuImg(['create', '-f', 'raw', path.join(d, `volume-${OTHER_VOL}`), '1M']), want: 0o666 },
  { name: 'auto on a share with the indicator', setting: 'auto', prepare: (d) => fs.writeFileSync(path.join(d, INDICATOR), 'x'), want: 0o660 },
];

describe('every file an operation creates gets its mode', () => {
  for (const c of cases) {
    it(`secureFilePermissions ${c.name}: ${c.want.toString(8)}`, async () => {
      const dir = tmpDir('cowchain-modes-');
      c.prepare?.(dir);
      const journalModes: number[] = [];
      const d = new VolumeDriver({
        dir,
        secureFilePermissions: c.setting,
        onStep: (s) => {
          if (s === 'create:journal' || s === 'delete:journal') journalModes.push(mode(path.join(dir, `${BASE}.journal`)));
        },
      });
      const p = (n: string) => path.join(dir, n);
      await d.createVolume(VOL, MiB);
      await d.createSnapshot(VOL, SNAP.aaaa, { status: 'available' });
      await d.createSnapshot(VOL, SNAP.bbbb, { status: 'available' });
      const created = [BASE, `${BASE}.format`, f('aaaa'), f('bbbb'), `${BASE}.info`];
      expect(created.map((n) => [n, mode(p(n))])).toEqual(created.map((n) => [n, c.want]));
      // Rewritten or recreated files get it too: the info file after a delete, a reverted overlay.
      fs.chmodSync(p(`${BASE}.info`), 0o600);
      await d.deleteSnapshot(VOL, SNAP.aaaa, { status: 'available' });
      expect(mode(p(`${BASE}.info`))).toBe(c.want);
      fs.chmodSync(p(f('bbbb')), 0o600);
      await d.revertToSnapshot(VOL, SNAP.bbbb, { status: 'available' });
      expect(mode(p(f('bbbb')))).toBe(c.want);
      // New volumes: a clone (and its format record), a volume from a snapshot.
      await d.cloneVolume(VOL, '77777777-7777-4777-8777-777777777777', { status: 'available' });
      expect(mode(p('volume-77777777-7777-4777-8777-777777777777'))).toBe(c.want);
      expect(mode(p('volume-77777777-7777-4777-8777-777777777777.format'))).toBe(c.want);
      await d.createVolumeFromSnapshot(VOL, SNAP.bbbb, p('from-snapshot.raw'));
      expect(mode(p('from-snapshot.raw'))).toBe(c.want);
      expect(journalModes.length).toBeGreaterThan(0);
      expect(journalModes.every((m) => m === c.want), journalModes.map((m) => m.toString(8)).join()).toBe(true);
      if (c.name.startsWith('auto on a new share')) {
        expect(fs.readFileSync(p(INDICATOR), 'utf8')).toMatch(/Cinder secure environment/);
        expect(mode(p(INDICATOR))).toBe(0o640);
      }
      if (c.name.includes('already holds')) expect(fs.existsSync(p(INDICATOR))).toBe(false);
    });
  }
});

if (process.getuid?.() === 0) {
  it('secure mode: a new overlay takes owner and group from its backing file; open mode leaves them', async () => {
    for (const secure of [true, false]) {
      const dir = tmpDir('cowchain-modes-owner-');
      const d = new VolumeDriver({ dir, secureFilePermissions: secure });
      await d.createVolume(VOL, MiB);
      fs.chownSync(path.join(dir, BASE), 4242, 4343);
      await d.createSnapshot(VOL, SNAP.aaaa, { status: 'available' });
      const st = fs.statSync(path.join(dir, f('aaaa')));
      expect([secure, st.uid, st.gid]).toEqual(secure ? [true, 4242, 4343] : [false, 0, 0]);
    }
  });
}

it('CLI: --secure-file-permissions true|false|auto, anything else refused', async () => {
  for (const [value, want] of [['true', 0o660], ['false', 0o666]] as const) {
    const dir = tmpDir('cowchain-modes-cli-');
    await ok('volume', 'create', '--dir', dir, '--volume', VOL, '--size', '1M', '--secure-file-permissions', value);
    expect(mode(path.join(dir, BASE))).toBe(want);
  }
  const dir = tmpDir('cowchain-modes-cli-');
  await fails('ECOW_BAD_ARGUMENT', 'volume', 'create', '--dir', dir, '--volume', VOL, '--size', '1M', '--secure-file-permissions', 'yes');
  expect(fs.readdirSync(dir)).toEqual([]);
});
