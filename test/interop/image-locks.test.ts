// qemu's image locks in both directions (issue 14, part 2): while a real qemu-io holds an image,
// every cowchain command that writes it is refused with ECOW_IMAGE_LOCKED and changes nothing
// (reads need -U, as with qemu-img); while cowchain writes an image, qemu-img is refused; two
// cowchain writers exclude each other. Without the native binding, locks others hold are still
// detected through /proc/locks.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FileBackend } from '../../src/engine/backend.js';
import { lockSupport } from '../../src/engine/image-lock.js';
import { isCowError } from '../../src/errors.js';
import { openImage } from '../../src/image/open-chain.js';
import { VolumeDriver } from '../../src/volume/driver.js';
import { cli, cliProcess, type CliRun } from '../support/cli.js';
import { holdWithQemuIo, type Holder } from '../support/holders.js';
import { createQcow2, writePatternedRaw } from '../support/images.js';
import { qemuImg, requireQemu, tmpDir } from '../support/qemu.js';

requireQemu();

const native = lockSupport() === 'native';
const MiB = 1 << 20;
const VOL = '12341234-1234-4234-8234-123412341234';
const SNAP = 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa';
const SNAP2 = 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb';

const holders: Holder[] = [];
afterEach(async () => {
  for (const h of holders.splice(0)) await h.release();
});

async function hold(file: string, format: 'raw' | 'qcow2', readOnly = false): Promise<void> {
  holders.push(await holdWithQemuIo(file, format, readOnly));
}

/** Every file of `dir` and its bytes' hash: "nothing changed" is this staying equal. */
function snapshotOf(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of fs.readdirSync(dir).sort()) {
    const p = path.join(dir, n);
    if (fs.statSync(p).isFile() && !n.endsWith('.lock')) out[n] = createHash('sha256').update(fs.readFileSync(p)).digest('hex');
  }
  return out;
}

function refused(r: CliRun, what: string): void {
  expect(r.status, `${what}: ${r.stderr}`).toBe(1);
  expect(r.stderr, what).toMatch(/^cowchain: ECOW_IMAGE_LOCKED: /);
}

/** A qcow2 chain base.qcow2 <- top.qcow2 with data in both. */
async function chain(dir: string): Promise<{ base: string; top: string }> {
  const base = path.join(dir, 'base.qcow2');
  const top = path.join(dir, 'top.qcow2');
  createQcow2(base, MiB);
  createQcow2(top, MiB, {}, { file: base, format: 'qcow2' });
  for (const [f, p] of [[base, 1], [top, 2]] as const) {
    const r = await cli('io', '-f', 'qcow2', '-c', `write -P ${p} ${p * 65536} 65536`, f);
    expect(r.status, r.stderr).toBe(0);
  }
  return { base, top };
}

describe('while qemu-io holds the image', () => {
  it('every writing command is refused with ECOW_IMAGE_LOCKED and nothing changes; reads need -U', async () => {
    const dir = tmpDir('cowchain-locks-');
    const { top } = await chain(dir);
    await hold(top, 'qcow2');
    const before = snapshotOf(dir);
    // One run as its own process (the status reaches the shell); the rest in-process, where the
    // lock qemu-io holds conflicts just the same (OFD locks: per open file, not per process).
    refused(cliProcess(['io', '-c', 'write -P 9 0 4096', top]), 'io write');
    refused(await cli('img', 'commit', top), 'img commit');
    refused(await cli('img', 'rebase', '-u', '-b', '', top), 'img rebase -u');
    refused(await cli('img', 'stream', top), 'img stream');
    refused(await cli('io', '-r', '-c', 'read 0 4096', top), 'io -r read (no -U)');
    refused(await cli('img', 'info', top), 'img info (no -U)');
    refused(await cli('img', 'check', top), 'img check (no -U), as qemu-img check');
    expect(snapshotOf(dir)).toEqual(before);
    expect((await cli('img', 'check', '-U', top)).status).toBe(0);
    expect((await cli('img', 'check', '-U', '-r', 'leaks', top)).stderr).toMatch(/ECOW_BAD_ARGUMENT: -U \(force-share\) cannot be used with -r/);
    const read = await cli('io', '-U', '-r', '-c', 'read -P 2 131072 65536', top);
    expect(read.status, read.stderr).toBe(0);
    expect((await cli('img', 'info', '-U', '--output', 'json', top)).status).toBe(0);
    expect((await cli('io', '-U', '-c', 'write 0 512', top)).stderr).toMatch(/ECOW_BAD_ARGUMENT: -U \(force-share\) can only be used with read-only images/);
  });

  it('the base it reads (qemu does not share write on a backing file) cannot be committed into', async () => {
    const dir = tmpDir('cowchain-locks-');
    const { base, top } = await chain(dir);
    const other = path.join(dir, 'other.qcow2');
    createQcow2(other, MiB, {}, { file: base, format: 'qcow2' });
    await hold(top, 'qcow2'); // holds base.qcow2 as its backing file
    const before = snapshotOf(dir);
    refused(await cli('img', 'commit', other), 'commit another overlay into the held backing file');
    expect(snapshotOf(dir)).toEqual(before);
  });

  it('volume driver: a detached snapshot create or delete of a volume qemu runs is refused, nothing changed', async () => {
    const dir = tmpDir('cowchain-locks-vol-');
    const d = new VolumeDriver({ dir });
    await d.createVolume(VOL, MiB, { format: 'raw' });
    await d.createSnapshot(VOL, SNAP, { status: 'available' });
    const active = path.join(dir, `volume-${VOL}.${SNAP}`);
    await hold(active, 'qcow2');
    const before = snapshotOf(dir);
    for (const [what, op] of [
      ['snapshot create', () => d.createSnapshot(VOL, SNAP2, { status: 'available' })],
      ['snapshot delete', () => d.deleteSnapshot(VOL, SNAP, { status: 'available' })],
      ['extend', () => d.extendVolume(VOL, 2 * MiB, { status: 'available' })],
      ['revert', () => d.revertToSnapshot(VOL, SNAP, { status: 'available' })],
    ] as const) {
      await expect(op(), what).rejects.toSatisfy((e) => isCowError(e, 'ECOW_IMAGE_LOCKED'));
      expect(snapshotOf(dir), what).toEqual(before);
    }
    // Reading what an attached volume's guest writes is what Cinder does, with force-share.
    expect((await d.volumeInfo(VOL)).active).toBe(`volume-${VOL}.${SNAP}`);
  });

  it('without the native binding (COWCHAIN_OFD_LOCKS=detect) the lock is still seen in /proc/locks', async () => {
    const dir = tmpDir('cowchain-locks-');
    const file = path.join(dir, 'disk.raw');
    writePatternedRaw(file, MiB, 3);
    await hold(file, 'raw');
    const before = snapshotOf(dir);
    process.env.COWCHAIN_OFD_LOCKS = 'detect';
    try {
      refused(cliProcess(['io', '-f', 'raw', '-c', 'write -P 9 0 4096', file]), 'io write (detect)');
      process.env.COWCHAIN_OFD_LOCKS = 'off';
      // The documented escape: no locks at all (the write then lands under qemu's feet).
      expect(cliProcess(['io', '-f', 'raw', '-c', 'write -P 9 0 4096', file]).status).toBe(0);
    } finally {
      delete process.env.COWCHAIN_OFD_LOCKS;
    }
    expect(snapshotOf(dir)).not.toEqual(before);
  });
});

if (process.env.CI === 'true') {
  it('CI builds the native binding (npm ci runs build:native)', () => {
    expect(lockSupport()).toBe('native');
  });
}

if (native) {
  describe('while cowchain writes the image (native OFD locks)', () => {
    it('qemu-img is refused ("Failed to get shared "write" lock"), as it is by qemu-io', async () => {
      const dir = tmpDir('cowchain-locks-');
      const { base, top } = await chain(dir);
      const img = openImage(top, { writable: true });
      try {
        const info = qemuImg(['info', top], { ok: [0, 1] });
        expect(info.status).toBe(1);
        expect(info.stderr).toMatch(/Failed to get shared "write" lock/);
        const commit = qemuImg(['commit', top], { ok: [0, 1] });
        expect(commit.status).toBe(1);
        // qemu-io opening the base read-write while our chain holds it as backing: refused too.
        const io = qemuImg(['info', '-U', base]);
        expect(io.status).toBe(0);
      } finally {
        img.close();
      }
      expect(qemuImg(['info', top]).status).toBe(0);
    });

    it('two cowchain writers on one image: the second is refused, in this process and in another', () => {
      const dir = tmpDir('cowchain-locks-');
      const file = path.join(dir, 'disk.raw');
      writePatternedRaw(file, MiB, 4);
      const first = new FileBackend(file, true);
      try {
        expect(() => new FileBackend(file, true)).toThrow(/ECOW_IMAGE_LOCKED/);
        const before = fs.readFileSync(file);
        refused(cliProcess(['io', '-f', 'raw', '-c', 'write -P 7 0 1M', file]), 'second writer process');
        expect(fs.readFileSync(file).equals(before)).toBe(true);
        // A reader is refused too (the writer does not share write); -U reads.
        expect(() => new FileBackend(file, false, false, 'read')).toThrow(/ECOW_IMAGE_LOCKED/);
        new FileBackend(file, false, false, 'none').close();
      } finally {
        first.close();
      }
      new FileBackend(file, true).close(); // released on close
    });

    it('qemu opening an image while a cowchain commit writes it is refused (the commit holds the base)', async () => {
      const dir = tmpDir('cowchain-locks-');
      const { base, top } = await chain(dir);
      // The commit's base stays open for writing from its first write to its end; a chain opened
      // the same way stands for it here (the commit itself runs in one synchronous call).
      const img = openImage(top, { writableDepths: [1] });
      try {
        const r = qemuImg(['info', base], { ok: [0, 1] });
        expect(r.status).toBe(1);
        expect(r.stderr).toMatch(/Failed to get shared "write" lock/);
      } finally {
        img.close();
      }
    });
  });
}
