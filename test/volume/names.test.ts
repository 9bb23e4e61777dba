import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  baseName,
  checkChainName,
  isUuid,
  parseChainName,
  resolveInsideDir,
  snapshotFileName,
  validateSnapshotId,
  validateVolumeId,
} from '../../src/volume/names.js';
import { CowError } from '../../src/errors.js';
import { codeOf, rejection } from '../support/errors.js';

const VOL = '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d';
const OTHER = 'ffffffff-1111-4222-8333-444444444444';
const SNAP = '12345678-9abc-4def-8123-456789abcdef';
const SNAP2 = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee';

describe('uuids and ids', () => {
  it('isUuid accepts the canonical form in either case only', () => {
    expect(isUuid(VOL)).toBe(true);
    expect(isUuid(VOL.toUpperCase())).toBe(true);
    for (const bad of [
      '',
      VOL.replace(/-/g, ''), // no dashes
      `{${VOL}}`,
      `${VOL} `,
      ` ${VOL}`,
      `${VOL}\n`,
      VOL.slice(0, -1),
      `${VOL}0`,
      VOL.replace('0', 'g'),
      '0a1b2c3d4-e5f-4a6b-8c7d-9e0f1a2b3c4d', // dashes in the wrong places
      `urn:uuid:${VOL}`,
    ]) {
      expect(isUuid(bad), JSON.stringify(bad)).toBe(false);
    }
    expect(isUuid(123)).toBe(false);
    expect(isUuid(undefined)).toBe(false);
  });

  it('validateVolumeId returns a uuid and throws ECOW_BAD_ARGUMENT naming anything else', () => {
    expect(validateVolumeId(VOL)).toBe(VOL);
    expect(codeOf(() => validateVolumeId('../etc'))).toBe('ECOW_BAD_ARGUMENT');
    expect(codeOf(() => validateVolumeId(`tmp-snap-${VOL}`))).toBe('ECOW_BAD_ARGUMENT');
    expect(() => validateVolumeId('not-a-uuid')).toThrow(/"not-a-uuid"/);
  });

  it('validateSnapshotId accepts uuid and tmp-snap-<uuid> only', () => {
    expect(validateSnapshotId(SNAP)).toBe(SNAP);
    expect(validateSnapshotId(`tmp-snap-${SNAP}`)).toBe(`tmp-snap-${SNAP}`);
    for (const bad of ['', 'tmp-snap-', `tmp-snap-${SNAP}x`, `snap-${SNAP}`, `TMP-SNAP-${SNAP}`, 'info', 'lock', `${SNAP}/x`]) {
      expect(codeOf(() => validateSnapshotId(bad)), JSON.stringify(bad)).toBe('ECOW_BAD_ARGUMENT');
    }
  });

  it('builds file names and refuses to build them from bad ids', () => {
    expect(baseName(VOL)).toBe(`volume-${VOL}`);
    expect(snapshotFileName(VOL, SNAP)).toBe(`volume-${VOL}.${SNAP}`);
    expect(snapshotFileName(VOL, `tmp-snap-${SNAP}`)).toBe(`volume-${VOL}.tmp-snap-${SNAP}`);
    expect(codeOf(() => baseName('../x'))).toBe('ECOW_BAD_ARGUMENT');
    expect(codeOf(() => snapshotFileName(VOL, '../../etc/passwd'))).toBe('ECOW_BAD_ARGUMENT');
  });

  it('parseChainName splits names of any volume and returns null for other names', () => {
    expect(parseChainName(`volume-${VOL}`)).toEqual({ volumeId: VOL, snapshotId: null });
    expect(parseChainName(`volume-${OTHER}.${SNAP}`)).toEqual({ volumeId: OTHER, snapshotId: SNAP });
    expect(parseChainName(`volume-${VOL}.tmp-snap-${SNAP}`)).toEqual({
      volumeId: VOL,
      snapshotId: `tmp-snap-${SNAP}`,
    });
    expect(parseChainName(`volume-${VOL}.info`)).toBeNull();
    expect(parseChainName(`volume-${VOL}.lock`)).toBeNull();
  });
});

describe('checkChainName', () => {
  it('accepts the base and the snapshot files of this volume', () => {
    expect(checkChainName(VOL, `volume-${VOL}`)).toEqual({ volumeId: VOL, snapshotId: null });
    expect(checkChainName(VOL, `volume-${VOL}.${SNAP}`).snapshotId).toBe(SNAP);
    expect(checkChainName(VOL, `volume-${VOL}.${SNAP2.toUpperCase()}`).snapshotId).toBe(SNAP2.toUpperCase());
    expect(checkChainName(VOL, `volume-${VOL}.tmp-snap-${SNAP}`).snapshotId).toBe(`tmp-snap-${SNAP}`);
  });

  const hostile: Array<[string, RegExp]> = [
    ['/etc/passwd', /absolute path/],
    [`/srv/share/volume-${VOL}`, /absolute path/],
    [`../volume-${VOL}`, /path separator/],
    [`volume-${VOL}/../x`, /path separator/],
    [`volume-${VOL}/../volume-${VOL}`, /path separator/],
    [`./volume-${VOL}`, /path separator/],
    [`sub/volume-${VOL}`, /path separator/],
    [`..\\volume-${VOL}`, /path separator/],
    [`C:\\volume-${VOL}`, /absolute path/],
    [`\\\\server\\share\\volume-${VOL}`, /absolute path/],
    ['..', /'\.\.'/],
    [`volume-${VOL}..${SNAP}`, /'\.\.'/],
    ['', /empty/],
    [`volume-${VOL}\0`, /NUL/],
    [`volume-${VOL}\0.${SNAP}`, /NUL/],
    [`volume-${OTHER}`, new RegExp(`belongs to volume ${OTHER}`)],
    [`volume-${OTHER}.${SNAP}`, new RegExp(`belongs to volume ${OTHER}`)],
    [`volume-${VOL.toUpperCase()}`, /belongs to volume/],
    [`volume-${VOL}.notauuid`, /not volume-<uuid>/],
    [`volume-${VOL}.info`, /not volume-<uuid>/],
    [`volume-${VOL}.lock`, /not volume-<uuid>/],
    [`volume-${VOL}.${SNAP}.${SNAP2}`, /not volume-<uuid>/],
    [`volume-${VOL}.tmp-snap-`, /not volume-<uuid>/],
    [`volume-${VOL}.`, /not volume-<uuid>/],
    [`volume-${VOL} `, /not volume-<uuid>/],
    [`volume-${VOL}\n`, /not volume-<uuid>/],
    [`Volume-${VOL}`, /not volume-<uuid>/],
    [`VOLUME-${VOL}`, /not volume-<uuid>/],
    [`volume-${VOL}.TMP-SNAP-${SNAP}`, /not volume-<uuid>/],
    [`snapshot-${VOL}`, /not volume-<uuid>/],
    [VOL, /not volume-<uuid>/],
    ['volume-', /not volume-<uuid>/],
    [`.volume-${VOL}.info.tmp-0011`, /not volume-<uuid>/],
    [`volume-${VOL}.${SNAP}\u2028`, /not volume-<uuid>/],
  ];
  it.each(hostile)('rejects %j', (name, reason) => {
    let err: unknown;
    try {
      checkChainName(VOL, name);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CowError);
    expect((err as CowError).code).toBe('ECOW_BACKING_REJECTED');
    // The message names the offending value (JSON-quoted, so NUL and friends stay visible).
    expect((err as CowError).message).toContain(JSON.stringify(name));
    expect((err as CowError).message).toMatch(reason);
  });

  it('rejects non-strings from untyped callers', () => {
    expect(codeOf(() => checkChainName(VOL, undefined as unknown as string))).toBe('ECOW_BACKING_REJECTED');
  });

  it('refuses to check against an invalid volume id', () => {
    expect(codeOf(() => checkChainName('x', 'volume-x'))).toBe('ECOW_BAD_ARGUMENT');
  });
});

describe('resolveInsideDir', () => {
  let root: string;
  let dir: string;
  beforeEach(async () => {
    root = await fs.mkdtemp(path.join(os.tmpdir(), 'cowchain-names-'));
    dir = path.join(root, 'share');
    await fs.mkdir(dir);
  });
  afterEach(async () => {
    await fs.rm(root, { recursive: true, force: true });
  });

  it('returns the real path of a regular file in the directory', async () => {
    await fs.writeFile(path.join(dir, `volume-${VOL}`), 'x');
    const real = await resolveInsideDir(dir, `volume-${VOL}`);
    expect(real).toBe(path.join(await fs.realpath(dir), `volume-${VOL}`));
  });

  it('resolves through a symlinked directory path and a symlink that stays inside', async () => {
    await fs.writeFile(path.join(dir, `volume-${VOL}`), 'x');
    await fs.symlink(`volume-${VOL}`, path.join(dir, `volume-${VOL}.${SNAP}`));
    await fs.symlink(dir, path.join(root, 'link-to-share'));
    const real = await resolveInsideDir(path.join(root, 'link-to-share'), `volume-${VOL}.${SNAP}`);
    expect(real).toBe(path.join(await fs.realpath(dir), `volume-${VOL}`));
  });

  it('rejects a symlink pointing out of the directory (absolute and relative)', async () => {
    const secret = path.join(root, 'secret');
    await fs.writeFile(secret, 'top secret');
    await fs.symlink(secret, path.join(dir, `volume-${VOL}`));
    await fs.symlink('../secret', path.join(dir, `volume-${VOL}.${SNAP}`));
    await fs.symlink('/etc/passwd', path.join(dir, `volume-${VOL}.${SNAP2}`));
    for (const name of [`volume-${VOL}`, `volume-${VOL}.${SNAP}`, `volume-${VOL}.${SNAP2}`]) {
      const err = await rejection(resolveInsideDir(dir, name));
      expect(err.code, name).toBe('ECOW_BACKING_REJECTED');
      expect(err.message).toContain(JSON.stringify(name));
      expect(err.message).toMatch(/outside/);
    }
  });

  it('rejects paths that climb out even without symlinks', async () => {
    await fs.writeFile(path.join(root, 'outside'), 'x');
    for (const name of ['../outside', `volume-${VOL}/../../outside`, path.join(root, 'outside')]) {
      const err = await rejection(resolveInsideDir(dir, name));
      expect(err.code, name).toBe('ECOW_BACKING_REJECTED');
    }
  });

  it('rejects the directory itself, a subdirectory, a FIFO and a symlink loop', async () => {
    expect((await rejection(resolveInsideDir(dir, '.'))).code).toBe('ECOW_BACKING_REJECTED');
    await fs.mkdir(path.join(dir, `volume-${VOL}`));
    expect((await rejection(resolveInsideDir(dir, `volume-${VOL}`))).message).toMatch(/not a regular file/);
    // Opening a FIFO as an image would block forever.
    execFileSync('mkfifo', [path.join(dir, `volume-${VOL}.tmp-snap-${SNAP}`)]);
    const fifo = await rejection(resolveInsideDir(dir, `volume-${VOL}.tmp-snap-${SNAP}`));
    expect(fifo.code).toBe('ECOW_BACKING_REJECTED');
    expect(fifo.message).toMatch(/not a regular file/);
    await fs.symlink(`volume-${VOL}.${SNAP2}`, path.join(dir, `volume-${VOL}.${SNAP}`));
    await fs.symlink(`volume-${VOL}.${SNAP}`, path.join(dir, `volume-${VOL}.${SNAP2}`));
    const loop = await rejection(resolveInsideDir(dir, `volume-${VOL}.${SNAP}`));
    expect(loop.code).toBe('ECOW_BACKING_REJECTED');
    expect(loop.message).toMatch(/loop/);
  });

  it('reports a missing file (and a dangling symlink) as ECOW_BACKING_MISSING', async () => {
    const missing = await rejection(resolveInsideDir(dir, `volume-${VOL}`));
    expect(missing.code).toBe('ECOW_BACKING_MISSING');
    expect(missing.message).toContain(`volume-${VOL}`);
    await fs.symlink(path.join(root, 'nowhere'), path.join(dir, `volume-${VOL}.${SNAP}`));
    expect((await rejection(resolveInsideDir(dir, `volume-${VOL}.${SNAP}`))).code).toBe('ECOW_BACKING_MISSING');
  });

  it('rejects empty and NUL names without touching the file system', async () => {
    expect((await rejection(resolveInsideDir(dir, ''))).code).toBe('ECOW_BACKING_REJECTED');
    expect((await rejection(resolveInsideDir(dir, `volume-${VOL}\0`))).code).toBe('ECOW_BACKING_REJECTED');
  });

  it('reports a missing volume directory as ECOW_NOT_FOUND', async () => {
    expect((await rejection(resolveInsideDir(path.join(root, 'gone'), `volume-${VOL}`))).code).toBe(
      'ECOW_NOT_FOUND',
    );
  });
});
