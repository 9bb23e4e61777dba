/** The guest view of an image — its whole chain, as cowchain reads it — in one buffer. */
import { openImage, type OpenOptions } from '../../src/index.js';

export function readGuest(file: string, options: OpenOptions = {}): Buffer {
  const img = openImage(file, options);
  try {
    return Buffer.from(img.read(0, img.virtualSize));
  } finally {
    img.close();
  }
}
