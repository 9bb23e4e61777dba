import type { Command } from 'commander';
import { commitImage } from '../image/commit.js';
import { rebaseImage, streamImage } from '../image/rebase.js';
import { parseFormatOption, print } from './output.js';
import { progressBar } from './progress.js';

/** `img commit`, `img rebase`, `img stream`: operations that move data along a chain. */
export function registerImgChain(img: Command): void {
  img
    .command('commit')
    .description('copy what TOP allocates into its backing file (qemu-img commit); TOP is emptied unless -d')
    .argument('<top>')
    .option('-b <base>', 'commit down to this image of the chain (implies -d)')
    .option('-d', 'leave TOP as it is')
    .option('-p', 'show a progress bar (on a terminal)')
    .option('-q', 'quiet')
    .action((top: string, o: { b?: string; d?: boolean; p?: boolean; q?: boolean }) => {
      const bar = progressBar(!!o.p && !o.q, 'commit');
      try {
        commitImage(top, { base: o.b, drop: o.d, onProgress: bar.onProgress });
      } finally {
        bar.stop();
      }
      if (!o.q) print('Image committed.');
    });

  img
    .command('rebase')
    .description("change FILE's backing file (qemu-img rebase); safe by default, -u for header only")
    .argument('<file>')
    .requiredOption('-b <backing>', 'new backing file name as stored in the header ("" removes it: flatten)')
    .option('-F <format>', 'format of the new backing file (raw|qcow2); probed when absent')
    .option('-u', 'unsafe: rewrite the header only')
    .option('-p', 'show a progress bar (on a terminal)')
    .option('-q', 'quiet')
    .action((file: string, o: { b: string; F?: string; u?: boolean; p?: boolean; q?: boolean }) => {
      const bar = progressBar(!!o.p && !o.q, 'rebase');
      try {
        rebaseImage(file, o.b, { unsafe: o.u, backingFormat: parseFormatOption(o.F), onProgress: bar.onProgress });
      } finally {
        bar.stop();
      }
    });

  img
    .command('stream')
    .description("pull FILE's backing data into it down to BASE (libvirt blockRebase), then make BASE its backing file")
    .argument('<file>')
    .option('-b <base>', 'keep this image of the chain as the new backing file (default: pull everything)')
    .option('-p', 'show a progress bar (on a terminal)')
    .action((file: string, o: { b?: string; p?: boolean }) => {
      const bar = progressBar(!!o.p, 'stream');
      try {
        streamImage(file, { base: o.b ?? null, onProgress: bar.onProgress });
      } finally {
        bar.stop();
      }
    });
}
