import { CowError } from '../errors.js';
import type { ImageFormat } from '../image/types.js';

export function print(text: string): void {
  process.stdout.write(text + '\n');
}

export function parseFormatOption(f: string | undefined): ImageFormat | undefined {
  if (f === undefined) return undefined;
  if (f === 'raw' || f === 'qcow2') return f;
  throw new CowError('ECOW_UNKNOWN_FORMAT', `format "${f}" is not raw or qcow2`);
}
