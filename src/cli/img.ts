import type { Command } from 'commander';
import { registerImgCheck } from './img-check.js';
import { registerImgRead } from './img-read.js';
import { registerImgCreate } from './img-create.js';
import { registerImgChain } from './img-chain.js';

/** The `img` command group: one file per subcommand family, registered here. */
export function registerImg(program: Command): void {
  const img = program.command('img').description('qemu-img-like operations on one image or chain');
  registerImgRead(img);
  registerImgCheck(img);
  registerImgCreate(img);
  registerImgChain(img);
}
