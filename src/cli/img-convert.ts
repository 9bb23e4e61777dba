// `img convert`: the guest view of a chain written to a new image.
import { convertImage, type ConvertOptions } from '../image/convert.js';
import { parseImageFormat } from '../image/format.js';
import { CowError } from '../errors.js';
import { mergeOptionLists } from './args.js';
import { parseCreateCommand } from './img-create.js';
import { withImage } from './img-read.js';
import { withProgress } from './progress.js';

export interface ConvertCliOptions {
  f?: string;
  O: string;
  o?: string[];
  c?: boolean;
  p?: boolean;
  q?: boolean;
  forceShare?: boolean;
}

/** `img convert`. */
export function imgConvert(src: string, dst: string, o: ConvertCliOptions): void {
  const target = convertTarget(dst, o.O, o.o, !!o.c);
  withImage(
    src,
    o.f,
    (image) => {
      withProgress(!!o.p && !o.q, (onProgress) => convertImage(image, dst, { ...target, onProgress }));
    },
    false,
    o.forceShare,
  );
}

/**
 * `-O FMT -o …` of `img convert` → convertImage's format and create options, checked before
 * anything is opened or written: the keys and rules of `img create` (qemu-img's). As qemu-img
 * convert, a `size` is validated and then ignored (the target takes the source's size); a target
 * with a backing file (backing_file, backing_fmt) is not supported.
 */
export function convertTarget(dst: string, format: string, options: string[] | undefined, compressed = false): Pick<ConvertOptions, 'format' | 'create' | 'compressed'> {
  // An output format we cannot write is a bad argument (qemu-img knows more formats than we do).
  const fmt = parseImageFormat(format, 'output format', 'ECOW_BAD_ARGUMENT');
  if (compressed && fmt !== 'qcow2') throw new CowError('ECOW_BAD_ARGUMENT', `compression (-c) needs the qcow2 output format, not ${fmt}`);
  const keys = mergeOptionLists(options ?? []);
  for (const k of ['backing_file', 'backing_fmt']) {
    if (keys.has(k)) throw new CowError('ECOW_BAD_ARGUMENT', `invalid parameter '${k}' for convert: a target with a backing file is not supported`);
  }
  // img create's parser wants a size: a given one is checked there (then ignored), else any.
  const c = parseCreateCommand(dst, keys.has('size') ? undefined : '0', { f: fmt, o: options });
  if (fmt === 'raw') return { format: 'raw' };
  const create: NonNullable<ConvertOptions['create']> = {};
  if (c.clusterSize !== undefined) create.clusterSize = c.clusterSize;
  if (c.refcountBits !== undefined) create.refcountBits = c.refcountBits;
  if (c.compat !== undefined) create.compat = c.compat;
  if (c.extendedL2 !== undefined) create.extendedL2 = c.extendedL2;
  if (c.compressionType !== undefined) create.compressionType = c.compressionType;
  return { format: 'qcow2', create, ...(compressed ? { compressed } : {}) };
}
