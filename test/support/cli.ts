/**
 * Run the CLI in-process through main(), capturing stdout and stderr: the error contract is
 * exit 1 with exactly one stderr line `cowchain: ECOW_…: message`.
 */
import { expect, vi } from 'vitest';
import { main } from '../../src/cli/main.js';

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
