/**
 * Create snapshot S (docs/volume-semantics.md, "Create a snapshot S"): a new qcow2 overlay
 * `volume-<vol>.<S>` on the active file A (bare name, A's format, the volume's size); when
 * attached, the hypervisor moves the guest onto it; then the info file maps S and `active` to it.
 *
 * Crash points, with the journal written first:
 *  - before the overlay is complete, or before the info file is written: recovery finds the
 *    info file without S and removes the overlay (detached); attached, it keeps the overlay when
 *    the guest may be on it (see recover.ts);
 *  - after the info file: recovery sees S recorded and only drops the journal.
 * A failure (not a crash) before the info file removes the overlay and leaves the info file as
 * it was.
 */
import { validateSnapshotId } from './names.js';
import { CowError } from '../errors.js';
import type { VolumeInfo } from './info-file.js';
import { clearJournal, writeJournal, type CreateJournal } from './journal.js';
import type { NovaOutcome, Recovery } from './recovery.js';
import { needHypervisor, type OperationContext } from './context.js';
import { needsFsck, provesFailure } from './hypervisor-outcome.js';
import { checkSize } from './size.js';
import { MAX_ATTACHED_CHAIN_DEPTH, MAX_SNAPSHOT_CHAIN_DEPTH } from './volume-files.js';
import { isAttached, type VolumeStatus } from './status.js';

export interface CreateSnapshotOptions {
  /** The volume's status: `available`, `in-use` (through the hypervisor) or `backing-up`. The driver checks it (checkStatus). */
  status: VolumeStatus;
  /** Virtual size of the overlay (bytes); default and minimum: the active image's size. */
  size?: number;
}

export interface CreateSnapshotResult {
  snapshotId: string;
  /** The new overlay, now the active file. */
  file: string;
  /** The file it is backed by (the previous active file). */
  backing: string;
  info: VolumeInfo;
}

export async function createSnapshot(ctx: OperationContext, snapshotId: string, options: CreateSnapshotOptions): Promise<CreateSnapshotResult> {
  const { files } = ctx;
  validateSnapshotId(snapshotId);
  const { status } = options;
  const hypervisor = isAttached(status) ? needHypervisor(ctx, `snapshot create ${snapshotId}`) : undefined;
  const { info } = await files.readInfo();
  const file = files.snapshotFile(snapshotId);
  if (Object.hasOwn(info, snapshotId)) {
    throw new CowError('ECOW_EXISTS', `snapshot ${snapshotId} of volume ${files.volumeId} already exists (${info[snapshotId]})`);
  }
  if (files.exists(file)) {
    throw new CowError('ECOW_EXISTS', `${files.path(file)} exists but the info file does not record snapshot ${snapshotId}; run fsck`);
  }
  const backing = info.active;
  const chain = files.chain(backing); // the whole chain below the new overlay, validated
  const [top] = chain;
  files.needKey(chain, `snapshot create ${snapshotId}`);
  // Never build a chain the driver (or the hypervisor) then refuses to open: a clone's temporary
  // snapshot may go one deeper than a snapshot the user asks for.
  const temporary = snapshotId.startsWith('tmp-snap-');
  const limit = (hypervisor ? MAX_ATTACHED_CHAIN_DEPTH : MAX_SNAPSHOT_CHAIN_DEPTH) + (temporary ? 1 : 0);
  if (chain.length + 1 > limit) {
    throw new CowError(
      'ECOW_CHAIN_TOO_DEEP',
      `snapshot ${snapshotId} would make the chain of volume ${files.volumeId} ${chain.length + 1} images deep; the limit${hypervisor ? ' while attached' : ''} is ${limit}: delete snapshots first`,
    );
  }
  const size = options.size === undefined ? top.virtualSize : checkSize(options.size, 'snapshot size');
  if (size < top.virtualSize) {
    throw new CowError('ECOW_BAD_ARGUMENT', `snapshot size ${size} is smaller than the active image ${backing} (${top.virtualSize} bytes)`);
  }

  files.checkWritable([], `snapshot create ${snapshotId}`);
  await writeJournal(files, { version: 1, op: 'create-snapshot', snapshot: snapshotId, file, backing, phase: 'overlay' });
  ctx.step('create:journal');
  const next: VolumeInfo = { ...info, active: file, [snapshotId]: file };
  let accepted = false;
  try {
    // Over an encrypted file, a LUKS overlay keyed by the same secret (as Cinder creates it).
    await files.createOverlay(file, { size, backing, backingFormat: top.format, encrypted: top.encrypted === true });
    ctx.step('create:overlay');
    if (hypervisor) {
      // From here on the guest may move onto the overlay at any moment: recovery must know.
      await writeJournal(files, { version: 1, op: 'create-snapshot', snapshot: snapshotId, file, backing, phase: 'hypervisor' });
      const onAccepted = async () => {
        accepted = true;
        await writeJournal(files, { version: 1, op: 'create-snapshot', snapshot: snapshotId, file, backing, phase: 'hypervisor', accepted: true });
        ctx.step('create:accepted');
      };
      await hypervisor.createSnapshot(files.volumeId, snapshotId, { type: 'qcow2', new_file: file, snapshot_id: snapshotId }, { signal: ctx.signal, onAccepted });
      ctx.step('create:hypervisor');
    }
    await files.writeInfo(next);
    ctx.step('create:info');
  } catch (e) {
    // Accepted and not proven failed: the guest may be on the overlay; fsck decides.
    if (accepted && !provesFailure(e)) throw needsFsck(ctx, `snapshot create ${snapshotId}`, e);
    await undoCreate(ctx, snapshotId, file);
    throw e;
  }
  await clearJournal(files);
  ctx.step('create:done');
  return { snapshotId, file, backing, info: next };
}

/**
 * After a failure: unless the info file records the snapshot after all (a write that reached
 * the disk and then reported an error), remove the overlay, then the journal. Nothing is touched
 * once the lock is lost (another holder's recovery owns the journal then); a failure here leaves
 * the journal for recovery.
 */
async function undoCreate(ctx: OperationContext, snapshotId: string, file: string): Promise<void> {
  const { files } = ctx;
  try {
    ctx.lock.assertHeld();
    const { info } = await files.readInfo();
    if (info[snapshotId] === file) return;
    await files.unlink(file);
    await clearJournal(files);
  } catch {
    // recovery (the next operation, or fsck) finishes the cleanup from the journal
  }
}

/**
 * Recovery of an interrupted create (the journal names S, its overlay and the phase). The info
 * file records S → done. Otherwise the overlay goes, unless the hypervisor was asked to move the
 * guest onto it and it may be there: data in the overlay prove the guest wrote to it (kept and
 * recorded as the active file, "adopted"); an empty overlay of a detached volume can go; an empty
 * overlay of an attached volume is undecidable without the hypervisor's word (ECOW_NEEDS_FSCK,
 * nothing changed) — fsck's `novaOutcome` gives it.
 */
export async function recoverCreateSnapshot(ctx: OperationContext, journal: CreateJournal, status: VolumeStatus, novaOutcome?: NovaOutcome): Promise<Recovery> {
  const { files } = ctx;
  const { info } = await files.readInfo();
  const { snapshot, file } = journal;
  const done = async (action: Recovery['action'], detail: string): Promise<Recovery> => {
    await clearJournal(files);
    return { journal, action, detail };
  };
  if (info[snapshot] === file) return done('completed', `snapshot ${snapshot} create had completed (${file})`);
  if (!files.exists(file)) return done('rolled-back', `snapshot ${snapshot} create interrupted before ${file} existed`);
  const hypervisor = journal.phase === 'hypervisor';
  const data = hypervisor && safeHoldsData(ctx, file);
  const accepted = journal.accepted ? 'Nova accepted the request and never reported its outcome' : 'Nova was asked to move the guest';
  if (data && novaOutcome === 'failed') {
    throw new CowError('ECOW_INVALID_STATE', `interrupted create of snapshot ${snapshot}: --nova-outcome failed, but ${file} holds data: the guest wrote to it, so it runs on it; nothing changed`);
  }
  if (data || (hypervisor && novaOutcome === 'done')) {
    // The guest is on the overlay (it wrote into it, or Nova did switch): record it as active.
    if (info.active !== journal.backing || files.header(file).backing !== journal.backing) {
      throw new CowError('ECOW_INVALID_STATE', `interrupted create of snapshot ${snapshot}: the guest is on ${file} but the chain changed since (active ${info.active}); resolve by hand`);
    }
    await files.writeInfo({ ...info, active: file, [snapshot]: file });
    const why = data ? 'it holds data' : 'Nova did the switch (--nova-outcome done)';
    return done('adopted', `snapshot ${snapshot} create interrupted after the guest moved onto ${file} (${why}): recorded it as the active file`);
  }
  if (hypervisor && isAttached(status) && novaOutcome !== 'failed') {
    throw new CowError(
      'ECOW_NEEDS_FSCK',
      `interrupted create of snapshot ${snapshot} of attached volume ${files.volumeId}: ${accepted}; ${file} holds no data and the info file's active is still ${info.active}, so whether the guest moved onto ${file} cannot be told from the files. Run fsck with --nova-outcome done (the guest is on ${file}) or failed (it is not: ${file} is removed), or detach the volume and run fsck`,
    );
  }
  await files.unlink(file);
  return done('rolled-back', `snapshot ${snapshot} create interrupted before the info file recorded it: removed ${file}`);
}

/** An overlay that does not even open (a partial header) holds nothing. */
function safeHoldsData(ctx: OperationContext, file: string): boolean {
  try {
    return ctx.files.holdsData(file);
  } catch {
    return false;
  }
}
