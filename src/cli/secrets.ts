import { CowError } from '../errors.js';
import type { KeySecrets } from '../image/open-chain.js';
import { parseImageFormat } from '../image/format.js';
import type { ImageFormat } from '../image/types.js';
import { parseOptionList } from './args.js';

/**
 * qemu-img's forms for encrypted images, as Cinder's command lines use them:
 *  - `--object secret,id=ID,file=PATH[,format=raw|base64]`: a secret read from a file;
 *  - `--image-opts driver=qcow2,file.filename=F,encrypt.key-secret=ID[,backing.encrypt.key-secret=ID…]`
 *    in place of the FILE argument;
 *  - `-o encrypt.format=luks,encrypt.key-secret=ID` on create (img-create.ts).
 * Secrets are only ever read from files: `data=` would put one in argv (and in `ps`), so it is
 * refused. No message here repeats a value given with a secret.
 */

export type SecretObjects = ReadonlyMap<string, Uint8Array>;

/**
 * `--object` arguments → secrets by id, each read from its file now. The checks (zod) load only
 * when a command is given --object (secret-objects.ts): most runs have none.
 */
export async function secretObjects(specs: readonly string[] | undefined): Promise<SecretObjects> {
  if (!specs?.length) return new Map();
  return (await import('./secret-objects.js')).parseSecretObjects(specs);
}

export interface ImageOpts {
  filename: string;
  format?: ImageFormat;
  /** Secret ids by depth: 0 encrypt.key-secret, 1 backing.encrypt.key-secret, … */
  keySecretIds: Map<number, string>;
}

/** The keys `--image-opts` takes here: driver, file.driver, file.filename, [backing.]*encrypt.key-secret, [backing.]*encrypt.format. */
const KEY_SECRET = /^((?:backing\.)*)encrypt\.key-secret$/;
const KEY_FORMAT = /^((?:backing\.)*)encrypt\.format$/;

/** An `--image-opts` string → the file, its driver and the key secret ids along its chain. */
export function parseImageOpts(text: string): ImageOpts {
  const opts = parseOptionList(text, '--image-opts');
  const filename = opts.get('file.filename');
  if (!filename) throw new CowError('ECOW_BAD_ARGUMENT', '--image-opts needs file.filename=FILE');
  const out: ImageOpts = { filename, keySecretIds: new Map() };
  for (const [k, v] of opts) {
    if (k === 'file.filename') continue;
    if (k === 'driver') out.format = parseImageFormat(v, '--image-opts driver');
    else if (k === 'file.driver') {
      if (v !== 'file') throw new CowError('ECOW_BAD_ARGUMENT', `--image-opts file.driver=${v}: only file is supported`);
    } else if (KEY_SECRET.test(k)) out.keySecretIds.set(KEY_SECRET.exec(k)![1].length / 'backing.'.length, v);
    else if (KEY_FORMAT.test(k)) {
      if (v !== 'luks') throw new CowError('ECOW_BAD_ARGUMENT', `--image-opts ${k}=${v}: only luks is supported`);
    } else throw new CowError('ECOW_BAD_ARGUMENT', `--image-opts: option ${k} is not supported (driver, file.filename, [backing.]encrypt.key-secret, [backing.]encrypt.format)`);
  }
  return out;
}

/** The secret named `id`, from the `--object` list (ECOW_BAD_ARGUMENT when none has that id). */
export function secretById(objects: SecretObjects, id: string, what: string): Uint8Array {
  const s = objects.get(id);
  if (!s) throw new CowError('ECOW_BAD_ARGUMENT', `${what}: no secret with id ${id} (give --object secret,id=${id},file=PATH)`);
  return s;
}

/** KeySecrets for openImage from `--image-opts` ids and `--object` secrets. */
export function keySecretsOf(opts: ImageOpts, objects: SecretObjects): KeySecrets | undefined {
  if (opts.keySecretIds.size === 0) return undefined;
  const byDepth = new Map<number, Uint8Array>();
  for (const [depth, id] of opts.keySecretIds) byDepth.set(depth, secretById(objects, id, '--image-opts'));
  return (depth) => byDepth.get(depth);
}

/** What a command's FILE argument means: a plain path, or (with --image-opts) an option string. */
export interface ImageArgument {
  file: string;
  format?: ImageFormat;
  keySecrets?: KeySecrets;
}

/** Resolve FILE with `--image-opts` and `--object` (the common part of every img command). */
export async function imageArgument(arg: string, o: { imageOpts?: boolean; object?: string[]; f?: string }): Promise<ImageArgument> {
  const objects = await secretObjects(o.object);
  if (!o.imageOpts) return { file: arg, format: o.f === undefined ? undefined : parseImageFormat(o.f, 'format') };
  if (o.f !== undefined) throw new CowError('ECOW_BAD_ARGUMENT', '-f cannot be used with --image-opts (give driver= in the options)');
  const opts = parseImageOpts(arg);
  return { file: opts.filename, format: opts.format, keySecrets: keySecretsOf(opts, objects) };
}
