// The built bin initialises zod at a command's first use of it (scripts/build-cli.mjs), and the
// short commands on well-formed files and options use none (the checks of
// test/volume/zod-fast-paths.test.ts): what keeps zod's module and schemas out of their start.
// zod, once initialised, has put its locale into the settings global the bin creates.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI_MAIN } from '../support/cli.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cowchain-zod-first-use-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const VOL = '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d';
const SNAP = '12345678-9abc-4def-8123-456789abcdef';
const vol = ['--dir', dir, '--volume', VOL];

/** Run `argv` through the built bin's main() in a process of its own: its status, and whether zod initialised. */
function run(argv: string[]): { status: number; zod: boolean; stderr: string } {
  const script = `
    globalThis.__zod_globalConfig = { jitless: true }; // as runAsBin sets it
    require(${JSON.stringify(CLI_MAIN)}).main(${JSON.stringify(argv)}).then((status) => {
      process.stdout.write(JSON.stringify({ status, zod: 'localeError' in globalThis.__zod_globalConfig }));
    });`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  const last = r.stdout.slice(r.stdout.lastIndexOf('{'));
  return { ...(JSON.parse(last) as { status: number; zod: boolean }), stderr: r.stderr };
}

describe('zod in the built bin', () => {
  it('is not initialised by the short commands on well-formed files', () => {
    const commands = [
      ['img', 'create', '-q', '-f', 'raw', path.join(dir, 'base.raw'), '1M'],
      ['img', 'create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', path.join(dir, 'overlay.qcow2')],
      ['img', 'info', path.join(dir, 'overlay.qcow2')],
      ['volume', 'create', ...vol, '--size', '1M', '--format', 'qcow2'],
      ['volume', 'info', ...vol],
      ['snapshot', 'create', ...vol, '--snapshot', SNAP],
      ['snapshot', 'delete', ...vol, '--snapshot', SNAP],
    ];
    for (const argv of commands) expect(run(argv), argv.join(' ')).toEqual({ status: 0, zod: false, stderr: '' });
  });

  it('is initialised for what only the schema can judge, and says what it says', () => {
    const r = run(['img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=100', path.join(dir, 'bad.qcow2'), '1M']);
    expect(r.status).toBe(1);
    expect(r.zod).toBe(true);
    expect(r.stderr).toContain('cluster size 100 is not a power of two between 512 and 2048k');
  });
});
