import * as z from 'zod';
import { openImage } from '../image/open-chain.js';
import { createImage, type CreateOptions } from '../image/create.js';
import { CowError } from '../errors.js';
import { collect, mergeOptionLists, parseBool, parseCount, parseSize, parseSizeBig } from './args.js';
import { print } from './output.js';
import { parseImageFormat } from '../image/format.js';
import { imageFormatSchema } from '../image/format-schema.js';
import { lazy } from '../lazy.js';
import { secretById, secretObjects, type SecretObjects } from './secrets.js';

/** Largest virtual size we accept: offsets cross the engine boundary as exact doubles. */
const MAX_SIZE = 2n ** 53n;

/** `-o` keys per format (qemu-img's names). */
const QCOW2_KEYS = ['size', 'backing_file', 'backing_fmt', 'cluster_size', 'compat', 'refcount_bits', 'extended_l2', 'compression_type', 'encrypt.format', 'encrypt.key-secret', 'encrypt.iter-time'] as const;
const RAW_KEYS = ['size'] as const;

/**
 * The command line after the strings were parsed; built at first use (lazy.ts): a command line
 * the rules plainly accept is checked without zod (plainCreateCommand).
 */
const commandSchema = lazy(() => {
  const Format = imageFormatSchema();
  return z
    .object({
      file: z.string().min(1, 'FILE must not be empty'),
      format: Format,
      size: z.number().int().nonnegative().optional(),
      backingFile: z.string().min(1, 'the backing file name must not be empty').max(1023, 'the backing file name is longer than 1023 bytes').optional(),
      backingFormat: Format.optional(),
      clusterSize: z.number().int().optional(),
      refcountBits: z.number().int().optional(),
      compat: z.enum(['0.10', '1.1']).optional(),
      extendedL2: z.boolean().optional(),
      compressionType: z.enum(['zlib', 'zstd'], { message: "compression_type must be 'zlib' or 'zstd'" }).optional(),
      unsafe: z.boolean().optional(),
      encryptFormat: z.literal('luks', { message: "encrypt.format must be 'luks'" }).optional(),
      /** The id of an --object secret (never the secret itself). */
      encryptKeySecret: z.string().min(1).optional(),
      encryptIterTime: z.number().int().positive().max(600_000).optional(),
    })
    .strict();
});

export type CreateCommand = z.infer<ReturnType<typeof commandSchema>>;

/** The command line's schema with the rules between options (ruleIssues) as its refinement. */
export const createCommandSchema = lazy(() =>
  commandSchema().superRefine((o, ctx) => {
    for (const message of ruleIssues(o)) ctx.addIssue({ code: 'custom', message });
  }),
);

/** The rules between options: what is wrong with `o`, as messages (none: it may be created). */
function ruleIssues(o: CreateCommand): string[] {
  const issues: string[] = [];
  if (o.format === 'raw' && o.backingFile !== undefined) issues.push("backing file not supported for file format 'raw'");
  if (o.backingFile !== undefined && o.backingFormat === undefined) issues.push('backing file specified without backing format (-F raw|qcow2), as qemu-img 7 requires');
  if (o.backingFile === undefined && o.backingFormat !== undefined) issues.push('backing format cannot be used without backing file');
  if (o.size === undefined && (o.backingFile === undefined || o.unsafe)) issues.push('image creation needs a size parameter');
  // qemu's geometry rules, checked before FILE is touched (qemu-img truncates FILE first and
  // deletes it on refusal; we leave an existing FILE alone).
  const cs = o.clusterSize ?? 65536;
  if (cs < 512 || cs > 2 << 20 || (cs & (cs - 1)) !== 0) issues.push(`cluster size ${cs} is not a power of two between 512 and 2048k`);
  const rb = o.refcountBits ?? 16;
  if (![1, 2, 4, 8, 16, 32, 64].includes(rb)) issues.push(`refcount width ${rb} is not a power of two of at most 64 bits`);
  if (o.compat === '0.10' && rb !== 16) issues.push('refcount widths other than 16 bits require compat=1.1');
  if (o.compat === '0.10' && o.extendedL2) issues.push('extended L2 entries require compat=1.1');
  if (o.encryptFormat !== undefined && o.encryptKeySecret === undefined) issues.push("Parameter 'encrypt.key-secret' is required for cipher");
  if (o.encryptKeySecret !== undefined && o.encryptFormat === undefined) issues.push('encrypt.key-secret needs encrypt.format=luks');
  if (o.compat === '0.10' && o.compressionType === 'zstd') issues.push('compression_type=zstd requires compat=1.1');
  if (o.extendedL2 && cs < 16384) issues.push('extended L2 entries require a cluster size of at least 16384 bytes');
  return issues;
}

const COMMAND_KEYS = ['file', 'format', 'size', 'backingFile', 'backingFormat', 'clusterSize', 'refcountBits', 'compat', 'extendedL2', 'compressionType', 'unsafe', 'encryptFormat', 'encryptKeySecret', 'encryptIterTime'];
const isInt = (v: unknown): v is number => Number.isSafeInteger(v);
const isFormat = (v: unknown): boolean => v === 'raw' || v === 'qcow2';
const nonEmpty = (v: unknown): v is string => typeof v === 'string' && v.length > 0;

/**
 * `raw` as createCommandSchema() parses it when the schema plainly accepts it, else undefined
 * (the schema then decides, and says why). Exactly what the schema accepts of plain objects
 * (test/volume/zod-fast-paths.test.ts checks it over generated command lines).
 */
export function plainCreateCommand(raw: Record<string, unknown>): CreateCommand | undefined {
  if (Object.getPrototypeOf(raw) !== Object.prototype) return undefined;
  for (const key in raw) if (!COMMAND_KEYS.includes(key) || !Object.hasOwn(raw, key)) return undefined;
  const r = raw;
  const ok =
    nonEmpty(r.file) &&
    isFormat(r.format) &&
    (r.size === undefined || (isInt(r.size) && r.size >= 0)) &&
    (r.backingFile === undefined || (nonEmpty(r.backingFile) && r.backingFile.length <= 1023)) &&
    (r.backingFormat === undefined || isFormat(r.backingFormat)) &&
    (r.clusterSize === undefined || isInt(r.clusterSize)) &&
    (r.refcountBits === undefined || isInt(r.refcountBits)) &&
    (r.compat === undefined || r.compat === '0.10' || r.compat === '1.1') &&
    (r.extendedL2 === undefined || typeof r.extendedL2 === 'boolean') &&
    (r.compressionType === undefined || r.compressionType === 'zlib' || r.compressionType === 'zstd') &&
    (r.unsafe === undefined || typeof r.unsafe === 'boolean') &&
    (r.encryptFormat === undefined || r.encryptFormat === 'luks') &&
    (r.encryptKeySecret === undefined || nonEmpty(r.encryptKeySecret)) &&
    (r.encryptIterTime === undefined || (isInt(r.encryptIterTime) && r.encryptIterTime > 0 && r.encryptIterTime <= 600_000));
  if (!ok) return undefined;
  const command: Record<string, unknown> = {};
  for (const key of COMMAND_KEYS) if (r[key] !== undefined) command[key] = r[key];
  return ruleIssues(command as CreateCommand).length === 0 ? (command as CreateCommand) : undefined;
}

/** L1 entries qemu allows (a 32 MiB table). */
const MAX_L1_ENTRIES = (32 << 20) / 8;

/** qemu's "image size is too large for file format 'qcow2'": the L1 table would exceed 32 MiB. */
function checkQcow2Size(c: CreateCommand): void {
  if (c.format !== 'qcow2' || c.size === undefined) return;
  const cs = c.clusterSize ?? 65536;
  const perL2 = cs / (c.extendedL2 ? 16 : 8);
  const l1 = Math.ceil(Math.ceil(c.size / 512) * 512 / (cs * perL2));
  if (l1 > MAX_L1_ENTRIES) {
    throw new CowError('ECOW_BAD_SIZE', `image size ${c.size} is too large for qcow2 with ${cs}-byte clusters (its L1 table would exceed 32 MiB; try a larger cluster size)`);
  }
}

export interface CreateCliOptions {
  f?: string;
  b?: string;
  F?: string;
  o?: string[];
  q?: boolean;
  /** -u: do not open the backing file (qemu-img create -u). */
  u?: boolean;
  /** --object secrets (secrets.ts): -o encrypt.key-secret=ID names one. */
  object?: string[];
}

function sizeArgument(text: string, what: string): number {
  const v = parseSizeBig(text, what);
  if (v > MAX_SIZE) throw new CowError('ECOW_BAD_SIZE', `${what} ${v} is too large (more than 2^53 bytes)`);
  return Number(v);
}

/** qemu-img create's arguments → validated options (no file is touched). */
export function parseCreateCommand(file: string, sizeText: string | undefined, o: CreateCliOptions): CreateCommand {
  const format = parseImageFormat(o.f ?? 'raw', 'format');
  const opts = mergeOptionLists(o.o ?? []);
  const allowed: readonly string[] = format === 'qcow2' ? QCOW2_KEYS : RAW_KEYS;
  for (const k of opts.keys()) {
    if (!allowed.includes(k)) {
      throw new CowError('ECOW_BAD_ARGUMENT', `invalid parameter '${k}' for format ${format} (supported: ${allowed.join(', ')})`);
    }
  }
  const raw: Record<string, unknown> = { file, format };
  if (sizeText !== undefined && opts.has('size')) throw new CowError('ECOW_BAD_ARGUMENT', 'the image size must be specified only once');
  const sizeSrc = sizeText ?? opts.get('size');
  if (sizeSrc !== undefined) raw.size = sizeArgument(sizeSrc, 'image size');
  if (o.b !== undefined && opts.has('backing_file')) throw new CowError('ECOW_BAD_ARGUMENT', 'the backing file must be specified only once');
  if (o.F !== undefined && opts.has('backing_fmt')) throw new CowError('ECOW_BAD_ARGUMENT', 'the backing format must be specified only once');
  const backingFile = o.b ?? opts.get('backing_file');
  if (backingFile !== undefined) raw.backingFile = backingFile;
  const backingFormat = o.F ?? opts.get('backing_fmt');
  if (backingFormat !== undefined) raw.backingFormat = parseImageFormat(backingFormat, 'backing format');
  const cs = opts.get('cluster_size');
  if (cs !== undefined) raw.clusterSize = parseSize(cs, 'cluster_size');
  const rb = opts.get('refcount_bits');
  if (rb !== undefined) raw.refcountBits = parseCount(rb, 'refcount_bits');
  const compat = opts.get('compat');
  if (compat !== undefined) {
    const c = ({ '0.10': '0.10', v2: '0.10', '1.1': '1.1', v3: '1.1' } as Record<string, string>)[compat];
    if (!c) throw new CowError('ECOW_BAD_ARGUMENT', `invalid compatibility level '${compat}' (0.10 or 1.1)`);
    raw.compat = c;
  }
  const el2 = opts.get('extended_l2');
  if (el2 !== undefined) raw.extendedL2 = parseBool(el2, 'extended_l2');
  const ct = opts.get('compression_type');
  if (ct !== undefined) raw.compressionType = ct;
  if (o.u) raw.unsafe = true;
  const ef = opts.get('encrypt.format');
  if (ef !== undefined) raw.encryptFormat = ef;
  const ek = opts.get('encrypt.key-secret');
  if (ek !== undefined) raw.encryptKeySecret = ek;
  const it = opts.get('encrypt.iter-time');
  if (it !== undefined) raw.encryptIterTime = parseCount(it, 'encrypt.iter-time');
  const plain = plainCreateCommand(raw);
  const r = plain ? { success: true as const, data: plain } : createCommandSchema().safeParse(raw);
  if (!r.success) throw new CowError('ECOW_BAD_ARGUMENT', r.error.issues.map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message)).join('; '));
  checkQcow2Size(r.data);
  return r.data;
}

/** The line qemu-img create prints before formatting (same field order). */
export function formattingLine(c: CreateCommand): string {
  if (c.format === 'raw') return `Formatting '${c.file}', fmt=raw size=${c.size ?? 0}`;
  const parts = [
    ...(c.encryptFormat ? [`encrypt.format=${c.encryptFormat}`, `encrypt.key-secret=${c.encryptKeySecret}`] : []),
    ...(c.encryptIterTime !== undefined ? [`encrypt.iter-time=${c.encryptIterTime}`] : []),
    `cluster_size=${c.clusterSize ?? 65536}`,
    `extended_l2=${c.extendedL2 ? 'on' : 'off'}`,
    `compression_type=${c.compressionType ?? 'zlib'}`,
    `size=${c.size ?? 0}`,
  ];
  if (c.compat !== undefined) parts.push(`compat=${c.compat}`);
  if (c.backingFile !== undefined) parts.push(`backing_file=${c.backingFile}`);
  if (c.backingFormat !== undefined) parts.push(`backing_fmt=${c.backingFormat}`);
  parts.push('lazy_refcounts=off', `refcount_bits=${c.refcountBits ?? 16}`);
  return `Formatting '${c.file}', fmt=qcow2 ${parts.join(' ')}`;
}

/** Run a parsed create command (createImage validates the geometry: cluster size, refcount bits, …). */
export function runCreateCommand(c: CreateCommand, objects: SecretObjects = new Map()): void {
  const options: CreateOptions = { format: c.format };
  if (c.size !== undefined) options.size = c.size;
  if (c.backingFile !== undefined) options.backingFile = c.backingFile;
  if (c.backingFormat !== undefined) options.backingFormat = c.backingFormat;
  if (c.clusterSize !== undefined) options.clusterSize = c.clusterSize;
  if (c.refcountBits !== undefined) options.refcountBits = c.refcountBits;
  if (c.compat !== undefined) options.compat = c.compat;
  if (c.extendedL2 !== undefined) options.extendedL2 = c.extendedL2;
  if (c.compressionType !== undefined) options.compressionType = c.compressionType;
  if (c.unsafe) options.unsafe = true;
  if (c.encryptFormat !== undefined && c.encryptKeySecret !== undefined) {
    const keySecret = secretById(objects, c.encryptKeySecret, '-o encrypt.key-secret');
    options.encrypt = { format: c.encryptFormat, keySecret, ...(c.encryptIterTime !== undefined ? { iterTimeMs: c.encryptIterTime } : {}) };
  }
  createImage(c.file, options);
}

/** Virtual size of a freshly created image (its size came from the backing file). */
function createdSize(file: string): number {
  const image = openImage(file, { noBacking: true });
  try {
    return image.virtualSize;
  } finally {
    image.close();
  }
}

/** `img create`: qemu-img create's argument forms. */
export async function imgCreate(file: string, size: string | undefined, o: CreateCliOptions): Promise<void> {
  const c = parseCreateCommand(file, size, o);
  runCreateCommand(c, await secretObjects(o.object));
  // qemu-img prints this line before formatting; printed once the image exists, a failure
  // leaves stdout empty (the error is the one stderr line).
  if (!o.q) print(formattingLine(c.size === undefined ? { ...c, size: createdSize(c.file) } : c));
}
