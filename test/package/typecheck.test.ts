// The type check of the whole tree (tsconfig.json: src, test, bench, examples), as a test file: it
// runs beside the other files instead of before all of them, which on two cores took its 16 s of
// CPU out of the suite's wall time. `npm run typecheck` runs the same command alone.
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { runProcess } from '../support/child.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

describe('type check', () => {
  it('tsc -p tsconfig.json --noEmit reports no error', async () => {
    const tsc = path.join(ROOT, 'node_modules/typescript/bin/tsc');
    const r = await runProcess(process.execPath, [tsc, '-p', 'tsconfig.json', '--noEmit', '--pretty', 'false'], { cwd: ROOT, timeoutMs: 600_000 });
    expect({ status: r.status, signal: r.signal, error: r.error?.message }, `tsc:\n${r.stdout}${r.stderr}`).toEqual({ status: 0, signal: null, error: undefined });
  });
});
