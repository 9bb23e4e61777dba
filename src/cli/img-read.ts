import type { Command } from 'commander';
import { openImage } from '../image/open-chain.js';
import { convertImage, type ConvertOptions } from '../image/convert.js';
import { qemuStyleInfo } from '../image/info.js';
import type { Image } from '../image/image.js';
import { CowError } from '../errors.js';
import { parseFormatOption, print } from './output.js';
import { collect, mergeOptionLists } from './args.js';
import { parseCreateCommand } from './img-create.js';
import { progressBar } from './progress.js';
import { parseImageFormat } from '../image/format.js';

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

/** `img info`, `img map`, `img convert`. */
export function registerImgRead(img: Command): void {
  img
    .command('info')
    .description('show header facts (qemu-img info)')
    .argument('<file>')
    .option('-f <format>', 'format of FILE (raw|qcow2); probed when absent')
    .option('--output <fmt>', 'human or json', 'human')
    .option('--backing-chain', 'describe every image of the chain')
    .option('-U, --force-share', 'read even while another process (qemu) writes the image, as qemu-img -U')
    .action((file: string, o: { f?: string; output: string; backingChain?: boolean; forceShare?: boolean }) =>
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
      ),
    );

  img
    .command('map')
    .description('allocation map of the chain (qemu-img map)')
    .argument('<file>')
    .option('-f <format>', 'format of FILE (raw|qcow2); probed when absent')
    .option('--output <fmt>', 'human or json', 'human')
    .option('-U, --force-share', 'read even while another process (qemu) writes the image, as qemu-img -U')
    .action((file: string, o: { f?: string; output: string; forceShare?: boolean }) =>
      withImage(file, o.f, (image) => {
        const entries = image.map();
        if (o.output === 'json') {
          print(JSON.stringify(entries));
        } else {
          print(['Offset          Length          Mapped to       Depth'].concat(
            entries.filter((e) => e.data).map((e) => `0x${e.start.toString(16).padEnd(14)} 0x${e.length.toString(16).padEnd(14)} ${e.offset !== undefined ? '0x' + e.offset.toString(16).padEnd(14) : '-'.padEnd(16)} ${e.depth}`),
          ).join('\n'));
        }
      }, false, o.forceShare),
    );

  img
    .command('convert')
    .description('write the guest view of a chain to a new image (qemu-img convert); zeros stay holes / unallocated')
    .argument('<src>')
    .argument('<dst>')
    .option('-f <format>', 'format of SRC (raw|qcow2); probed when absent')
    .option('-O <format>', 'output format (raw|qcow2)', 'raw')
    .option('-o <options>', 'qcow2 target: cluster_size=…,compat=0.10|1.1,refcount_bits=…,extended_l2=on|off,compression_type=zlib|zstd (repeatable)', collect)
    .option('-c', 'compress the qcow2 target: every cluster holding data is stored compressed (deflate, or zstd with -o compression_type=zstd)')
    .option('-p', 'show a progress bar (on a terminal)')
    .option('-q', 'quiet')
    .option('-U, --force-share', 'read even while another process (qemu) writes the image, as qemu-img -U')
    .action((src: string, dst: string, o: { f?: string; O: string; o?: string[]; c?: boolean; p?: boolean; q?: boolean; forceShare?: boolean }) => {
      const target = convertTarget(dst, o.O, o.o, !!o.c);
      withImage(src, o.f, (image) => {
        const bar = progressBar(!!o.p && !o.q, 'convert');
        try {
          convertImage(image, dst, { ...target, onProgress: bar.onProgress });
        } finally {
          bar.stop();
        }
      }, false, o.forceShare);
    });
}

/**
 * `-O FMT -o …` of `img convert` → convertImage's format and create options, checked before
 * anything is opened or written: the keys and rules of `img create` (qemu-img's). As qemu-img
 * convert, a `size` is validated and then ignored (the target takes the source's size); a target
 * with a backing file (backing_file, backing_fmt) is not supported.
 */
export function convertTarget(dst: string, format: string, options: string[] | undefined, compressed = false): Pick<ConvertOptions, 'format' | 'create' | 'compressed'> {
  // An output format we cannot write is a bad argument (qemu-img knows more formats than we do).
  const fmt = parseImageFormat(format, 'output format', 'ECOW_BAD_ARGUMENT');
  if (compressed && fmt !== 'qcow2') throw new CowError('ECOW_BAD_ARGUMENT', `compression (-c) needs the qcow2 output format, not ${fmt}`);
  const keys = mergeOptionLists(options ?? []);
  for (const k of ['backing_file', 'backing_fmt']) {
    if (keys.has(k)) throw new CowError('ECOW_BAD_ARGUMENT', `invalid parameter '${k}' for convert: a target with a backing file is not supported`);
  }
  // img create's parser wants a size: a given one is checked there (then ignored), else any.
  const c = parseCreateCommand(dst, keys.has('size') ? undefined : '0', { f: fmt, o: options });
  if (fmt === 'raw') return { format: 'raw' };
  const create: NonNullable<ConvertOptions['create']> = {};
  if (c.clusterSize !== undefined) create.clusterSize = c.clusterSize;
  if (c.refcountBits !== undefined) create.refcountBits = c.refcountBits;
  if (c.compat !== undefined) create.compat = c.compat;
  if (c.extendedL2 !== undefined) create.extendedL2 = c.extendedL2;
  if (c.compressionType !== undefined) create.compressionType = c.compressionType;
  return { format: 'qcow2', create, ...(compressed ? { compressed } : {}) };
}
