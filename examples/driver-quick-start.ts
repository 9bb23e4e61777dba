// Quick start: a volume's snapshot lifecycle with the volume driver, as Cinder drives it for a
// detached volume. Run from a checkout after `npm ci` (which builds):
//   node --experimental-strip-types examples/driver-quick-start.ts   (Node 22.6+)
//   deno run --allow-read --allow-write --allow-env examples/driver-quick-start.ts
// or compile it with tsc. It works in a fresh temporary directory and removes it at the end.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { VolumeDriver, defaultEnginePool, isCowError, openImage, parseSize } from 'cowchain';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cowchain-quick-start-'));
// jobs: the driver's commits and copies run in engine worker threads, not on this thread.
const driver = new VolumeDriver({ dir, jobs: defaultEnginePool() });
const volume = randomUUID();

/** The guest's write: into the active file, whichever it is now. */
async function write(offset: number, text: string): Promise<void> {
  const { activeFile } = await driver.attachInfo(volume);
  const img = openImage(path.join(dir, activeFile), { writable: true });
  try {
    img.write(offset, new TextEncoder().encode(text));
  } finally {
    img.close();
  }
}

/** What a snapshot holds at `offset`, read from a new image made from it. */
async function readSnapshot(snapshot: string, offset: number, length: number): Promise<string> {
  const out = path.join(dir, `copy-of-${snapshot}.qcow2`);
  await driver.createVolumeFromSnapshot(volume, snapshot, out, { format: 'qcow2' });
  const img = openImage(out, { format: 'qcow2' });
  try {
    return new TextDecoder().decode(img.read(offset, length));
  } finally {
    img.close();
    fs.rmSync(out);
  }
}

try {
  const created = await driver.createVolume(volume, parseSize('1G'), { format: 'raw' });
  console.log(`created ${created.file} (${created.format}, ${created.size} bytes)`);

  const snapshots: string[] = [];
  for (const day of ['mon', 'tue', 'wed', 'thu']) {
    await write(4096, day);
    const snapshot = randomUUID();
    const r = await driver.createSnapshot(volume, snapshot, { status: 'available' });
    console.log(`snapshot ${day}: new active file ${r.file}, backed by ${r.backing}`);
    snapshots.push(snapshot);
  }
  await write(4096, 'fri');

  // Delete in any order; each remaining snapshot keeps exactly what it held.
  for (const i of [1, 3, 0]) {
    const r = await driver.deleteSnapshot(volume, snapshots[i], { status: 'available' });
    console.log(`deleted snapshot ${i}: ${r.outcome}, removed ${r.removed.join(', ') || 'no file'}`);
  }
  assert.equal(await readSnapshot(snapshots[2], 4096, 3), 'wed');

  const info = await driver.volumeInfo(volume);
  console.log(`active ${info.active}; chain ${info.chain.map((l) => `${l.name} (${l.format})`).join(' <- ')}`);
  assert.equal(info.chain.length, 2);

  // Errors carry a stable code.
  try {
    await driver.createSnapshot(volume, 'not-a-uuid', { status: 'available' });
  } catch (e) {
    if (!isCowError(e)) throw e;
    console.log(`refused: ${e.code}`);
  }
  await driver.deleteVolume(volume);
  console.log('quick start: done');
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
