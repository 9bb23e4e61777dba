// `cowchain io` as the user sees it; its implementation (io.ts, the engine) loads when it runs.
import type { Command } from 'commander';
import { collect } from './args.js';

export function registerIo(program: Command): void {
  program
    .command('io')
    .description('qemu-io-style commands on one image (write [-P pat] [-z] OFF LEN, read [-P pat] OFF LEN, discard OFF LEN); encrypted images with --object and --image-opts, as qemu-io')
    .argument('<file>')
    .requiredOption('-c <command>', 'a command to run (repeatable; run in order)', collect)
    .option('-f <format>', 'format of FILE (raw|qcow2); probed when absent')
    .option('-r', 'open read-only')
    .option('-q', 'quiet: no report lines')
    .option('-U, --force-share', 'read even while another process (qemu) writes the image (read-only only), as qemu-io -U')
    .option('--object <spec>', 'secret,id=ID,file=PATH: a key secret that --image-opts names (repeatable; data= is refused: it would put the secret in argv)', collect)
    .option('--image-opts', 'FILE is an option string: driver=qcow2,file.filename=F[,encrypt.key-secret=ID][,backing.encrypt.key-secret=ID…]')
    .action(async (file: string, o) => (await import('./io.js')).ioCommand(file, o));
}
