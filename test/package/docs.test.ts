// `npm run docs` (TypeDoc over the four entry points of package.json's exports) builds the
// reference without a warning: typedoc.json treats warnings as errors, and its validation covers
// types referenced but not exported, broken {@link}s and paths. Built into a scratch directory.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { runProcess } from '../support/child.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const out = fs.mkdtempSync(path.join(os.tmpdir(), 'cowchain-docs-'));
afterAll(() => fs.rmSync(out, { recursive: true, force: true }));

describe('reference docs (TypeDoc)', () => {
  it('build without warnings, one page per entry point', async () => {
    const typedoc = path.join(ROOT, 'node_modules/typedoc/bin/typedoc');
    // --skipErrorChecking: type errors are test/package/typecheck.test.ts's; TypeDoc's
    // own full check of the program would repeat it, over a second of CPU.
    const r = await runProcess(process.execPath, [typedoc, '--skipErrorChecking', '--out', out], { cwd: ROOT, timeoutMs: 600_000, env: { ...process.env, NO_COLOR: '1' } });
    const log = `${r.stdout}\n${r.stderr}`;
    expect(r.status, log).toBe(0);
    expect(log).not.toMatch(/\[warning\]|\[error\]/);
    const modules = fs.readdirSync(path.join(out, 'modules'));
    for (const m of ['cowchain.html', 'cowchain_volume.html', 'cowchain_nova.html', 'cowchain_testing.html']) expect(modules, m).toContain(m);
    // The doc comments reach the reference: CreateOptions' fields are described there.
    expect(fs.readFileSync(path.join(out, 'interfaces/cowchain.CreateOptions.html'), 'utf8')).toContain('qemu-img create');
  });
});
