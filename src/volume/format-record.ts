/**
 * `volume-<vol>.format`: the base image's format, written when the volume is created. Cinder
 * keeps it in its database and passes it to every qemu-img call; without it the format would
 * have to be guessed from the file's bytes, and a raw volume whose guest wrote a qcow2 header
 * at offset 0 would be taken for qcow2 (its data then read as the "backing" of nothing).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import * as z from 'zod';
import { baseName } from './names.js';
import { CowError } from '../errors.js';
import type { ImageFormat } from '../image/types.js';
import { writeFileAtomic } from './atomic-file.js';
import { imageFormatSchema } from '../image/format-schema.js';

export const FormatRecordSchema = z.strictObject({
  version: z.literal(1),
  format: imageFormatSchema,
});

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
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    throw new CowError('ECOW_INFO_INVALID', `format record ${file}: unreadable (${code ?? String(e)})`, { cause: e });
  }
  try {
    return FormatRecordSchema.parse(JSON.parse(text)).format;
  } catch (e) {
    throw new CowError('ECOW_INFO_INVALID', `format record ${file} is invalid: ${(e as Error).message}`, { cause: e });
  }
}

export async function writeFormatRecord(dir: string, volumeId: string, format: ImageFormat, beforeRename?: () => void, mode?: number): Promise<void> {
  const content = JSON.stringify(FormatRecordSchema.parse({ version: 1, format }));
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
