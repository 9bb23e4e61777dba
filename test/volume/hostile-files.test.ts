// Hostile or broken files next to a volume: each is answered quickly with one bounded line, and
// nothing is changed. Runs the built CLI as its own process, as an operator would.
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { cliProcess, expectCliFailure } from '../support/cli.js';
import { requireQemu, tmpDir } from '../support/qemu.js';
import { BASE, MiB, SNAP, VOL, VolumeFixture, f } from '../support/volume.js';

let dir: string;
let v: VolumeFixture;
const INFO = `${BASE}.info`;
const JOURNAL = `${BASE}.journal`;

/** A qcow2 volume with snapshot aaaa: made once, copied for each test. */
let seeded: VolumeFixture;
beforeAll(async () => {
  requireQemu();
  seeded = new VolumeFixture(tmpDir('cowchain-hostile-seed-'), MiB);
  await seeded.createVolume('qcow2');
  await seeded.snap('aaaa');
});
beforeEach(() => {
  dir = tmpDir('cowchain-hostile-files-');
  v = seeded.copyTo(dir);
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/**
 * Every file of the directory with the sha256 of its bytes (symlinks and FIFOs by kind): what
 * "nothing changed" compares (a digest, not the bytes themselves: a 100 MB file is among them).
 */
function snapshotDir(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of fs.readdirSync(dir).sort()) {
    const st = fs.lstatSync(path.join(dir, n));
    out[n] = st.isFile() ? crypto.createHash('sha256').update(fs.readFileSync(path.join(dir, n))).digest('hex') : st.isSymbolicLink() ? `-> ${fs.readlinkSync(path.join(dir, n))}` : 'special';
  }
  return out;
}

/** The CLI command `args` on the volume fails with `code` on one bounded line, changing nothing. */
function refused(code: string, ...args: string[]): string {
  const before = snapshotDir();
  const r = cliProcess([...args, '--dir', dir, '--volume', VOL]);
  const message = expectCliFailure(r, code, args.join(' '));
  expect(r.stderr.length).toBeLessThanOrEqual(2200);
  expect(snapshotDir()).toStrictEqual(before);
  return message;
}

describe('a hostile info file', () => {
  it('a symlink (to a file with secrets) is not followed: its target is never printed', () => {
    const secret = path.join(dir, 'secret');
    fs.writeFileSync(secret, 'root:x:0:0:root:/root:/bin/bash\n');
    fs.rmSync(path.join(dir, INFO));
    fs.symlinkSync(secret, path.join(dir, INFO));
    const m = refused('ECOW_INFO_INVALID', 'volume', 'info');
    expect(m).toContain('symbolic link');
    expect(m).not.toContain('root:x');
  });

  it('a 100 MB file is refused by its size, not read or echoed', () => {
    // 100 MB: its first MiB and a byte 'x' (more than the limit, were it read), then a hole
    fs.writeFileSync(path.join(dir, INFO), Buffer.alloc(MiB + 1, 'x'));
    fs.truncateSync(path.join(dir, INFO), 100 * MiB);
    const m = refused('ECOW_INFO_INVALID', 'volume', 'info');
    expect(m).toMatch(/104857600 bytes, more than the 1048576 allowed/);
  });

  it('a FIFO is refused at once instead of hanging the process', () => {
    fs.rmSync(path.join(dir, INFO));
    execFileSync('mkfifo', [path.join(dir, INFO)]);
    expect(refused('ECOW_INFO_INVALID', 'snapshot', 'delete', '--snapshot', SNAP.aaaa)).toContain('FIFO');
  });

  it('a value with a thousand newlines stays one line', () => {
    fs.writeFileSync(path.join(dir, INFO), JSON.stringify({ active: f('aaaa'), [SNAP.aaaa]: `x${'\n'.repeat(1000)}y` }));
    refused('ECOW_BACKING_REJECTED', 'volume', 'info');
  });

  it('two snapshots mapped to one file: fsck reports it and leaves it alone', async () => {
    await v.snap('bbbb');
    fs.writeFileSync(path.join(dir, INFO), JSON.stringify({ active: f('bbbb'), [SNAP.aaaa]: f('bbbb'), [SNAP.bbbb]: f('bbbb') }));
    const before = snapshotDir();
    const r = cliProcess(['volume', 'fsck', '--dir', dir, '--volume', VOL]);
    expect(r.status, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toMatch(/problem: snapshots .* both map to/);
    expect(snapshotDir()).toStrictEqual(before);
  });

  it('two snapshots mapped to one file: a delete of either is refused (ECOW_INFO_INVALID naming both) and changes nothing', async () => {
    await v.snap('bbbb');
    fs.writeFileSync(path.join(dir, INFO), JSON.stringify({ active: f('bbbb'), [SNAP.aaaa]: f('bbbb'), [SNAP.bbbb]: f('bbbb') }));
    const before = snapshotDir();
    for (const [s, other] of [
      [SNAP.aaaa, SNAP.bbbb],
      [SNAP.bbbb, SNAP.aaaa],
    ]) {
      const m = refused('ECOW_INFO_INVALID', 'snapshot', 'delete', '--snapshot', s);
      expect(m).toContain(`snapshots ${s} and "${other}" both map to ${f('bbbb')} in the info file`);
      expect(snapshotDir()).toStrictEqual(before);
    }
  });

  it('a snapshot mapped to a file off the active chain: fsck reports it and leaves it alone', async () => {
    await v.snap('bbbb');
    // .bbbb is backed by .aaaa, but the info file makes .aaaa the active file: .bbbb is above it.
    fs.writeFileSync(path.join(dir, INFO), JSON.stringify({ active: f('aaaa'), [SNAP.aaaa]: f('aaaa'), [SNAP.bbbb]: f('bbbb') }));
    const before = snapshotDir();
    const r = cliProcess(['volume', 'fsck', '--dir', dir, '--volume', VOL]);
    expect(r.status, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toContain(`problem: snapshot "${SNAP.bbbb}": its file ${f('bbbb')} is not in the active chain of ${f('aaaa')}; left alone`);
    expect(snapshotDir()).toStrictEqual(before);
  });

  it('a key that is not a snapshot id: fsck reports it', () => {
    fs.writeFileSync(path.join(dir, INFO), JSON.stringify({ active: f('aaaa'), 'not-a-uuid': f('aaaa') }));
    const r = cliProcess(['volume', 'fsck', '--dir', dir, '--volume', VOL]);
    expect(r.status, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toContain('is not a snapshot id');
  });
});

describe('a hostile journal', () => {
  it('a FIFO is refused at once', () => {
    execFileSync('mkfifo', [path.join(dir, JOURNAL)]);
    expect(refused('ECOW_INFO_INVALID', 'volume', 'info')).toContain('FIFO');
  });

  it('valid JSON with wrong fields: one line naming the way out; fsck --discard-journal gets out', () => {
    const junk = { version: 1, op: 'delete-snapshot', snapshot: SNAP.aaaa, ...Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`field${i}`, i])) };
    fs.writeFileSync(path.join(dir, JOURNAL), JSON.stringify(junk, null, 1));
    const m = refused('ECOW_INFO_INVALID', 'snapshot', 'delete', '--snapshot', SNAP.aaaa);
    expect(m).toContain('--discard-journal');
    const r = cliProcess(['volume', 'fsck', '--discard-journal', '--dir', dir, '--volume', VOL]);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('discarded-journal');
    expect(fs.existsSync(path.join(dir, JOURNAL))).toBe(false);
    const d = cliProcess(['snapshot', 'delete', '--snapshot', SNAP.aaaa, '--dir', dir, '--volume', VOL]);
    expect(d.status, d.stderr).toBe(0);
  });

  it('a 10 MB journal is refused by its size', () => {
    fs.writeFileSync(path.join(dir, JOURNAL), Buffer.alloc(10 * MiB, '{'));
    expect(refused('ECOW_INFO_INVALID', 'volume', 'info')).toMatch(/more than the 65536 allowed/);
  });
});
