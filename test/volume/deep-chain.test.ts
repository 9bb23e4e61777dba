// Deep chains: what the driver builds it can always open, clone and shorten. 200 snapshots (40
// in the quick tier: the cost grows with the square of the depth) are taken and deleted in random
// order through the CLI, every surviving snapshot's content checked at four points;
// a chain at the create limit refuses one more snapshot but still clones and deletes.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openImage } from '../../src/image/open-chain.js';
import { MAX_CHAIN_DEPTH, MAX_SNAPSHOT_CHAIN_DEPTH } from '../../src/volume/volume-files.js';
import { cli, ok } from '../support/cli.js';
import { expectClean, requireQemu, tmpDir } from '../support/qemu.js';
import { rng } from '../support/images.js';
import { byTier } from '../support/tier.js';
import { readGuest } from '../support/guest.js';
import { BASE, MiB, VOL, VolumeFixture, stackOverlays } from '../support/volume.js';

let dir: string;
beforeEach(() => {
  requireQemu();
  dir = tmpDir('cowchain-deep-');
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const snapId = (i: number) => `${i.toString(16).padStart(8, '0')}-5555-4555-8555-555555555555`;
const common = ['--dir', '', '--volume', VOL];

function activeFile(): string {
  const info = JSON.parse(fs.readFileSync(path.join(dir, `${BASE}.info`), 'utf8')) as Record<string, string>;
  return info.active;
}

const SNAPSHOTS = byTier(40, 200);
/** Every survivor's content is checked after each quarter of the deletes. */
const CHECK_EVERY = SNAPSHOTS / 4;

describe(`a chain of ${SNAPSHOTS} snapshots through the CLI`, () => {
  it('is created and deleted in random order; every surviving snapshot keeps its content', async () => {
    const args = (...a: string[]) => [...a, ...common.map((x) => (x === '' ? dir : x))];
    const SIZE = MiB;
    await ok(...args('volume', 'create', '--size', String(SIZE), '--format', 'qcow2'));
    const r = rng(19);
    const recorded = new Map<string, Buffer>();
    let content = Buffer.alloc(SIZE);
    for (let i = 0; i < SNAPSHOTS; i++) {
      // A distinct write before each snapshot: snapshot i holds the volume as it was right then.
      const img = openImage(path.join(dir, fs.existsSync(path.join(dir, `${BASE}.info`)) ? activeFile() : BASE), { writable: true });
      try {
        const len = 512 + Math.floor(r() * 8192);
        const off = Math.floor(r() * (SIZE - len));
        const data = Buffer.alloc(len, (i % 251) + 1);
        img.write(off, data);
        data.copy(content, off);
      } finally {
        img.close();
      }
      await ok(...args('snapshot', 'create', '--snapshot', snapId(i)));
      recorded.set(snapId(i), Buffer.from(content));
    }
    expect(JSON.parse(await ok(...args('volume', 'info', '--output', 'json'))).chain).toHaveLength(SNAPSHOTS + 1);

    const order = [...recorded.keys()];
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    for (const [n, id] of order.entries()) {
      await ok(...args('snapshot', 'delete', '--snapshot', id));
      recorded.delete(id);
      // Guest view unchanged by every delete; after each quarter, every survivor's content.
      if (n % CHECK_EVERY === CHECK_EVERY - 1 || n === order.length - 1) {
        expect(readGuest(path.join(dir, activeFile())).equals(content), `active after ${n + 1} deletes`).toBe(true);
        for (const [sid, want] of recorded) {
          const out = path.join(dir, `check-${sid}.raw`);
          await ok(...args('volume', 'from-snapshot', '--snapshot', sid, '--out', out));
          expect(fs.readFileSync(out).equals(want), `snapshot ${sid} after ${n + 1} deletes`).toBe(true);
          fs.rmSync(out);
        }
      }
    }
    expect(JSON.parse(await ok(...args('volume', 'info', '--output', 'json'))).chain).toHaveLength(1);
    expectClean(path.join(dir, activeFile()));
    const fsck = await cli(...args('volume', 'fsck', '--output', 'json'));
    expect(fsck.status, fsck.stdout).toBe(0);
  }, 600_000);
});

describe('a chain at the snapshot create limit', () => {
  it('refuses one more snapshot (ECOW_CHAIN_TOO_DEEP, nothing changed) but still clones and deletes', async () => {
    const v = new VolumeFixture(dir, MiB);
    await v.createVolume('qcow2');
    // MAX_SNAPSHOT_CHAIN_DEPTH - 1 tiny overlays (512-byte clusters) on the base: the deepest chain create builds.
    const ids = Array.from({ length: MAX_SNAPSHOT_CHAIN_DEPTH - 1 }, (_, i) => snapId(i));
    const below = stackOverlays(dir, BASE, ids, MiB);
    const info = Object.fromEntries(ids.map((id) => [id, `${BASE}.${id}`]));
    fs.writeFileSync(v.infoFile(), JSON.stringify({ ...info, active: below }));
    expect(MAX_SNAPSHOT_CHAIN_DEPTH).toBeLessThan(MAX_CHAIN_DEPTH);
    const infoBefore = fs.readFileSync(v.infoFile(), 'utf8');
    const err = await v.driver.createSnapshot(VOL, '77777777-7777-4777-8777-777777777777', { status: 'available' }).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('ECOW_CHAIN_TOO_DEEP');
    expect(String(err)).toContain(String(MAX_SNAPSHOT_CHAIN_DEPTH));
    expect(fs.readFileSync(v.infoFile(), 'utf8')).toBe(infoBefore);
    expect(fs.existsSync(v.p(`${BASE}.77777777-7777-4777-8777-777777777777`))).toBe(false);
    // The clone's temporary snapshot may go one deeper.
    const cloned = await v.driver.cloneVolume(VOL, '88888888-8888-4888-8888-888888888888', { status: 'available' });
    expect(fs.existsSync(cloned.file)).toBe(true);
    // Deleting (committing across the whole depth) works, and then a snapshot can be taken again.
    await v.driver.deleteSnapshot(VOL, snapId(MAX_SNAPSHOT_CHAIN_DEPTH - 2), { status: 'available' });
    await v.driver.createSnapshot(VOL, '77777777-7777-4777-8777-777777777777', { status: 'available' });
    expect((await v.driver.volumeInfo(VOL)).chain).toHaveLength(MAX_SNAPSHOT_CHAIN_DEPTH);
  }, 600_000);
});
