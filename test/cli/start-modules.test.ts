// The short volume commands of the built bin load no node:fs/promises: that module brings readline,
// the file watchers and fs/dir with it, some 1 ms of a start (src/volume/atomic-file.ts says what
// the driver uses instead). A command that needs it (a clone's rename, a new share's indicator)
// still loads it when it runs; this checks it stays off the path an operator runs most. Nor
// node:os: the lock owner's host name comes from /proc (lock-owner.ts).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI_MAIN } from '../support/cli.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cowchain-start-modules-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const VOL = '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d';
const SNAP = '12345678-9abc-4def-8123-456789abcdef';
const vol = ['--dir', dir, '--volume', VOL];

/** Run `argv` through the built bin's main() in a process of its own: its status, and the built-in modules it loaded. */
function run(argv: string[]): { status: number; loaded: string[]; stderr: string } {
  const script = `
    const before = new Set(process.moduleLoadList);
    require(${JSON.stringify(CLI_MAIN)}).main(${JSON.stringify(argv)}).then((status) => {
      process.stdout.write(JSON.stringify({ status, loaded: process.moduleLoadList.filter((m) => !before.has(m)) }));
    });`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  const last = r.stdout.slice(r.stdout.lastIndexOf('{"status"'));
  return { ...(JSON.parse(last) as { status: number; loaded: string[] }), stderr: r.stderr };
}

describe('built-in modules of the built bin', () => {
  it('the short volume commands load no node:fs/promises (nor node:os)', () => {
    // the share's indicator first, as a service's first volume makes it (that path may load it)
    expect(run(['volume', 'create', ...vol, '--size', '1M', '--format', 'qcow2']).status).toBe(0);
    const commands = [
      ['volume', 'info', ...vol],
      ['snapshot', 'create', ...vol, '--snapshot', SNAP],
      ['snapshot', 'delete', ...vol, '--snapshot', SNAP],
    ];
    for (const argv of commands) {
      const r = run(argv);
      expect({ status: r.status, stderr: r.stderr }, argv.join(' ')).toEqual({ status: 0, stderr: '' });
      expect(r.loaded.filter((m) => /fs\/promises|readline|^NativeModule os$/.test(m)), argv.join(' ')).toEqual([]);
    }
  });

  it('a command that uses it still loads it (what the check above looks for is there to see)', () => {
    // revert renames its new overlay into place through fs.promises (driver.ts)
    expect(run(['snapshot', 'create', ...vol, '--snapshot', SNAP]).status).toBe(0);
    const r = run(['volume', 'revert', ...vol, '--snapshot', SNAP]);
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
    expect(r.loaded.filter((m) => /fs\/promises/.test(m))).not.toEqual([]);
  });
});
