// `cowchain snapshot delete` of a detached volume commits on the chain it opened to check the
// delete (the CLI's job runner runs jobs in its own thread: JobRunner.here), not on a second
// opening of the same files: each file of the chain is opened once, as a whole process.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI_MAIN } from '../support/cli.js';
import { openImage } from '../../src/index.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cowchain-delete-opens-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const VOL = '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d';
const SNAP = '12345678-9abc-4def-8123-456789abcdef';
const vol = ['--dir', dir, '--volume', VOL];

/** Run `argv` through the built bin's main() in a process of its own; the paths it opened (fs.openSync). */
function run(argv: string[]): { status: number; opened: string[]; stderr: string } {
  const script = `
    const fs = require('node:fs');
    const opened = [];
    const openSync = fs.openSync;
    fs.openSync = (p, ...rest) => (opened.push(String(p)), openSync(p, ...rest));
    require(${JSON.stringify(CLI_MAIN)}).main(${JSON.stringify(argv)}).then((status) => {
      process.stdout.write(JSON.stringify({ status, opened }));
    });`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  const last = r.stdout.slice(r.stdout.lastIndexOf('{"status"'));
  return { ...(JSON.parse(last) as { status: number; opened: string[] }), stderr: r.stderr };
}

describe('cowchain snapshot delete', () => {
  it('opens each file of the chain once, and commits the data down', () => {
    for (const argv of [
      ['volume', 'create', ...vol, '--size', '4M', '--format', 'qcow2'],
      ['snapshot', 'create', ...vol, '--snapshot', SNAP],
    ]) expect(run(argv).status, argv.join(' ')).toBe(0);
    const top = path.join(dir, `volume-${VOL}.${SNAP}`);
    const img = openImage(top, { writable: true });
    img.write(65536, new Uint8Array(65536).fill(0x5a));
    img.close();

    const r = run(['snapshot', 'delete', ...vol, '--snapshot', SNAP]);
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
    const base = path.join(dir, `volume-${VOL}`);
    const opens = (file: string) => r.opened.filter((p) => path.resolve(dir, p) === file).length;
    expect({ top: opens(top), base: opens(base) }).toEqual({ top: 1, base: 1 });
    expect(fs.existsSync(top)).toBe(false);
    const after = openImage(base);
    try {
      expect(after.read(65536, 65536).every((b) => b === 0x5a)).toBe(true);
    } finally {
      after.close();
    }
  });
});
