// Issue 19, item 4: fsck reports the leaked clusters it actually freed (it said 0 while freeing
// 128: after a repair qemu's `leaks` counts what is left, the freed ones are `leaks-fixed`).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openImage } from '../../src/image/open-chain.js';
import { expectClean, qemuCheck, requireQemu, tmpDir } from '../support/qemu.js';
import { BASE, MiB, VOL, VolumeFixture, f } from '../support/volume.js';

requireQemu();

let dir: string;
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/**
 * Leak every cluster `file` allocated for its first L1 entry: the entry is cleared, so its L2
 * table and the data clusters it mapped keep their refcounts with no reference left (what a
 * crash between allocating and referencing leaves, only more of it).
 */
function leakFirstL2(file: string): void {
  const fd = fs.openSync(file, 'r+');
  try {
    const header = Buffer.alloc(48);
    fs.readSync(fd, header, 0, 48, 0);
    const l1 = Number(header.readBigUInt64BE(40));
    fs.writeSync(fd, Buffer.alloc(8), 0, 8, l1);
  } finally {
    fs.closeSync(fd);
  }
}

describe('fsck and leaked clusters', () => {
  it('reports the number of clusters it freed, as qemu-img check counted them before', async () => {
    dir = tmpDir('cowchain-fsck-leaks-');
    const v = new VolumeFixture(dir, 8 * MiB, { jobs: undefined });
    await v.createVolume('qcow2');
    await v.snap('aaaa');
    const img = openImage(path.join(dir, f('aaaa')), { writable: true });
    img.write(0, Buffer.alloc(4 * MiB, 0x5c)); // 64 data clusters under one L2 table
    img.close();
    const file = path.join(dir, f('aaaa'));
    leakFirstL2(file);
    const before = qemuCheck(file);
    expect(before.status, JSON.stringify(before.result)).toBe(3); // leaks only
    const leaked = before.result.leaks as number;
    expect(leaked).toBe(65);

    const dry = await v.driver.fsck(VOL, { dryRun: true });
    expect(dry.actions).toEqual([{ kind: 'repaired-leaks', files: [f('aaaa')], detail: `${leaked} leaked cluster(s) to free in ${f('aaaa')} (left by an allocation a crash interrupted)` }]);

    const report = await v.driver.fsck(VOL);
    expect(report.actions).toEqual([{ kind: 'repaired-leaks', files: [f('aaaa')], detail: `${leaked} leaked cluster(s) freed in ${f('aaaa')} (left by an allocation a crash interrupted)` }]);
    expect(report.problems).toEqual([]);
    expectClean(file);
    expect((await v.driver.fsck(VOL)).clean).toBe(true);
    expect(fs.existsSync(path.join(dir, BASE))).toBe(true);
  });
});
