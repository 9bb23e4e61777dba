// `img convert`: the guest view of a chain written to a new image.
import { convertImage, type ConvertOptions } from '../image/convert.js';
import { parseImageFormat } from '../image/format.js';
import { CowError } from '../errors.js';
import { mergeOptionLists } from './args.js';
import { parseCreateCommand } from './img-create.js';
import { withImage } from './img-read.js';
import { withProgress } from './progress.js';
import { imageArgument, secretById, secretObjects } from './secrets.js';

export interface ConvertCliOptions {
  f?: string;
  O: string;
  o?: string[];
  c?: boolean;
  p?: boolean;
  q?: boolean;
  forceShare?: boolean;
  object?: string[];
  imageOpts?: boolean;
}

/** `img convert`. */
export async function imgConvert(arg: string, dst: string, o: ConvertCliOptions): Promise<void> {
  const { file: src, format, keySecrets } = await imageArgument(arg, o);
  const { encryptKeyId, ...target } = convertTarget(dst, o.O, o.o, !!o.c);
  if (encryptKeyId !== undefined && target.create?.encrypt) {
    target.create.encrypt = { ...target.create.encrypt, keySecret: secretById(await secretObjects(o.object), encryptKeyId, '-o encrypt.key-secret') };
  }
  withImage(
    src,
    format,
    (image) => {
      withProgress(!!o.p && !o.q, (onProgress) => convertImage(image, dst, { ...target, onProgress }));
    },
    false,
    o.forceShare,
    keySecrets,
  );
}

/**
 * `-O FMT -o …` of `img convert` → convertImage's format and create options, checked before
 * anything is opened or written: the keys and rules of `img create` (qemu-img's). As qemu-img
 * convert, a `size` is validated and then ignored (the target takes the source's size); a target
 * with a backing file (backing_file, backing_fmt) is not supported.
 */
export function convertTarget(dst: string, format: string, options: string[] | undefined, compressed = false): Pick<ConvertOptions, 'format' | 'create' | 'compressed'> & { encryptKeyId?: string } {
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
  // encrypt.key-secret names an --object secret: the caller looks it up (an empty placeholder until then).
  if (c.encryptKeySecret !== undefined) create.encrypt = { format: 'luks', keySecret: new Uint8Array(0), ...(c.encryptIterTime !== undefined ? { iterTimeMs: c.encryptIterTime } : {}) };
  return { format: 'qcow2', create, ...(compressed ? { compressed } : {}), ...(c.encryptKeySecret !== undefined ? { encryptKeyId: c.encryptKeySecret } : {}) };
}
