import { CowError } from '../errors.js';

/**
 * A volume or image size in bytes: a whole number of 512-byte sectors (what raw and qcow2 both
 * represent exactly), positive, at most 2^53. ECOW_BAD_ARGUMENT otherwise.
 */
export function checkSize(size: unknown, what: string): number {
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0 || size % 512 !== 0) {
    throw new CowError('ECOW_BAD_ARGUMENT', `${what} ${String(size)} is not a positive multiple of 512 bytes`);
  }
  return size;
}
