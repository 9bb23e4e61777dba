/**
 * An in-process hypervisor for driver tests: does what libvirt does for Nova's assisted
 * snapshots, with our own engine — switch the guest's disk (create), blockRebase = pull
 * (streamImage), blockCommit of a lower layer (commitImage, then the overlay above it is
 * re-pointed, as qemu does). It validates the request shapes with the strict Nova schemas, and
 * records every call. The guest's disk is the volume's active file when a call arrives.
 */
import * as path from 'node:path';
import { openImage } from '../../src/image/open-chain.js';
import { commitImage } from '../../src/image/commit.js';
import { rebaseImage, streamImage } from '../../src/image/rebase.js';
import { createInfoSchema, deleteInfoSchema, type CreateInfo, type DeleteInfo } from '../../src/nova/schemas.js';
import { CowError } from '../../src/errors.js';
import { readInfo } from '../../src/volume/info-file.js';
import type { Hypervisor } from '../../src/volume/hypervisor.js';

export type HypervisorCall =
  | { op: 'create'; volumeId: string; snapshotId: string; createInfo: CreateInfo }
  | { op: 'delete'; volumeId: string; snapshotId: string; deleteInfo: DeleteInfo };

export class FakeHypervisor implements Hypervisor {
  readonly calls: HypervisorCall[] = [];
  /** Make the next call fail (Nova reported `error`) — before (`before`) or after doing the work. */
  failNext: 'before' | 'after' | null = null;
  /** The file the guest has open, as far as this hypervisor knows. */
  guestDisk: string | null = null;
  /**
   * Called at points of the live work (`switched`: the guest is on the new file; `merged`: the
   * data moved, the overlay above not yet re-pointed; `done`): crash tests kill the process there.
   */
  onWork?: (point: 'switched' | 'merged' | 'done') => void;

  /**
   * @param keySecret the volume's LUKS secret, as libvirt holds it for an encrypted disk (Nova
   * gets it from the key manager at attach, never from Cinder's requests).
   */
  constructor(
    readonly dir: string,
    private readonly keySecret?: Uint8Array,
  ) {}

  private get keySecrets() {
    const secret = this.keySecret;
    return secret && (() => secret);
  }

  private fail(when: 'before' | 'after'): void {
    if (this.failNext === when) {
      this.failNext = null;
      throw new CowError('ECOW_NOVA_STATUS', `fake hypervisor: snapshot status went to error (${when} the work)`);
    }
  }

  async createSnapshot(volumeId: string, snapshotId: string, createInfo: CreateInfo): Promise<void> {
    this.calls.push({ op: 'create', volumeId, snapshotId, createInfo: createInfoSchema.parse(createInfo) });
    this.fail('before');
    // libvirt's snapshot-create with a reused external file: the guest now writes new_file.
    openImage(path.join(this.dir, createInfo.new_file), { keySecrets: this.keySecrets }).close();
    this.guestDisk = createInfo.new_file;
    this.onWork?.('switched');
    this.fail('after');
  }

  async deleteSnapshot(volumeId: string, snapshotId: string, deleteInfo: DeleteInfo): Promise<void> {
    this.calls.push({ op: 'delete', volumeId, snapshotId, deleteInfo: deleteInfoSchema.parse(deleteInfo) });
    this.fail('before');
    const info = await readInfo(this.dir, volumeId);
    const active = path.join(this.dir, info?.active ?? `volume-${volumeId}`);
    const p = (n: string) => path.join(this.dir, n);
    if (deleteInfo.merge_target_file === null) {
      // blockRebase: pull everything above file_to_merge into the active disk.
      streamImage(active, { base: deleteInfo.file_to_merge === null ? null : p(deleteInfo.file_to_merge), keySecrets: this.keySecrets });
    } else {
      // blockCommit of a lower layer: file_to_merge into merge_target_file, then the layer
      // above file_to_merge is re-pointed at the target.
      const top = deleteInfo.file_to_merge!;
      const above = this.layerAbove(active, top);
      commitImage(p(top), { base: p(deleteInfo.merge_target_file), keySecrets: this.keySecrets });
      this.onWork?.('merged');
      const target = openImage(p(deleteInfo.merge_target_file), { noBacking: true });
      const format = target.format;
      target.close();
      rebaseImage(p(above), deleteInfo.merge_target_file, { unsafe: true, backingFormat: format, keySecrets: this.keySecrets });
    }
    this.onWork?.('done');
    this.fail('after');
  }

  /** The name of the image whose backing file is `name`, walking down from `active`. */
  private layerAbove(active: string, name: string): string {
    const img = openImage(active);
    try {
      let childName = path.basename(active);
      for (const layer of img.chain()) {
        const backing = layer.headerInfo().backingFile ?? null;
        if (backing === name) return childName;
        if (backing === null) break;
        childName = backing;
      }
    } finally {
      img.close();
    }
    throw new Error(`fake hypervisor: nothing above ${name} in the chain of ${active}`);
  }
}
