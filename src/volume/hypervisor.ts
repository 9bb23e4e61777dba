/**
 * What the driver needs from the hypervisor for an attached (`in-use`) volume: Nova's assisted
 * snapshots. The driver creates and deletes files and keeps the info file; the hypervisor moves
 * the running guest between files and moves data between them while the guest runs.
 *
 * The volume layer owns this interface and its types; src/nova implements it. The Nova
 * implementation (NovaHypervisor) sends `create_info` / `delete_info` to `os-assisted-volume-snapshots`
 * exactly as given and waits (with Cinder's back-off) until the snapshot reports progress 90%;
 * any other outcome — an error status, a time-out, a refused request — rejects.
 *
 * What the driver may undo after a rejection depends on whether the hypervisor had accepted the
 * request: before that, nothing happened; after it, only an error status Nova reported
 * (ECOW_NOVA_STATUS) says the work failed. Any other failure — a time-out, a refused progress
 * report, a cancel — leaves the outcome unknown: the guest may already run on the new overlay,
 * or a merge may still be running. The driver then keeps every file and the journal and fails
 * with ECOW_NEEDS_FSCK; fsck decides from what the chain shows, or from `novaOutcome`.
 */

/** `create_info`: move the guest onto `new_file`, the overlay made for `snapshot_id`. */
export interface CreateInfo {
  /** Always `'qcow2'`: the format of the new file. */
  type: 'qcow2';
  /** The new overlay's bare file name, in the volume's directory. */
  new_file: string;
  /** The snapshot's id. */
  snapshot_id: string;
}

/**
 * `delete_info`: `merge_target_file: null` asks for a blockRebase (pull `file_to_merge`'s data
 * into the active file; `file_to_merge: null` pulls everything and drops the backing file); a
 * non-null target asks for a blockCommit of `file_to_merge` into it.
 */
export interface DeleteInfo {
  /** Always `'qcow2'`. */
  type: 'qcow2';
  /** The file whose data moves (bare name), or null: everything below the active file. */
  file_to_merge: string | null;
  /** The file it is committed into (bare name), or null for a pull into the active file. */
  merge_target_file: string | null;
  /** The volume's id. */
  volume_id: string;
}

/** What the driver passes along with each hypervisor call. */
export interface HypervisorCallOptions {
  /** Aborted when the operation must stop (cancelled, or the volume lock was lost). */
  signal?: AbortSignal;
  /**
   * Called (and awaited) once the hypervisor has accepted the request — or may have: a request
   * sent and never answered counts — before waiting for its outcome. The driver records it
   * (journal `accepted`), durably, and from then on never undoes what the guest may be using.
   */
  onAccepted?: () => Promise<void>;
}

/**
 * The hypervisor side of attached-volume snapshots. `NovaHypervisor` (cowchain/nova) implements
 * it with Nova; implement it for another hypervisor and pass it as `VolumeDriverOptions.hypervisor`.
 */
export interface Hypervisor {
  /**
   * Whether this hypervisor calls `onAccepted`. Without it the driver cannot tell a refused
   * request from one that is running, and trusts a rejection to mean "nothing happened".
   */
  readonly reportsAcceptance?: boolean;
  /**
   * Move the guest onto `createInfo.new_file` (already created by the driver: qcow2, backed by
   * the current active file). Resolves once the switch is done (progress 90%).
   */
  createSnapshot(volumeId: string, snapshotId: string, createInfo: CreateInfo, options?: HypervisorCallOptions): Promise<void>;
  /**
   * Merge a snapshot away while the guest runs. `merge_target_file: null` is a blockRebase of
   * the active file (pull everything above `file_to_merge` into it, which becomes its backing
   * file; null: pull everything, no backing file); otherwise a blockCommit of `file_to_merge`
   * into `merge_target_file`, after which the file above `file_to_merge` is backed by the target.
   * Resolves once done (progress 90%).
   */
  deleteSnapshot(volumeId: string, snapshotId: string, deleteInfo: DeleteInfo, options?: HypervisorCallOptions): Promise<void>;
}
