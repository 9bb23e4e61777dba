#!/usr/bin/env node
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { CowError } from '../errors.js';
import { registerImg } from './img.js';
import { registerIo } from './io.js';
import { registerVolume } from './volume.js';

/**
 * Exit codes: 0 success, 1 an operation failed (message on stderr with its code), 2 bad usage;
 * a command whose status carries meaning (img check: 2 corrupt, 3 leaks) sets process.exitCode.
 */
export async function main(argv: string[]): Promise<number> {
  const program = new Command('cowchain')
    .description('qcow2 snapshot chains managed in-process (WebAssembly engine, Cinder-style volumes)')
    .exitOverride()
    .showHelpAfterError();
  registerImg(program);
  registerIo(program);
  registerVolume(program);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    if (e instanceof CowError) {
      process.stderr.write(`cowchain: ${e.message}\n`);
      return 1;
    }
    process.stderr.write(`cowchain: ECOW_INTERNAL: ${(e as Error)?.stack ?? String(e)}\n`);
    return 1;
  }
}

/** Run when executed (directly, through npm's bin link, or any symlink), not when imported. */
function invokedDirectly(): boolean {
  if (!process.argv[1]) return false;
  try {
    return fs.realpathSync(process.argv[1]) === fs.realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (invokedDirectly()) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
