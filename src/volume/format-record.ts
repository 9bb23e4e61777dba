/**
 * `volume-<vol>.format`: the base image's format, written when the volume is created. Cinder
 * keeps it in its database and passes it to every qemu-img call; without it the format would
 * have to be guessed from the file's bytes, and a raw volume whose guest wrote a qcow2 header
 * at offset 0 would be taken for qcow2 (its data then read as the "backing" of nothing).
 */
import fs from 'node:fs';
import path from 'node:path';
import * as z from 'zod';
import { baseName } from './names.js';
import { CowError } from '../errors.js';
import type { ImageFormat } from '../image/types.js';
import { writeFileAtomic } from './atomic-file.js';
import { imageFormatSchema } from '../image/format-schema.js';
import { IMAGE_FORMATS } from '../image/format.js';
import { lazy } from '../lazy.js';

/** The record's schema, built at first use: a well-formed record needs no zod (wellFormedRecord). */
export const formatRecordSchema = lazy(() =>
  z.strictObject({
    version: z.literal(1),
    format: imageFormatSchema(),
  }),
);

/**
 * The format of `v` when it is a plain object formatRecordSchema() plainly accepts, else
 * undefined (the schema then decides, and says why). Exactly what the schema accepts of what
 * JSON.parse returns (test/volume/zod-fast-paths.test.ts checks it over generated inputs).
 */
export function wellFormedRecord(v: unknown): ImageFormat | undefined {
  if (typeof v !== 'object' || v === null || Object.getPrototypeOf(v) !== Object.prototype) return undefined;
  const o = v as Record<string, unknown>;
  let keys = 0;
  for (const key in o) {
    if ((key !== 'version' && key !== 'format') || !Object.hasOwn(o, key)) return undefined;
    keys++;
  }
  const format = o.format as ImageFormat;
  return keys === 2 && o.version === 1 && IMAGE_FORMATS.includes(format) ? format : undefined;
}

export function formatRecordName(volumeId: string): string {
  return `${baseName(volumeId)}.format`;
}

/** Prefix of writeFormatRecord's temp files (a leftover is fsck's to remove). */
export function formatRecordTempPrefix(volumeId: string): string {
  return `.${formatRecordName(volumeId)}.tmp-`;
}

/** The recorded format, or null when the volume has no record (made by another tool). */
export async function readFormatRecord(dir: string, volumeId: string): Promise<ImageFormat | null> {
  const file = path.join(dir, formatRecordName(volumeId));
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8'); // some 30 bytes: four thread-pool round trips as readFile
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    throw new CowError('ECOW_INFO_INVALID', `format record ${file}: unreadable (${code ?? String(e)})`, { cause: e });
  }
  try {
    const record: unknown = JSON.parse(text);
    return wellFormedRecord(record) ?? formatRecordSchema().parse(record).format;
  } catch (e) {
    throw new CowError('ECOW_INFO_INVALID', `format record ${file} is invalid: ${(e as Error).message}`, { cause: e });
  }
}

export async function writeFormatRecord(dir: string, volumeId: string, format: ImageFormat, beforeRename?: () => void, mode?: number): Promise<void> {
  const record = { version: 1, format };
  const content = JSON.stringify(wellFormedRecord(record) ? record : formatRecordSchema().parse(record));
  await writeFileAtomic(dir, formatRecordName(volumeId), formatRecordTempPrefix(volumeId), content, 'format record', beforeRename, mode);
}

/**
 * The base image's format for one operation: the caller's `given` and the record must agree
 * (ECOW_FORMAT_CONFLICT); either is enough. Undefined: neither says (see VolumeFiles.formatOf).
 */
export function pinBaseFormat(volumeId: string, given: ImageFormat | undefined, recorded: ImageFormat | null): ImageFormat | undefined {
  if (given !== undefined && given !== 'raw' && given !== 'qcow2') {
    throw new CowError('ECOW_UNKNOWN_FORMAT', `base format "${String(given)}" of volume ${volumeId} is not raw or qcow2`);
  }
  if (given !== undefined && recorded !== null && given !== recorded) {
    throw new CowError('ECOW_FORMAT_CONFLICT', `volume ${volumeId} was created ${recorded}, but its format was given as ${given}`);
  }
  return given ?? recorded ?? undefined;
}
