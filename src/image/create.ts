import * as fs from 'node:fs';
import * as z from 'zod';
import { Engine } from '../engine/engine.js';
import { FileBackend, type Backend } from '../engine/backend.js';
import { CowError } from '../errors.js';
import { imageFormatSchema } from './format-schema.js';
import { lazy } from '../lazy.js';
import { IMAGE_FORMATS, type ImageFormat } from './format.js';
import { openImage, defaultResolveBacking } from './open-chain.js';
import { createLuks, luksAreaBytes } from '../engine/luks.js';

/**
 * Options of `createImage`: qemu-img create's `-f`, `-b`, `-F`, SIZE and `-o` keys, in camelCase.
 * Checked when called (ECOW_BAD_ARGUMENT names the field and the value).
 */
export interface CreateOptions {
  /** `-f`: the image format. Default `'raw'`, as `qemu-img create` (and `cowchain img create`). */
  format?: ImageFormat;
  /**
   * Virtual size in bytes, rounded up to whole 512-byte sectors. Default: the backing file's
   * size; required without a backing file. At most 2^53.
   */
  size?: number;
  /**
   * `-b`: the backing file's name exactly as it is stored in the header, relative to the new
   * image's directory or absolute (1 to 1023 bytes). It must open, with its whole chain. qcow2 only.
   */
  backingFile?: string;
  /** `-F`: the backing file's format, stored in the header. Default: the backing file's own. */
  backingFormat?: ImageFormat;
  /** `-o cluster_size`: bytes per cluster, a power of two from 512 to 2 MiB. Default 65536. */
  clusterSize?: number;
  /** `-o refcount_bits`: 1, 2, 4, 8, 16, 32 or 64 (`compat: '0.10'` allows 16 only). Default 16. */
  refcountBits?: number;
  /** `-o compat`: `'1.1'` (qcow2 version 3, the default) or `'0.10'` (version 2, for old readers). */
  compat?: '0.10' | '1.1';
  /**
   * `-o extended_l2`: 32 subclusters per cluster (qcow2 version 3, clusters of 16 KiB or more).
   * Default false.
   */
  extendedL2?: boolean;
  /**
   * `-o compression_type`: how compressed clusters (`convert -c`) are written, `'zlib'` (the
   * default) or `'zstd'` (needs compat 1.1).
   */
  compressionType?: 'zlib' | 'zstd';
  /**
   * As `qemu-img create -u`: the backing file is neither opened nor checked (it may not exist
   * yet); `size` and `backingFormat` must then be given. Default false.
   */
  unsafe?: boolean;
  /**
   * `-o encrypt.format=luks,encrypt.key-secret=…`: LUKS encryption (qcow2 only) with
   * aes-256-xts-plain64 and sha256, key slot 0 opened by `keySecret` (the passphrase bytes: never
   * stored, logged or echoed). `iterTimeMs` (`encrypt.iter-time`, default 2000) is how long
   * PBKDF2 takes to open the slot on this machine.
   */
  encrypt?: { format: 'luks'; keySecret: Uint8Array; iterTimeMs?: number };
}

/**
 * CreateOptions, validated at the boundary; built at first use (lazy.ts): a process that opens
 * the volume driver, which imports this module, need not create an image, and plain options
 * (a snapshot's overlay, most `img create`s) are checked without it (plainCreateOptions).
 */
export const createOptionsSchema = lazy(() =>
  z
    .object({
      format: imageFormatSchema().default('raw'),
      size: z.number().int().nonnegative().max(2 ** 53).optional(),
      backingFile: z.string().min(1).max(1023).optional(),
      backingFormat: imageFormatSchema().optional(),
      clusterSize: z.number().int().refine((v) => v >= 512 && v <= 2 << 20 && (v & (v - 1)) === 0, 'a power of two between 512 and 2097152').default(65536),
      refcountBits: z.number().int().refine((v) => [1, 2, 4, 8, 16, 32, 64].includes(v), 'a power of two between 1 and 64').default(16),
      compat: z.enum(['0.10', '1.1']).default('1.1'),
      extendedL2: z.boolean().default(false),
      compressionType: z.enum(['zlib', 'zstd']).default('zlib'),
      /**
       * qemu-img create -u: the backing file is neither opened nor checked (it may not exist yet);
       * the size and the backing format must then be given.
       */
      unsafe: z.boolean().default(false),
      /**
       * LUKS encryption (qemu's encrypt.format=luks): aes-256-xts-plain64, sha256, key slot 0
       * opened by `keySecret`; PBKDF2 tuned to take `iterTimeMs` (qemu's encrypt.iter-time, 2000).
       */
      encrypt: z
        .object({
          format: z.literal('luks'),
          keySecret: z.custom<Uint8Array>((v) => v instanceof Uint8Array, 'the key secret must be bytes (a Uint8Array)').refine((s) => s.length > 0, 'the key secret must not be empty'),
          iterTimeMs: z.number().int().positive().max(600_000).optional(),
        })
        .strict()
        .optional(),
    })
    .strict(),
);
// The documented interface and the schema accept the same objects (a compile error otherwise).
type SchemaInput = z.input<ReturnType<typeof createOptionsSchema>>;
type SameKeys = [keyof SchemaInput, keyof CreateOptions] extends [keyof CreateOptions, keyof SchemaInput] ? true : false;
const sameShape: [SchemaInput, CreateOptions] extends [CreateOptions, SchemaInput] ? SameKeys : false = true;
void sameShape;

/** The layout of a qcow2 image made on a Backend: CreateOptions without the format, with a size. */
export type Qcow2LayoutOptions = Omit<CreateOptions, 'format'> & { size: number; format?: 'qcow2' };

type ParsedCreateOptions = z.output<ReturnType<typeof createOptionsSchema>>;

const CREATE_KEYS = ['format', 'size', 'backingFile', 'backingFormat', 'clusterSize', 'refcountBits', 'compat', 'extendedL2', 'compressionType', 'unsafe', 'encrypt'];
const isFormat = (v: unknown): v is ImageFormat => IMAGE_FORMATS.includes(v as ImageFormat);
const isSafeInt = (v: unknown): v is number => Number.isSafeInteger(v);

/**
 * `options` as createOptionsSchema() parses them (its defaults filled in) when they are a plain
 * object without encryption that the schema plainly accepts; else undefined, and the schema
 * decides (and says why). Exactly what the schema accepts of such objects
 * (test/volume/zod-fast-paths.test.ts checks it over generated options).
 */
export function plainCreateOptions(options: unknown): ParsedCreateOptions | undefined {
  if (typeof options !== 'object' || options === null || Object.getPrototypeOf(options) !== Object.prototype) return undefined;
  const o = options as Record<string, unknown>;
  for (const key in o) if (!CREATE_KEYS.includes(key) || !Object.hasOwn(o, key)) return undefined;
  const { size, backingFile, backingFormat, clusterSize, refcountBits, compat, extendedL2, compressionType, unsafe } = o;
  if (o.encrypt !== undefined || (o.format !== undefined && !isFormat(o.format))) return undefined;
  if (size !== undefined && !(isSafeInt(size) && size >= 0)) return undefined;
  if (backingFile !== undefined && !(typeof backingFile === 'string' && backingFile.length >= 1 && backingFile.length <= 1023)) return undefined;
  if (backingFormat !== undefined && !isFormat(backingFormat)) return undefined;
  if (clusterSize !== undefined && !(isSafeInt(clusterSize) && clusterSize >= 512 && clusterSize <= 2 << 20 && (clusterSize & (clusterSize - 1)) === 0)) return undefined;
  if (refcountBits !== undefined && !(isSafeInt(refcountBits) && [1, 2, 4, 8, 16, 32, 64].includes(refcountBits))) return undefined;
  if (compat !== undefined && compat !== '0.10' && compat !== '1.1') return undefined;
  if (compressionType !== undefined && compressionType !== 'zlib' && compressionType !== 'zstd') return undefined;
  if ((extendedL2 !== undefined && typeof extendedL2 !== 'boolean') || (unsafe !== undefined && typeof unsafe !== 'boolean')) return undefined;
  return {
    format: (o.format as ImageFormat | undefined) ?? 'raw',
    size: size as number | undefined,
    backingFile: backingFile as string | undefined,
    backingFormat: backingFormat as ImageFormat | undefined,
    clusterSize: (clusterSize as number | undefined) ?? 65536,
    refcountBits: (refcountBits as number | undefined) ?? 16,
    compat: compat ?? '1.1',
    extendedL2: extendedL2 ?? false,
    compressionType: compressionType ?? 'zlib',
    unsafe: unsafe ?? false,
  };
}

function parseOptions(options: CreateOptions) {
  const plain = plainCreateOptions(options);
  const r = plain ? { success: true as const, data: plain } : createOptionsSchema().safeParse(options);
  if (!r.success) throw new CowError('ECOW_BAD_ARGUMENT', `invalid create options: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  if (r.data.format === 'raw' && r.data.backingFile) throw new CowError('ECOW_BAD_ARGUMENT', `a raw image cannot have a backing file (${r.data.backingFile}): give format: 'qcow2' (the default format is raw, as in qemu-img create)`);
  if (r.data.unsafe && r.data.backingFile && (r.data.size === undefined || r.data.backingFormat === undefined)) {
    throw new CowError('ECOW_BAD_ARGUMENT', 'an unsafe create (-u) needs the size and the backing format: the backing file is not opened');
  }
  if (r.data.format === 'raw' && r.data.encrypt) throw new CowError('ECOW_BAD_ARGUMENT', 'encryption (encrypt.format=luks) needs the qcow2 format');
  return r.data;
}

/** Lay out a qcow2 image on any backend (no file system needed). */
export function createQcow2On(backend: Backend, options: Qcow2LayoutOptions): void {
  const o = parseOptions({ ...options, format: 'qcow2' });
  const engine = Engine.get();
  const handle = engine.addBackend(backend);
  try {
    engine.call((e) =>
      e.create(
        handle,
        o.size!,
        Math.log2(o.clusterSize),
        Math.log2(o.refcountBits),
        o.compat === '1.1' ? 3 : 2,
        o.extendedL2 ? 1 : 0,
        o.compressionType === 'zstd' ? 1 : 0,
        o.encrypt ? luksAreaBytes() : 0,
        engine.newString(o.backingFile ?? ''),
        engine.newString(o.backingFile ? (o.backingFormat ?? '') : ''),
      ),
    );
    if (o.encrypt) writeLuksArea(engine, handle, backend, o.encrypt.keySecret, o.encrypt.iterTimeMs);
  } finally {
    engine.removeBackend(handle);
    engine.collect();
  }
}

/** Fill the LUKS area the engine reserved (the crypto header extension says where). */
function writeLuksArea(engine: Engine, handle: number, backend: Backend, secret: Uint8Array, iterTimeMs?: number): void {
  const id = engine.call((e) => e.openQcow2(handle, 0));
  let where: { cryptoOffset: number; cryptoLength: number };
  try {
    where = JSON.parse(engine.call((e) => engine.string(e.describe(id)))) as { cryptoOffset: number; cryptoLength: number };
  } finally {
    engine.call((e) => e.close(id));
  }
  const luks = createLuks(secret, iterTimeMs);
  if (luks.bytes.length !== where.cryptoLength) throw new CowError('ECOW_INTERNAL', `LUKS area of ${luks.bytes.length} bytes for a reserved ${where.cryptoLength}`);
  backend.write(luks.bytes, where.cryptoOffset);
  backend.flush();
}

/**
 * Create an image file, as `qemu-img create`. With a backing file, it must open (its chain is
 * validated) and gives the default size and, when not given, the backing format (unless
 * `unsafe`: then it is not opened at all). `io.guardIo`
 * runs before every write and truncate (FileBackend.guard: the volume driver's lock check).
 */
export function createImage(file: string, options: CreateOptions, io: { guardIo?: () => void } = {}): void {
  const o = parseOptions(options);
  let size = o.size;
  let backingFormat = o.backingFormat;
  if (o.backingFile && !o.unsafe) {
    const backing = openImage(defaultResolveBacking(o.backingFile, file), { format: backingFormat });
    try {
      size ??= backing.virtualSize;
      backingFormat ??= backing.format;
    } finally {
      backing.close();
    }
  }
  if (size === undefined) throw new CowError('ECOW_BAD_ARGUMENT', `no size given for ${file} and no backing file to take it from`);
  // qemu-img create rounds the size up to whole 512-byte sectors (raw and qcow2 alike).
  size = Math.ceil(size / 512) * 512;
  if (o.format === 'raw') {
    io.guardIo?.();
    try {
      const fd = fs.openSync(file, 'w');
      fs.ftruncateSync(fd, size);
      fs.fsyncSync(fd);
      fs.closeSync(fd);
    } catch (e) {
      throw new CowError('ECOW_IO', `cannot create ${file}: ${(e as Error).message}`, { cause: e });
    }
    return;
  }
  io.guardIo?.(); // before the file is made (or emptied)
  const backend = new FileBackend(file, true, true);
  backend.guard = io.guardIo;
  try {
    createQcow2On(backend, { ...options, format: 'qcow2', size, backingFormat });
  } catch (e) {
    // As qemu-img: a refused or failed creation leaves no half-made image behind.
    backend.close();
    fs.rmSync(file, { force: true });
    throw e;
  } finally {
    backend.close();
  }
}
