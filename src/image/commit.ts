import { CowError } from '../errors.js';
import { openImage, type BackingFormatPolicy, type BackingResolver, type KeySecrets } from './open-chain.js';
import type { ImageFormat } from './types.js';
import { imageEngine, imageId } from './image.js';
import { sameFile } from './same-file.js';
import type { JobOptions } from './job.js';
import { commitLive } from './live.js';

export interface CommitOptions extends JobOptions {
  /** Commit down to this image of the chain (path); default: the top's backing file. Implies `keepTop`. */
  base?: string;
  /**
   * Leave the top image as it is after the commit, as `qemu-img commit -d` does (for a top that is
   * about to be deleted). Otherwise the top is emptied once the base is durable.
   */
  keepTop?: boolean;
  resolveBacking?: BackingResolver;
  /** The top's format (default: probed) and the formats of the files below it. */
  format?: ImageFormat;
  formatOf?: BackingFormatPolicy;
  /** Key secrets of the chain's encrypted images (by depth from the top). */
  keySecrets?: KeySecrets;
}

/**
 * Depth of `base` in the chain of `top` (1 = top's backing file). Only a named base needs the
 * chain opened to find it; the default base is the top's backing file.
 */
function baseDepth(top: string, base: string | undefined, options: CommitOptions): number {
  if (base === undefined) return 1;
  const chain = openImage(top, { resolveBacking: options.resolveBacking, format: options.format, formatOf: options.formatOf });
  try {
    const depth = chain.chain().findIndex((img, i) => i > 0 && sameFile(img.filename, base));
    if (depth < 0) throw new CowError('ECOW_BAD_ARGUMENT', `${base} is not in the backing chain of ${top}`);
    return depth;
  } finally {
    chain.close();
  }
}

/**
 * Block commit, as `qemu-img commit [-b BASE] [-d] TOP`: every range allocated above the base is
 * copied into it (zero clusters stay zero clusters in a v3 base); a smaller base grows. Only the
 * base is written until it is durable; then, unless `keepTop` (or `base`), the top is emptied.
 */
export function commitImage(top: string, options: CommitOptions = {}): void {
  const depth = baseDepth(top, options.base, options);
  const keepTop = options.keepTop || options.base !== undefined;
  const img = openImage(top, { writable: !keepTop, writableDepths: [depth], guardIo: options.guardIo, resolveBacking: options.resolveBacking, format: options.format, formatOf: options.formatOf, keySecrets: options.keySecrets });
  try {
    if (img.backing === null) throw new CowError('ECOW_BAD_ARGUMENT', `${top} has no backing file to commit into`);
    commitLive(img, depth, options);
    if (!keepTop && img.format === 'qcow2') imageEngine(img).call((e) => e.makeEmpty(imageId(img)));
  } finally {
    img.close();
  }
}
