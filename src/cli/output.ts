import type { ImageFormat } from '../image/types.js';
import { parseImageFormat } from '../image/format.js';
import { writeStdout } from './write.js';

export function print(text: string): void {
  writeStdout(text + '\n');
}

export function parseFormatOption(f: string | undefined): ImageFormat | undefined {
  return f === undefined ? undefined : parseImageFormat(f, 'format');
}
