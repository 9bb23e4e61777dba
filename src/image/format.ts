/**
 * The image formats the engine reads and writes, and the one place a format name from outside
 * (an option, a header's backing format, a request, a record) becomes an `ImageFormat`. Its zod
 * schema is in format-schema.ts: reading an image needs no zod.
 */
import { CowError, type CowErrorCode } from '../errors.js';

/** An image format: a raw file, or qcow2. */
export type ImageFormat = 'raw' | 'qcow2';

export const IMAGE_FORMATS = ['raw', 'qcow2'] as const satisfies readonly ImageFormat[];

export function isImageFormat(value: unknown): value is ImageFormat {
  return value === 'raw' || value === 'qcow2';
}

/**
 * `name` as an ImageFormat; anything else fails with `code` (default ECOW_UNKNOWN_FORMAT) and a
 * message naming `what` and the value.
 */
export function parseImageFormat(name: string, what: string, code: CowErrorCode = 'ECOW_UNKNOWN_FORMAT'): ImageFormat {
  if (isImageFormat(name)) return name;
  throw new CowError(code, `${what} "${name}" is not raw or qcow2`);
}
