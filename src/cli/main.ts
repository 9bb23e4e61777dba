#!/usr/bin/env node
// The `cowchain` command. `npm run build` bundles it (scripts/build-cli.mjs) into dist/cli/cli.js,
// which the bin, dist/cli/main.js (bin.cjs), compiles with its V8 code cache and runs (runAsBin):
// this module and the command declarations run at start, and each command's implementation (with
// the engine, zod, the volume driver, the Nova client) only when that command runs.
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { CowError } from '../errors.js';
import { preferPoolWriteBacks } from '../engine/write-back.js';
import { registerGroup } from './command-group.js';
import { IMG } from './img-commands.js';
import { registerIo } from './io-command.js';
import { SNAPSHOT, VOLUME } from './volume-commands.js';
import { interruptExitCode } from './interrupt.js';
import { writeStderr, writeStdout, writeToDescriptors } from './write.js';

/** The package's version, from its package.json (two levels up from src/cli and from dist/cli). */
function version(): string {
  const pkg = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  return String(pkg.version);
}

/**
 * The command tree: every command, its options and help (the actions load their code when they
 * run). Given the arguments of a run, only what that run can reach is declared (command-group.ts).
 */
export function buildProgram(argv?: readonly string[]): Command {
  const program = new Command('cowchain')
    .description('qcow2 snapshot chains managed in-process (WebAssembly engine, Cinder-style volumes)')
    .option('-V, --version', 'print the version (as qemu-img -V)')
    .exitOverride()
    // A usage error is one line `cowchain: ECOW_USAGE: …` (main), not commander's text and help.
    .configureOutput({ outputError: () => {} });
  registerGroup(program, IMG, argv);
  registerIo(program);
  registerGroup(program, VOLUME, argv);
  registerGroup(program, SNAPSHOT, argv);
  // As commander's .version(), but package.json is read only when the version is asked for.
  program.on('option:version', () => {
    writeStdout(`cowchain version ${version()}\n`);
    throw new CommanderError(0, 'cowchain.version', '');
  });
  return program;
}

/**
 * Exit codes: 0 success, 1 an operation failed (message on stderr with its code), 2 bad usage
 * (ECOW_USAGE: an unknown option or command, a missing argument, a value outside its choices);
 * a command whose status carries meaning (img check: 2 corrupt, 3 leaks) sets process.exitCode;
 * a volume command interrupted by SIGINT / SIGTERM exits 130 / 143 (interrupt.ts).
 */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram(argv);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return interruptExitCode() ?? (typeof process.exitCode === 'number' ? process.exitCode : 0);
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.exitCode === 0) return 0; // --help, --version
      // commander.help: a group named without its command; its help went to stderr already
      const what = e.code === 'commander.help' ? 'a command is needed' : e.message.replace(/^error: /, '').replace(/\n/g, ' ');
      writeStderr(`cowchain: ECOW_USAGE: ${oneLine(what)} (see '${commandPath(program, argv)} --help')\n`);
      return 2;
    }
    if (e instanceof CowError) {
      writeStderr(`cowchain: ${oneLine(e.message)}\n`);
      return interruptExitCode() ?? 1;
    }
    writeStderr(`cowchain: ECOW_INTERNAL: ${(e as Error)?.stack ?? String(e)}\n`);
    return 1;
  }
}

/** `cowchain img info`: the command words of `argv` that name commands of the tree. */
function commandPath(program: Command, argv: readonly string[]): string {
  const words = ['cowchain'];
  let at = program;
  for (const word of argv) {
    const sub = at.commands.find((c) => c.name() === word);
    if (!sub) break;
    words.push(word);
    at = sub;
  }
  return words.join(' ');
}

/** Longest error message printed: values from hostile files are quoted and cut, but never trust that alone. */
const MAX_ERROR_CHARS = 2000;

/** An error message as one bounded line: control characters escaped, cut at MAX_ERROR_CHARS. */
export function oneLine(message: string): string {
  // eslint-disable-next-line no-control-regex
  const flat = message.replace(/[\u0000-\u001f\u007f\u2028\u2029]/g, (c) => (c === '\n' ? ' | ' : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`));
  return flat.length > MAX_ERROR_CHARS ? `${flat.slice(0, MAX_ERROR_CHARS)}… (${flat.length - MAX_ERROR_CHARS} more characters)` : flat;
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

/**
 * The bin's own process: main() writing straight to fds 1 and 2 (write.ts), then exit with its
 * status. zod validates without compiling a parser per object schema (its `jitless` setting):
 * a process validates each kind of object once or twice, and compiling the parser (new Function)
 * costs more than that. zod 4 keeps its settings in globalThis.__zod_globalConfig (z.config()
 * writes there; scripts/build-cli.mjs checks the bundled zod still does), set here before zod
 * loads, so that a command without zod does not load it to set this.
 */
export function runAsBin(argv: string[]): void {
  writeToDescriptors();
  // One job per process and nothing else on libuv's pool: no write-back thread to start for a
  // job under 384 MiB (write-back.ts).
  preferPoolWriteBacks();
  const g = globalThis as { __zod_globalConfig?: { jitless?: boolean } };
  (g.__zod_globalConfig ??= {}).jitless = true;
  main(argv).then((code) => process.exit(code));
}

/** true in the bundle (scripts/build-cli.mjs defines it): there the bin, dist/cli/main.js, calls runAsBin. */
declare const COWCHAIN_CLI_BUNDLE: boolean | undefined;

// In the bundle this is dropped at build time: asking would cost every start two realpaths.
if (typeof COWCHAIN_CLI_BUNDLE === 'undefined' && invokedDirectly()) runAsBin(process.argv.slice(2));
