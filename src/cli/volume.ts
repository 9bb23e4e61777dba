// What `cowchain volume …` and `cowchain snapshot …` do (their options: volume-commands.ts): the
// Cinder-semantics volume driver on one volume directory; `--output json` prints the operation's
// result object. Errors: one line `cowchain: ECOW_…: message`, exit 1 (main.ts). Attached
// (`--status in-use`) operations go through Nova when `--nova-endpoint` and `--status-listen` are
// given (nova-options.ts); without them they fail with ECOW_HYPERVISOR_UNAVAILABLE and change nothing.
// The volume lock is the share lease, or etcd with `--coordination etcd://…` / COWCHAIN_COORDINATION
// (coordination-option.ts). SIGINT/SIGTERM: interrupt.ts (exit 130/143).
import { CowError } from '../errors.js';
import { VolumeDriver, type VolumeEncryption } from '../volume/driver.js';
import { parseSecureFilePermissions } from '../volume/file-modes.js';
import type { VolumeCoordinator } from '../volume/coordination.js';
import type { FsckReport } from '../volume/fsck.js';
import type { Hypervisor } from '../volume/hypervisor.js';
import type { VolumeStatus } from '../volume/status.js';
import { parseSize } from './args.js';
import { secretById, secretObjects, type SecretObjects } from './secrets.js';
import { coordinationFrom } from './coordination-option.js';
import { withHypervisor, type NovaCliOptions } from './nova-options.js';
import { print } from './output.js';
import { writeStderr } from './write.js';
import { progressPrinter } from './progress.js';
import type { ProgressCallback } from '../image/job.js';
import { Interruption } from './interrupt.js';
import { parseImageFormat, type ImageFormat } from '../image/format.js';

export interface Common {
  dir: string;
  volume: string;
  output: string;
  baseFormat?: string;
  probeFormat?: boolean;
  secureFilePermissions?: string;
  coordination?: string;
  /** -p, on the commands that copy data. */
  p?: boolean;
  /** `--object secret,id=…,file=…` (repeatable) and the ids naming the volume's key (and a clone's). */
  object?: string[];
  keySecret?: string;
  toKeySecret?: string;
  encryptIterTime?: string;
}

/** The coordinator of each command's options, made at first use and closed by run(). */
const coordinators = new WeakMap<Common, VolumeCoordinator>();

/** The running command's SIGINT/SIGTERM handling (interrupt.ts); one command per process. */
let interruption = new Interruption();

function driver(o: Common, hypervisor?: Hypervisor): VolumeDriver {
  let coordination = coordinators.get(o);
  if (!coordination) coordinators.set(o, (coordination = coordinationFrom(o.coordination)));
  return new VolumeDriver({
    signal: interruption.signal,
    jobs: interruption.jobs,
    onNotice: (m) => writeStderr(`cowchain: ${m}\n`),
    dir: o.dir,
    hypervisor,
    coordination,
    baseFormat: format(o.baseFormat),
    probeFormat: o.probeFormat ?? false,
    secureFilePermissions: parseSecureFilePermissions(o.secureFilePermissions ?? 'auto'),
    onWarning: (m) => writeStderr(`cowchain: warning: ${m}\n`),
    encryption: encryption(o),
  });
}

/**
 * The driver's key provider from `--object` secrets: `--key-secret` keys the volume, and
 * `--to-key-secret` (default: the same) the new volume of a clone. The secrets are read from
 * their files when the driver first asks for one; no message repeats them.
 */
function encryption(o: Common & { to?: string }): VolumeEncryption | undefined {
  if (o.keySecret === undefined) {
    if (o.toKeySecret !== undefined) throw new CowError('ECOW_BAD_ARGUMENT', '--to-key-secret needs --key-secret (the source volume is encrypted too)');
    return undefined;
  }
  const iterTimeMs = o.encryptIterTime === undefined ? undefined : Number(o.encryptIterTime);
  if (iterTimeMs !== undefined && !(Number.isInteger(iterTimeMs) && iterTimeMs > 0)) throw new CowError('ECOW_BAD_ARGUMENT', `--encrypt-iter-time must be a positive whole number of ms, not "${o.encryptIterTime}"`);
  let objects: Promise<SecretObjects> | undefined;
  const keySecret = async (id: string): Promise<Uint8Array | undefined> => {
    const secrets = await (objects ??= secretObjects(o.object));
    if (id === o.volume) return secretById(secrets, o.keySecret!, '--key-secret');
    if (id === o.to) return secretById(secrets, o.toKeySecret ?? o.keySecret!, o.toKeySecret === undefined ? '--key-secret' : '--to-key-secret');
    return undefined;
  };
  return { keySecret, ...(iterTimeMs === undefined ? {} : { iterTimeMs }) };
}

/** A driver with the Nova path the options describe, for the commands that may act on attached volumes. */
function withDriver<T>(o: Common & NovaCliOptions, fn: (d: VolumeDriver, onProgress?: ProgressCallback) => Promise<T>): (onProgress?: ProgressCallback) => Promise<T> {
  return (onProgress) => withHypervisor(o, (hypervisor) => fn(driver(o, hypervisor), onProgress));
}

function outputMode(o: Common): 'human' | 'json' {
  if (o.output === 'human' || o.output === 'json') return o.output;
  throw new CowError('ECOW_BAD_ARGUMENT', `--output must be human or json, not "${o.output}"`);
}

/**
 * Run `op`, print its result as JSON or as `human` text (--output is validated first), then
 * `after` (e.g. an exit status that carries meaning).
 */
async function run<T>(o: Common, op: (onProgress?: ProgressCallback) => Promise<T>, human: (r: T) => string, after?: (r: T) => void): Promise<void> {
  const mode = outputMode(o);
  interruption = new Interruption();
  // -p: qemu-img's progress lines, on stderr (stdout is the result)
  const progress = progressPrinter(!!o.p, writeStderr);
  let result: T;
  let ok = false;
  try {
    result = await interruption.during(() => op(progress.onProgress));
    ok = true;
  } finally {
    progress.stop(ok);
    await coordinators.get(o)?.close();
  }
  print(mode === 'json' ? JSON.stringify(result, null, 2) : human(result));
  after?.(result);
}

function format(f: string | undefined): ImageFormat | undefined {
  return f === undefined ? undefined : parseImageFormat(f, 'format');
}

function novaOutcome(s: string | undefined): 'done' | 'failed' | undefined {
  if (s === undefined || s === 'done' || s === 'failed') return s;
  throw new CowError('ECOW_BAD_ARGUMENT', `--nova-outcome must be done or failed, not "${s}"`);
}

const size = (s: string | undefined, what: string) => (s === undefined ? undefined : parseSize(s, what));

function humanFsck(r: FsckReport): string {
  const lines = [
    ...r.actions.map((a) => `${r.dryRun ? 'would: ' : ''}${a.kind}: ${a.detail}`),
    ...r.problems.map((p) => `problem: ${p}`),
    ...r.notes.map((n) => `note: ${n}`),
  ];
  lines.push(r.problems.length ? 'problems remain' : r.actions.length ? (r.dryRun ? 'repairs needed' : 'repaired') : 'clean');
  return lines.join('\n');
}

export function volumeCreate(o: Common & { size: string; format?: string; encrypt?: boolean }): Promise<void> {
  return run(
    o,
    () => driver(o).createVolume(o.volume, parseSize(o.size, '--size'), { format: format(o.format), encrypted: o.encrypt ?? false }),
    (r) => `created ${r.file} (${r.format}${o.encrypt ? ', encrypted' : ''}, ${r.size} bytes)`,
  );
}

export function volumeInfo(o: Common): Promise<void> {
  return run(o, () => driver(o).volumeInfo(o.volume), (r) => {
    const lines = [`volume: ${r.volumeId}`, `active: ${r.active}`, 'snapshots:'];
    for (const [id, file] of Object.entries(r.snapshots)) lines.push(`  ${id}: ${file}`);
    lines.push('chain:');
    for (const l of r.chain) lines.push(`  ${l.name} (${l.format}${l.encrypted ? ', encrypted' : ''}, ${l.virtualSize} bytes)${l.backing ? ` -> ${l.backing} (${l.backingFormat ?? 'probed'})` : ''}`);
    if (r.pending) lines.push(`pending: interrupted ${r.pending.op} of snapshot ${r.pending.snapshot} (the next operation or fsck finishes it)`);
    return lines.join('\n');
  });
}

export function volumeFromSnapshot(o: Common & { snapshot: string; out: string; format?: string; size?: string }): Promise<void> {
  return run(o, (onProgress) => driver(o).createVolumeFromSnapshot(o.volume, o.snapshot, o.out, { format: format(o.format), size: size(o.size, '--size'), onProgress }), (r) => `created ${r.file} (${r.format}, ${r.size} bytes)`);
}

export function volumeClone(o: Common & NovaCliOptions & { to: string; status: string; format?: string; size?: string; targetDir?: string }): Promise<void> {
  return run(
    o,
    withDriver(o, (d, onProgress) => d.cloneVolume(o.volume, o.to, { status: o.status as VolumeStatus, format: format(o.format), size: size(o.size, '--size'), targetDir: o.targetDir, onProgress })),
    (r) => `cloned into ${r.file} (${r.format}, ${r.size} bytes)`,
  );
}

export function volumeExtend(o: Common & { size: string; status: string }): Promise<void> {
  return run(o, () => driver(o).extendVolume(o.volume, parseSize(o.size, '--size'), { status: o.status as VolumeStatus }), (r) => `extended ${r.file} to ${r.size} bytes`);
}

export function volumeRevert(o: Common & { snapshot: string; status: string }): Promise<void> {
  return run(o, () => driver(o).revertToSnapshot(o.volume, o.snapshot, { status: o.status as VolumeStatus }), (r) => `reverted: ${r.file} is a fresh overlay`);
}

export function volumeDelete(o: Common): Promise<void> {
  return run(o, () => driver(o).deleteVolume(o.volume), (r) => (r.removed.length ? r.removed.map((n) => `removed ${n}`).join('\n') : 'nothing to remove'));
}

export function volumeFsck(o: Common & NovaCliOptions & { status: string; dryRun?: boolean; novaOutcome?: string; discardJournal?: boolean }): Promise<void> {
  return run(o, withDriver(o, (d, onProgress) => d.fsck(o.volume, { status: o.status as VolumeStatus, dryRun: o.dryRun ?? false, novaOutcome: novaOutcome(o.novaOutcome), discardJournal: o.discardJournal ?? false, onProgress })), humanFsck, (r) => {
    // the report is printed either way; what is left for a human makes it fail
    if (r.problems.length) process.exitCode = 1;
  });
}

export function snapshotCreate(o: Common & NovaCliOptions & { snapshot: string; status: string; size?: string }): Promise<void> {
  return run(o, withDriver(o, (d) => d.createSnapshot(o.volume, o.snapshot, { status: o.status as VolumeStatus, size: size(o.size, '--size') })), (r) => `snapshot ${r.snapshotId}: ${r.file} (on ${r.backing}) is the active file`);
}

export function snapshotDelete(o: Common & NovaCliOptions & { snapshot: string; status: string }): Promise<void> {
  return run(
    o,
    withDriver(o, (d, onProgress) => d.deleteSnapshot(o.volume, o.snapshot, { status: o.status as VolumeStatus, onProgress })),
    (r) =>
      r.outcome === 'not-found'
        ? `snapshot ${r.snapshotId} not found: nothing to do`
        : `snapshot ${r.snapshotId} ${r.outcome === 'stale' ? 'was stale: entry dropped' : 'deleted'}${r.removed.length ? ` (removed ${r.removed.join(', ')})` : ''}; active: ${r.info.active}`,
  );
}
