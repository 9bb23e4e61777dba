// Issue 19, item 4: unprivileged commands. A user who may not write what an operation must write
// gets ECOW_ACCESS naming it before the operation journals anything (so nothing is left to block
// the commands after it), and read-only inspection works where the lock cannot be taken: a
// directory the user may not write (as a read-only mount is for everyone). The built CLI runs as
// its own process: as `nobody` when the tests run as root (root passes every permission check),
// else as this user, whom the modes set here bind just as well.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { lockFilePath } from '../../src/volume/lock.js';
import { runProcess } from '../support/child.js';
import { CLI_MAIN, expectCliFailure } from '../support/cli.js';
import { expectClean, requireQemu, tmpDir } from '../support/qemu.js';
import { BASE, SNAP, VOL, VolumeFixture, f } from '../support/volume.js';

const asRoot = process.getuid?.() === 0;
const user = asRoot ? { uid: 65534, gid: 65534 } : {};

let dir: string;
beforeEach(() => {
  requireQemu();
  dir = tmpDir('cowchain-unprivileged-');
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** The built CLI as the unprivileged user, on this test's volume. */
async function cliAsUser(...args: string[]) {
  const r = await runProcess(process.execPath, [CLI_MAIN, ...args, '--dir', dir, '--volume', VOL], { ...user, timeoutMs: 300_000 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** The seed's chain, its files readable by everyone and writable by their owner only. */
async function seeded(): Promise<VolumeFixture> {
  const v = new VolumeFixture(dir, 4 << 20, { jobs: undefined, secureFilePermissions: false });
  await v.seedSnapshots();
  for (const n of fs.readdirSync(dir)) fs.chmodSync(path.join(dir, n), 0o644);
  return v;
}

describe('a user without write permission', () => {
  it('snapshot delete: ECOW_ACCESS naming the base file before any journal; the next command (its owner) has nothing pending', async () => {
    const v = await seeded();
    fs.chmodSync(dir, 0o777); // the directory is writable (the lock, a journal could be made)...
    const base = path.join(dir, BASE);
    if (!asRoot) fs.chmodSync(base, 0o444); // ...the base file is not
    const info = fs.readFileSync(v.infoFile());

    const r = await cliAsUser('snapshot', 'delete', '--snapshot', SNAP.aaaa);
    const message = expectCliFailure(r, 'ECOW_ACCESS', 'snapshot delete as a user who may not write the base');
    expect(message).toBe(`snapshot delete ${SNAP.aaaa} must write ${fs.realpathSync(base)}, which this user may not (EACCES); nothing was changed`);
    expect(fs.existsSync(path.join(dir, `${BASE}.journal`)), 'no journal left').toBe(false);
    expect(fs.existsSync(lockFilePath(dir, VOL)), 'no lock left').toBe(false);
    expect(fs.readFileSync(v.infoFile()).equals(info)).toBe(true);

    // Its owner deletes it: nothing to finish first, every snapshot intact.
    if (!asRoot) fs.chmodSync(base, 0o644);
    const notices: string[] = [];
    const owner = new VolumeFixture(dir, 4 << 20, { jobs: undefined, onNotice: (m) => notices.push(m) });
    await owner.driver.deleteSnapshot(VOL, SNAP.aaaa, { status: 'available' });
    expect(notices).toEqual([]);
    v.recorded.delete(SNAP.aaaa);
    v.expectSnapshotsIntact();
    expectClean(path.join(dir, f('bbbb')));
  });

  it('on a directory it may not write: volume info and from-snapshot --out elsewhere work without the lock; snapshot create is ECOW_ACCESS naming the lock', async () => {
    const v = await seeded();
    fs.chmodSync(dir, 0o555);
    const out = tmpDir('cowchain-unprivileged-out-');
    fs.chmodSync(out, 0o777);
    try {
      // A lock left behind by someone who may write there: never waited for, as it can never be taken.
      fs.chmodSync(dir, 0o755);
      fs.mkdirSync(lockFilePath(dir, VOL));
      fs.chmodSync(dir, 0o555);
      const before = fs.readdirSync(dir).sort();
      const info = await cliAsUser('volume', 'info', '--output', 'json');
      expect(info.stderr).toBe('');
      expect(info.status).toBe(0);
      expect(JSON.parse(info.stdout)).toMatchObject({ active: f('bbbb'), snapshots: { [SNAP.aaaa]: f('aaaa'), [SNAP.bbbb]: f('bbbb') }, pending: null });

      const file = path.join(out, 'from-aaaa.raw');
      const made = await cliAsUser('volume', 'from-snapshot', '--snapshot', SNAP.aaaa, '--out', file);
      expect(made.stderr).toBe('');
      expect(made.status).toBe(0);
      expect(fs.readFileSync(file).equals(v.recorded.get(SNAP.aaaa)!)).toBe(true);

      const create = await cliAsUser('snapshot', 'create', '--snapshot', SNAP.cccc);
      const message = expectCliFailure(create, 'ECOW_ACCESS', 'snapshot create in a directory the user may not write');
      expect(message).toContain(`cannot take lock ${lockFilePath(fs.realpathSync(dir), VOL)} of volume ${VOL}: EACCES`);
      expect(fs.readdirSync(dir).sort()).toEqual(before);
    } finally {
      fs.chmodSync(dir, 0o755);
      fs.rmSync(out, { recursive: true, force: true });
    }
  });
});
