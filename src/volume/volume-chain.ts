/**
 * A volume's chain, open: the images from a top file down, and each one's link as the headers
 * describe it. An operation opens its chain once, validates it from the links and — when its
 * engine job runs in this thread — runs the job on these very images, instead of handing the job
 * a path to open the chain again.
 */
import type { Image } from '../image/image.js';
import type { ImageFormat } from '../image/types.js';

/** One image of a chain, as its own header and its child's header describe it. */
export interface ChainLink {
  /** Bare file name in the volume directory. */
  name: string;
  format: ImageFormat;
  virtualSize: number;
  /** Backing file name exactly as the header stores it (already validated); null: none. */
  backing: string | null;
  backingFormat: ImageFormat | null;
  /** Present (true) when the image is LUKS-encrypted (qcow2 encrypt.format=luks). */
  encrypted?: true;
}

export class VolumeChain {
  /** Top first. */
  readonly links: ChainLink[];
  readonly #images: Image[];
  #closed = false;

  /** `top`, opened as the file named `name`, and the chain below it. */
  constructor(name: string, top: Image) {
    this.#images = top.chain();
    this.links = [];
    for (const layer of this.#images) {
      const backing = layer.headerInfo().backingFile ?? null;
      this.links.push({
        name,
        format: layer.format,
        virtualSize: layer.virtualSize,
        backing,
        backingFormat: backing === null ? null : (layer.backing?.format ?? null),
        ...(layer.encrypted ? { encrypted: true as const } : {}),
      });
      if (backing !== null) name = backing;
    }
  }

  /** The open image of the file `name` (undefined: not in this chain). */
  image(name: string): Image | undefined {
    const at = this.links.findIndex((l) => l.name === name);
    return at < 0 ? undefined : this.#images[at];
  }

  /** Close every image (idempotent): writable ones are flushed. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#images[0].close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
