// `img info` and `img map`: read-only views of an image and its chain, shaped as qemu-img's.
import * as fs from 'node:fs';
import { openImage } from '../image/open-chain.js';
import { qemuStyleInfo, type QemuStyleInfo } from '../image/info.js';
import { CowError } from '../errors.js';
import type { Image } from '../image/image.js';
import { parseFormatOption, print } from './output.js';
import { writeStderr } from './write.js';
import { imageArgument } from './secrets.js';
import type { KeySecrets } from '../image/open-chain.js';

/**
 * Open FILE (and its chain) for the duration of `fn`, with qemu's image locks: reading is refused
 * while another process writes an image of the chain unless `forceShare` (-U), as in qemu-img.
 */
export function withImage<T>(file: string, format: string | undefined, fn: (img: Image) => T, writable = false, forceShare = false, keySecrets?: KeySecrets): T {
  const img = openImage(file, { format: parseFormatOption(format), writable, readLocks: !forceShare, keySecrets });
  try {
    return fn(img);
  } finally {
    img.close();
  }
}

/** qemu's size_to_str: three significant digits and a binary unit, `196 KiB`, `1 GiB`, `512 B`. */
export function sizeToStr(value: number): string {
  const units = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'];
  // qemu switches to the next unit once the integer part reaches 1000 (frexp of value * 1024 / 1000)
  let i = 0;
  while (i < units.length - 1 && value / 2 ** (10 * i) >= 1000) i++;
  return `${Number((value / 2 ** (10 * i)).toPrecision(3))} ${units[i]}B`;
}

/** qemu-img info's human text for one image (bdrv_image_info_dump, qemu 7.2). */
export function humanInfo(info: QemuStyleInfo): string {
  const lines = [
    `image: ${info.filename}`,
    `file format: ${info.format}`,
    `virtual size: ${sizeToStr(info['virtual-size'])} (${info['virtual-size']} bytes)`,
    `disk size: ${sizeToStr(info['actual-size'])}`,
  ];
  if (info.encrypted) lines.push('encrypted: yes');
  if (info['cluster-size']) lines.push(`cluster_size: ${info['cluster-size']}`);
  if (info['dirty-flag']) lines.push('cleanly shut down: no');
  const backing = info['backing-filename'];
  if (backing !== undefined) {
    const full = info['full-backing-filename'];
    lines.push(`backing file: ${backing}${full !== undefined && full !== backing ? ` (actual path: ${full})` : ''}`);
    if (info['backing-filename-format']) lines.push(`backing file format: ${info['backing-filename-format']}`);
  }
  const d = info['format-specific']?.data;
  if (d) {
    lines.push('Format specific information:');
    for (const [k, v] of Object.entries(d)) lines.push(`    ${k.replace(/-/g, ' ')}: ${v}`);
  }
  return lines.join('\n');
}

export interface InfoCliOptions {
  f?: string;
  output: string;
  backingChain?: boolean;
  forceShare?: boolean;
  object?: string[];
  imageOpts?: boolean;
}

/**
 * `img info`. Without --backing-chain only FILE is opened, as qemu-img opens it: a backing file
 * that is missing does not hide the image's own header; a warning line on stderr says it is missing.
 */
export async function imgInfo(arg: string, o: InfoCliOptions): Promise<void> {
  // As qemu-img info: no data is read, so an encrypted image's key is not needed (nor checked).
  const { file, format } = await imageArgument(arg, o);
  if (o.backingChain) {
    withImage(file, format, (image) => {
      const infos = image.chain().map(qemuStyleInfo);
      print(o.output === 'json' ? JSON.stringify(infos, null, 4) : infos.map(humanInfo).join('\n\n'));
    }, false, o.forceShare);
    return;
  }
  const image = openImage(file, { format, noBacking: true, readLocks: !o.forceShare });
  let info: QemuStyleInfo;
  try {
    info = qemuStyleInfo(image);
  } finally {
    image.close();
  }
  print(o.output === 'json' ? JSON.stringify(info, null, 4) : humanInfo(info));
  const full = info['full-backing-filename'];
  if (full !== undefined && !fs.existsSync(full)) {
    const missing = new CowError('ECOW_BACKING_MISSING', `backing file ${full} of ${file} does not exist (the chain cannot be read; shown: the image's own header)`);
    writeStderr(`cowchain: warning: ${missing.message}\n`);
  }
}

export interface MapCliOptions {
  f?: string;
  output: string;
  forceShare?: boolean;
}

/** `img map`. The human form is qemu-img's: the ranges holding data, with the file they are in. */
export function imgMap(file: string, o: MapCliOptions): void {
  withImage(
    file,
    o.f,
    (image) => {
      const entries = image.map();
      if (o.output === 'json') {
        print(JSON.stringify(entries));
        return;
      }
      const files = image.chain().map((layer) => layer.filename);
      const hex = (n: number) => (n === 0 ? '0' : `0x${n.toString(16)}`).padEnd(16);
      const lines = [`${'Offset'.padEnd(16)}${'Length'.padEnd(16)}${'Mapped to'.padEnd(16)}File`];
      for (const e of entries) {
        if (!e.data || e.zero) continue;
        if (e.offset === undefined) throw new CowError('ECOW_BAD_ARGUMENT', `${file}: File contains external, encrypted or compressed clusters (use --output=json)`);
        lines.push(`${hex(e.start)}${hex(e.length)}${hex(e.offset)}${files[e.depth]}`);
      }
      print(lines.join('\n'));
    },
    false,
    o.forceShare,
  );
}
