import type { ImageFormat } from '../image/types.js';
import { parseImageFormat } from '../image/format.js';

export function print(text: string): void {
  process.stdout.write(text + '\n');
}

export function parseFormatOption(f: string | undefined): ImageFormat | undefined {
  return f === undefined ? undefined : parseImageFormat(f, 'format');
}
