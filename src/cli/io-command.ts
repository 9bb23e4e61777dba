// `cowchain io` as the user sees it; its implementation (io.ts, the engine) loads when it runs.
import type { Command } from 'commander';
import { collect } from './args.js';

export function registerIo(program: Command): void {
  program
    .command('io')
    .description('qemu-io-style commands on one image (write [-P pat] [-z] OFF LEN, read [-P pat] OFF LEN, discard OFF LEN)')
    .argument('<file>')
    .requiredOption('-c <command>', 'a command to run (repeatable; run in order)', collect)
    .option('-f <format>', 'format of FILE (raw|qcow2); probed when absent')
    .option('-r', 'open read-only')
    .option('-q', 'quiet: no report lines')
    .option('-U, --force-share', 'read even while another process (qemu) writes the image (read-only only), as qemu-io -U')
    .action(async (file: string, o) => (await import('./io.js')).ioCommand(file, o));
}
