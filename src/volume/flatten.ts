/**
 * A snapshot's point-in-time content as a new standalone image: the backing chain of the
 * snapshot's file, flattened (create volume from snapshot; clone through a temporary snapshot).
 */
import path from 'node:path';
import { CowError } from '../errors.js';
import type { ImageFormat } from '../image/format.js';
import { createFileAtomic } from './atomic-file.js';
import type { OperationContext } from './context.js';
import { checkSize } from './size.js';
import { newFilePrefix } from './volume-files.js';
import { beforeJob } from './job-request.js';
import { convertImage } from '../image/convert.js';

export interface FlattenOptions {
  /**
   * Format of the new image (default raw). The content of an encrypted volume stays encrypted:
   * qcow2 with LUKS (the default then), keyed by the volume's own secret (a clone: the new
   * volume's); raw is refused.
   */
  format?: ImageFormat;
  /** Virtual size (bytes); default and minimum: the snapshot's size. */
  size?: number;
}

export interface FlattenResult {
  file: string;
  format: ImageFormat;
  size: number;
}

/**
 * Write snapshot `snapshotId`'s content to `outFile`, which must not exist (ECOW_EXISTS); it
 * appears whole or not at all (written beside it under a temp name, then linked).
 */
export async function flattenSnapshot(ctx: OperationContext, snapshotId: string, outFile: string, options: FlattenOptions = {}, outputKeySecret?: Uint8Array): Promise<FlattenResult> {
  const { files } = ctx;
  const { info } = await files.readInfo();
  if (!Object.hasOwn(info, snapshotId) || snapshotId === 'active') {
    throw new CowError('ECOW_NOT_FOUND', `volume ${files.volumeId} has no snapshot ${snapshotId}`);
  }
  const { backing } = files.header(info[snapshotId]);
  if (backing === null) {
    throw new CowError('ECOW_INVALID_STATE', `snapshot ${snapshotId}: its file ${info[snapshotId]} has no backing file, so it holds no point-in-time content`);
  }
  // The whole chain is validated here (policy, depth, loops); a copy run in this thread reads
  // these very images, one run in an engine worker opens them there.
  const chain = files.openChain(backing);
  try {
    const [top] = chain.links;
    files.needKey(chain.links, `snapshot ${snapshotId}'s content`);
    const encrypted = chain.links.some((l) => l.encrypted);
    const format = options.format ?? (encrypted ? 'qcow2' : 'raw');
    if (format !== 'raw' && format !== 'qcow2') throw new CowError('ECOW_UNKNOWN_FORMAT', `format "${String(format)}" is not raw or qcow2`);
    if (encrypted && format !== 'qcow2') throw new CowError('ECOW_BAD_ARGUMENT', `snapshot ${snapshotId} of volume ${files.volumeId} is encrypted: its content is written as encrypted qcow2, not ${format}`);
    // An encrypted volume's content stays encrypted: keyed by its own secret, or a clone's.
    const create = encrypted ? { encrypt: { ...files.encryptOptions(path.basename(outFile)), ...(outputKeySecret ? { keySecret: outputKeySecret } : {}) } } : undefined;
    const size = options.size === undefined ? top.virtualSize : checkSize(options.size, 'new volume size');
    if (size < top.virtualSize) {
      throw new CowError('ECOW_BAD_ARGUMENT', `size ${size} is smaller than snapshot ${snapshotId} (${top.virtualSize} bytes)`);
    }
    const dir = path.dirname(outFile);
    const name = path.basename(outFile);
    const { mode } = await files.fileModes();
    await createFileAtomic(
      dir,
      name,
      newFilePrefix(name),
      async (temp) => {
        const src = chain.image(backing);
        if (ctx.jobsInThread && src) {
          await ctx.runHere(() => {
            beforeJob('convert', ctx.job);
            convertImage(src, temp, { ...ctx.job, format, size, create });
          });
        } else {
          chain.close();
          await ctx.runJob({ op: 'convert', src: files.resolve(backing), srcFormat: top.format, dst: temp, format, size, policy: files.policy, keySecret: files.keySecret, ...(create ? { create } : {}) });
        }
      },
      mode,
    );
    return { file: outFile, format, size };
  } finally {
    chain.close();
  }
}
