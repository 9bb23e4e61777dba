/**
 * Run the CLI in-process through main(), capturing stdout and stderr, or as its own process. The
 * error contract: exit 1 with exactly one stderr line `cowchain: ECOW_…: message`.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { expect, vi } from 'vitest';
import { main } from '../../src/cli/main.js';
import { ROOT } from './bundle.js';

export interface CliRun {
  status: number;
  stdout: string;
  stderr: string;
}

export async function cli(...argv: string[]): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const out = vi.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => ((stdout += String(c)), true));
  const err = vi.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => ((stderr += String(c)), true));
  try {
    const status = await main(argv);
    return { status, stdout, stderr };
  } finally {
    out.mockRestore();
    err.mockRestore();
    process.exitCode = undefined;
  }
}

/** Exit 0 and nothing on stderr; returns stdout. */
export async function ok(...argv: string[]): Promise<string> {
  const r = await cli(...argv);
  expect(r, argv.join(' ')).toMatchObject({ status: 0, stderr: '' });
  return r.stdout;
}

/**
 * The error contract on a finished run: exit 1, nothing on stdout, and exactly one stderr line
 * `cowchain: CODE: message`. Returns the message.
 */
export function expectCliFailure(r: CliRun, code: string, what = ''): string {
  expect(r.status, `${what}: ${r.stderr}`).toBe(1);
  expect(r.stdout, what).toBe('');
  const lines = r.stderr.split('\n');
  expect(lines.length, `stderr: ${JSON.stringify(r.stderr)}`).toBe(2);
  expect(lines[1]).toBe('');
  const m = /^cowchain: (ECOW_[A-Z_0-9]+): (.+)$/.exec(lines[0]);
  expect(m, lines[0]).not.toBeNull();
  expect(m![1], lines[0]).toBe(code);
  return m![2];
}

/** In-process: the error contract (expectCliFailure) with `code`; returns stderr. */
export async function fails(code: string, ...argv: string[]): Promise<string> {
  const r = await cli(...argv);
  expectCliFailure(r, code, argv.join(' '));
  return r.stderr;
}

/** The built CLI, as `npm run build` emits it (kept fresh by test/support/global-setup.ts). */
export const CLI_MAIN = path.join(ROOT, 'dist/cli/main.js');

/** The built CLI as its own process, as a user runs it. */
export function cliProcess(args: string[], cwd?: string): CliRun {
  const r = spawnSync(process.execPath, [CLI_MAIN, ...args], { cwd, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** The built CLI as its own process: the error contract (expectCliFailure) with `code`; returns the message. */
export function expectCliError(args: string[], code: string, cwd?: string): string {
  return expectCliFailure(cliProcess(args, cwd), code, `cowchain ${args.join(' ')}`);
}
