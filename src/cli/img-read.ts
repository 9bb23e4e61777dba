// `img info` and `img map`: read-only views of an image and its chain.
import { openImage } from '../image/open-chain.js';
import { qemuStyleInfo } from '../image/info.js';
import type { Image } from '../image/image.js';
import { parseFormatOption, print } from './output.js';

/**
 * Open FILE (and its chain) for the duration of `fn`, with qemu's image locks: reading is refused
 * while another process writes an image of the chain unless `forceShare` (-U), as in qemu-img.
 */
export function withImage<T>(file: string, format: string | undefined, fn: (img: Image) => T, writable = false, forceShare = false): T {
  const img = openImage(file, { format: parseFormatOption(format), writable, readLocks: !forceShare });
  try {
    return fn(img);
  } finally {
    img.close();
  }
}

function humanInfo(info: ReturnType<typeof qemuStyleInfo>): string {
  const lines = [
    `image: ${info.filename}`,
    `file format: ${info.format}`,
    `virtual size: ${info['virtual-size']} bytes`,
    `disk size: ${info['actual-size']} bytes`,
  ];
  if (info['cluster-size']) lines.push(`cluster_size: ${info['cluster-size']}`);
  if (info['backing-filename']) {
    lines.push(`backing file: ${info['backing-filename']}`);
    if (info['backing-filename-format']) lines.push(`backing file format: ${info['backing-filename-format']}`);
  }
  const d = info['format-specific']?.data;
  if (d) {
    lines.push('Format specific information:');
    for (const [k, v] of Object.entries(d)) lines.push(`    ${k}: ${v}`);
  }
  return lines.join('\n');
}

export interface InfoCliOptions {
  f?: string;
  output: string;
  backingChain?: boolean;
  forceShare?: boolean;
}

/** `img info`. */
export function imgInfo(file: string, o: InfoCliOptions): void {
  withImage(
    file,
    o.f,
    (image) => {
      const infos = (o.backingChain ? image.chain() : [image]).map(qemuStyleInfo);
      if (o.output === 'json') print(JSON.stringify(o.backingChain ? infos : infos[0], null, 4));
      else print(infos.map(humanInfo).join('\n\n'));
    },
    false,
    o.forceShare,
  );
}

export interface MapCliOptions {
  f?: string;
  output: string;
  forceShare?: boolean;
}

/** `img map`. */
export function imgMap(file: string, o: MapCliOptions): void {
  withImage(
    file,
    o.f,
    (image) => {
      const entries = image.map();
      if (o.output === 'json') {
        print(JSON.stringify(entries));
      } else {
        print(['Offset          Length          Mapped to       Depth'].concat(
          entries.filter((e) => e.data).map((e) => `0x${e.start.toString(16).padEnd(14)} 0x${e.length.toString(16).padEnd(14)} ${e.offset !== undefined ? '0x' + e.offset.toString(16).padEnd(14) : '-'.padEnd(16)} ${e.depth}`),
        ).join('\n'));
      }
    },
    false,
    o.forceShare,
  );
}
