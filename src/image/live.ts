import { CowError } from '../errors.js';
import { closeLayer, imageEngine, imageId, type Image } from './image.js';
import { runJob, type JobOptions } from './job.js';

// Chain operations on images that are already open — what a hypervisor does to a running disk,
// and what the file-level commitImage/streamImage do after opening. Working on the open chain
// means one set of engine caches per file: a guest writing between job steps (onProgress runs
// between steps) and the job see the same metadata.

function layerAt(top: Image, depth: number): Image {
  const chain = top.chain();
  if (depth < 1 || depth >= chain.length) throw new CowError('ECOW_BAD_ARGUMENT', `no image at depth ${depth} below ${top.filename} (chain of ${chain.length})`);
  return chain[depth];
}

/**
 * Commit the `depth` images from `top` down into the image at `depth` (1: top's backing file),
 * which must have been opened writable. Only that base is written.
 */
export function commitLive(top: Image, depth: number, options: JobOptions = {}): Image {
  const base = layerAt(top, depth);
  if (!base.writable) throw new CowError('ECOW_READ_ONLY', `commit base ${base.filename} was opened read-only`);
  const engine = imageEngine(top);
  runJob(engine, () => engine.call((e) => e.commitStart(imageId(top), imageId(base), depth)), options, [base]);
  return base;
}

/**
 * Pull into `img` what the images between it and the one at `depth` allocate (depth = the chain's
 * length: everything), then make the image at `depth` its backing file — named as the image above
 * it names it — or none. The layers in between are unlinked and closed; their files stay.
 */
export function streamLive(img: Image, depth: number, options: JobOptions = {}): void {
  const chain = img.chain();
  if (depth < 1 || depth > chain.length) throw new CowError('ECOW_BAD_ARGUMENT', `no image at depth ${depth} below ${img.filename}`);
  if (depth > 1) {
    const engine = imageEngine(img);
    runJob(engine, () => engine.call((e) => e.streamStart(imageId(img), depth - 1)), options, [img]);
  }
  const newBase = depth < chain.length ? chain[depth] : null;
  const name = newBase ? (chain[depth - 1].headerInfo().backingFile ?? '') : '';
  img.switchBacking(newBase, name, newBase ? newBase.format : '');
  for (const dropped of chain.slice(1, depth)) closeLayer(dropped);
}

/**
 * After the image below `above` was committed into its own backing file, link `above` straight to
 * that file (named as the committed image named it) and close the committed image.
 */
export function dropCommitted(above: Image): void {
  const committed = above.backing;
  if (!committed || !committed.backing) throw new CowError('ECOW_BAD_ARGUMENT', `${above.filename} has no committed image with a backing file below it`);
  const target = committed.backing;
  above.switchBacking(target, committed.headerInfo().backingFile ?? '', target.format);
  closeLayer(committed);
}
