// Start-up of the `cowchain` bin (issue 15): short commands as whole processes, each against
// `node -e 0` in the same run (the floor any Node CLI pays) and, where qemu-img has the same
// operation, against qemu-img. The tasks run in rounds, every task once per round in turn, and the
// samples of all rounds are pooled, so a machine whose load drifts weighs on every column alike.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Bench, type Task } from 'tinybench';
import { VolumeDriver, openImage } from 'cowchain';
import { median, run, taskSamples } from './common.js';

const VOL = '5e1f0000-0000-4000-8000-000000000001';
const SNAP = '5e1f0000-0000-4000-8000-0000000000aa';
const MiB = 2 ** 20;

export interface StartupRow {
  command: string;
  /** Median wall time of the whole process, ms. */
  ms: number;
  /** The same median over `node -e 0`'s. */
  ratio: number;
  /** The ratio the issue asks for at most. */
  target: number;
  /** qemu-img doing the same, where it can, ms. */
  qemuMs?: number;
}

export interface StartupResult {
  nodeMs: number;
  rows: StartupRow[];
}

/** A volume with one snapshot's worth of history: the base and an overlay, 1 GiB each, sparse. */
async function prepare(dir: string): Promise<VolumeDriver> {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  run('qemu-img', ['create', '-q', '-f', 'raw', 'base.raw', '1G'], { cwd: dir });
  run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', 'overlay.qcow2'], { cwd: dir });
  run('qemu-io', ['-c', 'write -P 0x11 0 4M', '-c', 'write -P 0x22 512M 4M', 'overlay.qcow2'], { cwd: dir });
  const driver = new VolumeDriver({ dir });
  await driver.createVolume(VOL, 1024 * MiB, { format: 'qcow2' });
  return driver;
}

/** The snapshot in place, with 1 MiB written after it: what its delete commits. */
async function snapshotWithData(driver: VolumeDriver, dir: string): Promise<void> {
  const { file } = await driver.createSnapshot(VOL, SNAP, { status: 'available' });
  const img = openImage(path.join(dir, file), { writable: true });
  try {
    img.write(0, new Uint8Array(MiB).fill(0x5a));
  } finally {
    img.close();
  }
}

/** `rounds` rounds of `perRound` runs of every command; medians of the pooled samples. */
export async function benchStartup(root: string, cli: string, rounds = 5, perRound = 4): Promise<StartupResult> {
  const dir = path.join(root, 'startup');
  const driver = await prepare(dir);
  const cow = (...args: string[]) => () => run(process.execPath, [cli, ...args], { cwd: dir });
  let created = 0;
  const overlayName = () => `new-${created++}.qcow2`;
  const pooled = new Map<string, number[]>();
  for (let round = 0; round < rounds; round++) {
    const bench = new Bench({ iterations: perRound, time: 0, warmupIterations: round === 0 ? 2 : 0, warmupTime: 0, retainSamples: true });
    bench
      .add('node -e 0', () => run(process.execPath, ['-e', '0'], { cwd: dir }))
      .add('cowchain img info', cow('img', 'info', 'overlay.qcow2'))
      .add('qemu-img info', () => run('qemu-img', ['info', 'overlay.qcow2'], { cwd: dir }))
      .add('cowchain img create (overlay)', () => run(process.execPath, [cli, 'img', 'create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', overlayName()], { cwd: dir }))
      .add('qemu-img create (overlay)', () => run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', overlayName()], { cwd: dir }))
      .add('cowchain volume info', cow('volume', 'info', '--dir', '.', '--volume', VOL))
      .add('cowchain snapshot create', cow('snapshot', 'create', '--dir', '.', '--volume', VOL, '--snapshot', SNAP), {
        beforeEach: async () => {
          await driver.deleteSnapshot(VOL, SNAP, { status: 'available' });
        },
      })
      .add('cowchain snapshot delete (1 MiB)', cow('snapshot', 'delete', '--dir', '.', '--volume', VOL, '--snapshot', SNAP), {
        beforeEach: async () => {
          await driver.deleteSnapshot(VOL, SNAP, { status: 'available' });
          await snapshotWithData(driver, dir);
        },
      });
    await bench.run();
    for (const task of bench.tasks) pooled.set(task.name, [...(pooled.get(task.name) ?? []), ...taskSamples(task)]);
    for (const f of fs.readdirSync(dir)) if (f.startsWith('new-')) fs.rmSync(path.join(dir, f));
  }
  fs.rmSync(dir, { recursive: true, force: true });
  const ms = (name: string) => median(pooled.get(name)!);
  const nodeMs = ms('node -e 0');
  const row = (command: string, target: number, qemu?: string): StartupRow => ({
    command,
    ms: ms(`cowchain ${command}`),
    ratio: ms(`cowchain ${command}`) / nodeMs,
    target,
    qemuMs: qemu === undefined ? undefined : ms(qemu),
  });
  return {
    nodeMs,
    rows: [
      row('img info', 1.5, 'qemu-img info'),
      row('img create (overlay)', 1.5, 'qemu-img create (overlay)'),
      row('volume info', 1.5),
      row('snapshot create', 2),
      row('snapshot delete (1 MiB)', 2),
    ],
  };
}
