// The built bin (dist/cli/main.js) compiles its bundle with a V8 code cache `npm run build` made
// (scripts/build-cli.mjs; cli-volume-info.cache for volume info, cli-volume.cache for the other
// volume and snapshot commands, cli.cache for the rest): this Node accepts them, and a cache V8 refuses (another Node, other flags, a damaged
// file) or a missing one changes nothing but the start-up time.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from '../support/bundle.js';
import { CLI_MAIN, cliProcess } from '../support/cli.js';

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'cowchain-code-cache-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

/** What the bin said of its cache when loaded by `node` with these arguments before it. */
function rejected(main: string, nodeArgs: string[] = []): string {
  const r = spawnSync(process.execPath, [...nodeArgs, '-e', `process.stdout.write(String(require(${JSON.stringify(main)}).codeCacheRejected))`], { encoding: 'utf8' });
  expect(r.stderr).toBe('');
  return r.stdout;
}

/** A copy of the built bin in `scratch/NAME/dist/cli` (build/ and package.json linked), with `cache` as its cli.cache. */
function copyOfBin(name: string, cache: Buffer | undefined): string {
  const home = path.join(scratch, name);
  fs.mkdirSync(path.join(home, 'dist/cli'), { recursive: true });
  for (const f of ['main.js', 'cli.js', 'package.json']) fs.copyFileSync(path.join(ROOT, 'dist/cli', f), path.join(home, 'dist/cli', f));
  if (cache) fs.writeFileSync(path.join(home, 'dist/cli/cli.cache'), cache);
  for (const f of ['build', 'node_modules', 'package.json']) fs.symlinkSync(path.join(ROOT, f), path.join(home, f));
  return path.join(home, 'dist/cli/main.js');
}

describe('the CLI code cache', () => {
  it('is accepted by the Node that built it, and refused under other V8 flags', () => {
    expect(rejected(CLI_MAIN)).toBe('false');
    expect(rejected(CLI_MAIN, ['--max-semi-space-size=4'])).toBe('true');
    // every other command's cache, in the place of the one a loaded bin reads
    const caches = fs.readdirSync(path.join(ROOT, 'dist/cli')).filter((f) => f.endsWith('.cache'));
    expect(caches.sort()).toEqual(['cli-volume-info.cache', 'cli-volume.cache', 'cli.cache']);
    for (const cache of caches.filter((f) => f !== 'cli.cache')) {
      expect(rejected(copyOfBin(cache, fs.readFileSync(path.join(ROOT, 'dist/cli', cache)))), cache).toBe('false');
    }
  });

  it('refused or missing, the bin compiles its bundle and behaves the same', () => {
    const image = path.join(scratch, 'a.qcow2');
    expect(cliProcess(['img', 'create', '-q', '-f', 'qcow2', image, '1M']).status).toBe(0);
    const args = ['img', 'info', '--output', 'json', image];
    const expected = cliProcess(args);
    expect(expected.status).toBe(0);
    const damaged = copyOfBin('damaged', fs.readFileSync(path.join(ROOT, 'dist/cli/cli.cache')).subarray(0, 4096));
    const missing = copyOfBin('missing', undefined);
    expect(rejected(damaged)).toBe('true');
    expect(rejected(missing)).toBe('undefined');
    for (const bin of [damaged, missing]) {
      const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });
      expect({ status: r.status, stdout: r.stdout, stderr: r.stderr }).toEqual(expected);
    }
  });
});
