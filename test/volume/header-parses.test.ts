// Issue 16: a volume operation opens its chain once. Every qcow2 open in the engine parses the
// file's header (and its snapshot table and L1 table); this counts them, per file, through a spy
// on the engine's exports, for a snapshot delete of each kind run in this thread (a worker opens
// its job's files again in its own engine: that is the price of the thread).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import type { FileBackend } from '../../src/engine/backend.js';
import { tmpDir } from '../support/qemu.js';
import { SNAP, VolumeFixture, f } from '../support/volume.js';

let dir: string;
beforeEach(() => {
  dir = tmpDir('cowchain-parses-');
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Count the engine's qcow2 opens (each parses the header) per file name while `fn` runs. */
async function countOpens(fn: () => Promise<unknown>): Promise<Map<string, number>> {
  const engine = Engine.get() as unknown as { raw: Record<string, unknown>; backends: (FileBackend | null)[] };
  const raw = engine.raw;
  const counts = new Map<string, number>();
  const count = (handle: number) => {
    const name = path.basename(engine.backends[handle]?.path ?? '?');
    counts.set(name, (counts.get(name) ?? 0) + 1);
  };
  engine.raw = new Proxy(raw, {
    get(target, key) {
      const value = Reflect.get(target, key) as unknown;
      if (key === 'openQcow2') {
        return (handle: number, ...rest: unknown[]) => {
          count(handle);
          return (value as (...a: unknown[]) => unknown)(handle, ...rest);
        };
      }
      return value;
    },
  });
  try {
    await fn();
  } finally {
    engine.raw = raw;
  }
  return counts;
}

/** volume <- .aaaa <- .bbbb (active), qcow2 throughout; jobs in this thread unless `pool`. */
async function seeded(pool = false): Promise<VolumeFixture> {
  const v = new VolumeFixture(dir, undefined, pool ? {} : { jobs: undefined });
  await v.seedSnapshots({ format: 'qcow2' });
  return v;
}

it('a detached delete of a middle snapshot parses its file once', async () => {
  const v = await seeded();
  const counts = await countOpens(() => v.del('aaaa'));
  console.log('delete of a middle snapshot: header parses per file', Object.fromEntries(counts));
  expect(counts.get(f('aaaa'))).toBe(1);
  v.expectSnapshotsIntact();
});

it('a detached delete of the active snapshot parses its file once', async () => {
  const v = await seeded();
  expect(v.active()).toBe(f('bbbb'));
  const counts = await countOpens(() => v.del('bbbb'));
  console.log('delete of the active snapshot: header parses per file', Object.fromEntries(counts));
  expect(counts.get(f('bbbb'))).toBe(1);
  v.expectSnapshotsIntact();
});

it('with jobs in an engine worker, this thread opens the snapshot file once (the worker opens the job files in its own engine)', async () => {
  const v = await seeded(true);
  const counts = await countOpens(() => v.del('aaaa'));
  // In this thread: the live chain, opened once (and the next file's header, rewritten).
  expect(counts.get(f('aaaa'))).toBe(1);
  v.expectSnapshotsIntact();
});

it('a volume made from a snapshot parses each file of the chain it copies once', async () => {
  const v = await seeded();
  const out = path.join(dir, 'copy.raw');
  const counts = await countOpens(() => v.driver.createVolumeFromSnapshot(v.vol, SNAP.bbbb, out));
  console.log('volume from a snapshot: header parses per file', Object.fromEntries(counts));
  // The snapshot's own file (its header names the chain), then the chain below it: aaaa <- base.
  expect(Object.fromEntries(counts)).toStrictEqual({ [f('bbbb')]: 1, [f('aaaa')]: 1, [v.base]: 1 });
  expect(fs.readFileSync(out).equals(v.recorded.get(SNAP.bbbb)!)).toBe(true);
});
