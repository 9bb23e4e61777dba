import type { Command } from 'commander';
import { openImage } from '../chain/open-chain.js';
import { convertToRaw } from '../image/convert.js';
import { qemuStyleInfo } from '../image/info.js';
import type { Image } from '../image/image.js';
import { CowError } from '../errors.js';
import { parseFormatOption, print } from './output.js';

/** Open FILE (and its chain) for the duration of `fn`. */
export function withImage<T>(file: string, format: string | undefined, fn: (img: Image) => T, writable = false): T {
  const img = openImage(file, { format: parseFormatOption(format), writable });
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

/** `img info`, `img map`, `img convert`. */
export function registerImgRead(img: Command): void {
  img
    .command('info')
    .description('show header facts (qemu-img info)')
    .argument('<file>')
    .option('-f <format>', 'format of FILE (raw|qcow2); probed when absent')
    .option('--output <fmt>', 'human or json', 'human')
    .option('--backing-chain', 'describe every image of the chain')
    .action((file: string, o: { f?: string; output: string; backingChain?: boolean }) =>
      withImage(file, o.f, (image) => {
        const infos = (o.backingChain ? image.chain() : [image]).map(qemuStyleInfo);
        if (o.output === 'json') print(JSON.stringify(o.backingChain ? infos : infos[0], null, 4));
        else print(infos.map(humanInfo).join('\n\n'));
      }),
    );

  img
    .command('map')
    .description('allocation map of the chain (qemu-img map)')
    .argument('<file>')
    .option('-f <format>', 'format of FILE (raw|qcow2); probed when absent')
    .option('--output <fmt>', 'human or json', 'human')
    .action((file: string, o: { f?: string; output: string }) =>
      withImage(file, o.f, (image) => {
        const entries = image.map();
        if (o.output === 'json') {
          print(JSON.stringify(entries));
        } else {
          print(['Offset          Length          Mapped to       Depth'].concat(
            entries.filter((e) => e.data).map((e) => `0x${e.start.toString(16).padEnd(14)} 0x${e.length.toString(16).padEnd(14)} ${e.offset !== undefined ? '0x' + e.offset.toString(16).padEnd(14) : '-'.padEnd(16)} ${e.depth}`),
          ).join('\n'));
        }
      }),
    );

  img
    .command('convert')
    .description('write the guest view of a chain to a new image (qemu-img convert)')
    .argument('<src>')
    .argument('<dst>')
    .option('-f <format>', 'format of SRC (raw|qcow2); probed when absent')
    .option('-O <format>', 'output format', 'raw')
    .action((src: string, dst: string, o: { f?: string; O: string }) => {
      if (o.O !== 'raw') throw new CowError('ECOW_BAD_ARGUMENT', `output format "${o.O}" is not supported yet (raw only)`);
      withImage(src, o.f, (image) => convertToRaw(image, dst));
    });
}
