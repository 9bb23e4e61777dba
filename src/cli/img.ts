import type { Command } from 'commander';
import { registerImgRead } from './img-read.js';

/** The `img` command group: one file per subcommand family, registered here. */
export function registerImg(program: Command): void {
  const img = program.command('img').description('qemu-img-like operations on one image or chain');
  registerImgRead(img);
}
