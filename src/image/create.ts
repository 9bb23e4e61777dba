import * as fs from 'node:fs';
import * as z from 'zod';
import { Engine } from '../engine/engine.js';
import { FileBackend, type Backend } from '../engine/backend.js';
import { CowError } from '../errors.js';
import { imageFormatSchema } from './format-schema.js';
import { openImage, defaultResolveBacking } from './open-chain.js';

/** Options of `createImage`, qemu-img's names in camelCase; validated at the boundary. */
export const CreateOptionsSchema = z
  .object({
    format: imageFormatSchema.default('qcow2'),
    /** Virtual size in bytes; defaults to the backing file's size. */
    size: z.number().int().nonnegative().max(2 ** 53).optional(),
    /** Backing file name exactly as it will be stored in the header (relative or absolute). */
    backingFile: z.string().min(1).max(1023).optional(),
    backingFormat: imageFormatSchema.optional(),
    clusterSize: z.number().int().refine((v) => v >= 512 && v <= 2 << 20 && (v & (v - 1)) === 0, 'a power of two between 512 and 2097152').default(65536),
    refcountBits: z.number().int().refine((v) => [1, 2, 4, 8, 16, 32, 64].includes(v), 'a power of two between 1 and 64').default(16),
    compat: z.enum(['0.10', '1.1']).default('1.1'),
    extendedL2: z.boolean().default(false),
    /** How `convert -c` compresses clusters: qemu-img's names (zstd needs compat 1.1). */
    compressionType: z.enum(['zlib', 'zstd']).default('zlib'),
  })
  .strict();
export type CreateOptions = z.input<typeof CreateOptionsSchema>;

function parseOptions(options: CreateOptions) {
  const r = CreateOptionsSchema.safeParse(options);
  if (!r.success) throw new CowError('ECOW_BAD_ARGUMENT', `invalid create options: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  if (r.data.format === 'raw' && r.data.backingFile) throw new CowError('ECOW_BAD_ARGUMENT', 'a raw image cannot have a backing file');
  return r.data;
}

/** Lay out a qcow2 image on any backend (no file system needed). */
export function createQcow2On(backend: Backend, options: CreateOptions & { size: number }): void {
  const o = parseOptions(options);
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
        engine.newString(o.backingFile ?? ''),
        engine.newString(o.backingFile ? (o.backingFormat ?? '') : ''),
      ),
    );
  } finally {
    engine.removeBackend(handle);
    engine.collect();
  }
}

/**
 * Create an image file, as `qemu-img create`. With a backing file, it must open (its chain is
 * validated) and gives the default size and, when not given, the backing format.
 */
export function createImage(file: string, options: CreateOptions): void {
  const o = parseOptions(options);
  let size = o.size;
  let backingFormat = o.backingFormat;
  if (o.backingFile) {
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
  const backend = new FileBackend(file, true, true);
  try {
    createQcow2On(backend, { ...options, size, backingFormat });
  } catch (e) {
    // As qemu-img: a refused or failed creation leaves no half-made image behind.
    backend.close();
    fs.rmSync(file, { force: true });
    throw e;
  } finally {
    backend.close();
  }
}
