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

/** Exit 1, nothing on stdout, exactly one stderr line with `code`; returns stderr. */
export async function fails(code: string, ...argv: string[]): Promise<string> {
  const r = await cli(...argv);
  expect(r.status, r.stderr).toBe(1);
  expect(r.stdout).toBe('');
  expect(r.stderr).toMatch(new RegExp(`^cowchain: ${code}: [^\\n]+\\n$`));
  return r.stderr;
}

/** The built CLI (dist/cli/main.js) as its own process, as a user runs it. */
export function cliProcess(args: string[], cwd?: string): CliRun {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'dist/cli/main.js'), ...args], { cwd, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}
