// The seed's step 4 from the command line: `cowchain snapshot create|delete --status in-use
// --nova-endpoint … --status-listen …` against the loopback Nova over real HTTP. Each command
// serves the status endpoint for as long as it runs; the loopback Nova reports there, as a real
// Nova reports to the Cinder endpoint it is configured with.
import * as fs from 'node:fs';
import { createServer } from 'node:net';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NOVA_TOKEN_ENV, STATUS_TOKEN_ENV } from '../../src/cli/nova-tokens.js';
import { LoopbackNova } from '../../src/nova/loopback.js';
import { readInfo } from '../../src/volume/info-file.js';
import { cli, fails, ok } from '../support/cli.js';
import { freePort } from '../support/net.js';
import { expectClean, requireQemu, tmpDir } from '../support/qemu.js';

requireQemu();

const VOL = '1234abcd-0000-4000-8000-000000000002';
const AAAA = 'aaaaaaaa-0000-4000-8000-00000000000a';
const BBBB = 'bbbbbbbb-0000-4000-8000-00000000000b';
const SIZE = 4 << 20;
const base = `volume-${VOL}`;
const fileA = `${base}.${AAAA}`;
const fileB = `${base}.${BBBB}`;

let dir: string;
let nova: LoopbackNova;
let endpoint: string;
let listen: string;
const savedEnv = { nova: process.env[NOVA_TOKEN_ENV], status: process.env[STATUS_TOKEN_ENV] };

beforeEach(async () => {
  dir = tmpDir('cowchain-cli-inuse-');
  const port = await freePort();
  listen = `127.0.0.1:${port}`;
  nova = new LoopbackNova({ token: 'nova-secret', statusUrl: `http://${listen}/v3/project`, statusToken: 'cinder-secret', stepBytes: 256 << 10 });
  endpoint = await nova.start();
  process.env[NOVA_TOKEN_ENV] = 'nova-secret';
  process.env[STATUS_TOKEN_ENV] = 'cinder-secret';
});

afterEach(async () => {
  await nova.stop();
  for (const [k, v] of [[NOVA_TOKEN_ENV, savedEnv.nova], [STATUS_TOKEN_ENV, savedEnv.status]] as const) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
});

describe('cowchain snapshot … --status in-use, through Nova', () => {
  it('runs the seed step 4: info file and chain as drawn, every guest write kept, the status endpoint closed after each command', async () => {
    const at = ['--dir', dir, '--volume', VOL];
    const viaNova = ['--status', 'in-use', '--nova-endpoint', endpoint, '--status-listen', listen];
    await ok('volume', 'create', ...at, '--size', String(SIZE));
    const guest = await nova.attach(VOL, dir);
    for (let i = 0; i < 5; i++) guest.write();

    expect(await ok('snapshot', 'create', ...at, '--snapshot', AAAA, ...viaNova)).toBe(`snapshot ${AAAA}: ${fileA} (on ${base}) is the active file\n`);
    expect(await readInfo(dir, VOL)).toEqual({ active: fileA, [AAAA]: fileA });
    expect(guest.chainNames()).toEqual([fileA, base]);
    for (let i = 0; i < 7; i++) guest.write();

    await ok('snapshot', 'create', ...at, '--snapshot', BBBB, ...viaNova);
    expect(await readInfo(dir, VOL)).toEqual({ active: fileB, [AAAA]: fileA, [BBBB]: fileB });
    expect(guest.chainNames()).toEqual([fileB, fileA, base]);
    for (let i = 0; i < 9; i++) guest.write();

    // aaaa: Nova commits .aaaa into the base (blockCommit); bbbb: it pulls the base into .bbbb.
    await ok('snapshot', 'delete', ...at, '--snapshot', AAAA, ...viaNova);
    expect(await readInfo(dir, VOL)).toEqual({ active: fileB, [BBBB]: fileB });
    expect(guest.chainNames()).toEqual([fileB, base]);
    expect(fs.existsSync(path.join(dir, fileA))).toBe(false);
    const deleted = JSON.parse(await ok('snapshot', 'delete', ...at, '--snapshot', BBBB, ...viaNova, '--output', 'json'));
    expect(deleted).toMatchObject({ snapshotId: BBBB, outcome: 'deleted', removed: [base] });
    expect(await readInfo(dir, VOL)).toEqual({ active: fileB });
    expect(guest.chainNames()).toEqual([fileB]);

    await nova.idle();
    for (const w of guest.expected()) expect(guest.image.read(w.offset, w.length).every((b) => b === w.pattern), `guest write at ${w.offset}`).toBe(true);
    await nova.detach(VOL);
    expectClean(path.join(dir, fileB));
    // Each command closed its status endpoint: the port is free again.
    const [host, port] = listen.split(':');
    const probe = createServer();
    await new Promise<void>((resolve, reject) => probe.once('error', reject).listen(Number(port), host, resolve));
    await new Promise((r) => probe.close(r));
  });

  it('refuses incomplete or bad Nova options before touching the volume', async () => {
    const at = ['--dir', dir, '--volume', VOL];
    await ok('volume', 'create', ...at, '--size', String(SIZE));
    const before = fs.readdirSync(dir);
    expect(await fails('ECOW_BAD_ARGUMENT', 'snapshot', 'create', ...at, '--snapshot', AAAA, '--status', 'in-use', '--nova-endpoint', endpoint)).toContain('--status-listen');
    expect(await fails('ECOW_BAD_ARGUMENT', 'snapshot', 'create', ...at, '--snapshot', AAAA, '--status', 'in-use', '--nova-endpoint', endpoint, '--status-listen', 'nowhere')).toContain('HOST:PORT');
    expect(await fails('ECOW_BAD_ARGUMENT', 'snapshot', 'create', ...at, '--snapshot', AAAA, '--status', 'in-use', '--nova-endpoint', 'ftp://x', '--status-listen', listen)).toContain('ftp://x');
    delete process.env[NOVA_TOKEN_ENV];
    expect(await fails('ECOW_BAD_ARGUMENT', 'snapshot', 'delete', ...at, '--snapshot', AAAA, '--status', 'in-use', '--nova-endpoint', endpoint, '--status-listen', listen)).toContain(NOVA_TOKEN_ENV);
    process.env[NOVA_TOKEN_ENV] = 'nova-secret';
    delete process.env[STATUS_TOKEN_ENV];
    expect(await fails('ECOW_BAD_ARGUMENT', 'snapshot', 'create', ...at, '--snapshot', AAAA, '--status', 'in-use', '--nova-endpoint', endpoint, '--status-listen', listen)).toContain(STATUS_TOKEN_ENV);
    // Without Nova options an in-use operation has no hypervisor; --status defaults to available.
    await fails('ECOW_HYPERVISOR_UNAVAILABLE', 'snapshot', 'create', ...at, '--snapshot', AAAA, '--status', 'in-use');
    expect(fs.readdirSync(dir)).toEqual(before);
    await ok('snapshot', 'create', ...at, '--snapshot', AAAA);
    expect(await readInfo(dir, VOL)).toEqual({ active: fileA, [AAAA]: fileA });
    const r = await cli('snapshot', 'delete', ...at, '--snapshot', AAAA);
    expect(r.status).toBe(0);
    expect(await readInfo(dir, VOL)).toEqual({ active: base });
  });
});
