#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { CowError } from '../errors.js';
import { registerImg } from './img.js';
import { registerIo } from './io.js';

/** Exit codes: 0 success, 1 an operation failed (message on stderr with its code), 2 bad usage. */
export async function main(argv: string[]): Promise<number> {
  const program = new Command('cowchain')
    .description('qcow2 snapshot chains managed in-process (WebAssembly engine, Cinder-style volumes)')
    .exitOverride()
    .showHelpAfterError();
  registerImg(program);
  registerIo(program);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
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

const entry = process.argv[1] ? new URL(`file://${process.argv[1]}`).href : '';
if (import.meta.url === entry || process.argv[1]?.endsWith('/cowchain')) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
