// Every file in examples/ runs here, as a user runs it: the Node ones transpiled and run in a
// scratch project where `cowchain` resolves to this checkout through package.json's exports;
// examples/deno.ts under Deno from the checkout, offline (a fresh, empty DENO_DIR and
// --cached-only) and with no permissions at all (the engine's bytes come on stdin). The HTTP
// service runs as a process against a loopback Nova: volumes and snapshots through its routes,
// detached and attached, then SIGTERM. (The same Deno example from the packed tarball: pack.test.ts.)
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from '../support/bundle.js';
import { runProcess } from '../support/child.js';
import { consumerProject, explain, runTs, transpile } from '../support/consumer-code.js';
import { findDeno } from '../support/deno.js';
import { freePort } from '../support/net.js';
import { LoopbackNova } from '../../src/testing/index.js';

const EXAMPLES = path.join(ROOT, 'examples');
const project = consumerProject('cowchain-examples-', ['zod']);
afterAll(() => project.remove());
for (const f of fs.readdirSync(EXAMPLES)) fs.copyFileSync(path.join(EXAMPLES, f), path.join(project.dir, f));

describe('examples/', () => {
  it('holds the four examples this file runs, and nothing else', () => {
    expect(fs.readdirSync(EXAMPLES).sort()).toEqual(['deno.ts', 'driver-quick-start.ts', 'http-service.ts', 'in-memory.ts']);
  });

  it('driver-quick-start.ts: a volume, four snapshots deleted out of order, contents checked', async () => {
    const r = await runTs(project, 'driver-quick-start.ts');
    expect(r.status, explain(r)).toBe(0);
    expect(r.stdout).toContain('refused: ECOW_BAD_ARGUMENT');
    expect(r.stdout).toMatch(/quick start: done\n$/);
  });

  it('in-memory.ts: a two-image chain on MemoryBackend', async () => {
    const r = await runTs(project, 'in-memory.ts');
    expect(r.status, explain(r)).toBe(0);
    expect(r.stdout).toMatch(/in memory: done/);
  });

  it('deno.ts: Deno from the checkout, offline, without any permission', async () => {
    const deno = findDeno();
    expect(deno.cmd, `no Deno (tried ${deno.tried.join(', ')})`).not.toBeNull();
    const denoDir = fs.mkdtempSync(path.join(os.tmpdir(), 'cowchain-deno-dir-'));
    try {
      const r = await runProcess(deno.cmd!.file, [...deno.cmd!.prefix, 'run', '--no-prompt', '--no-lock', '--cached-only', 'examples/deno.ts'], {
        cwd: ROOT,
        env: { ...process.env, DENO_DIR: denoDir, NO_COLOR: '1' },
        stdinFile: path.join(ROOT, 'build/cowchain.wasm'),
        timeoutMs: 600_000,
      });
      expect(r.status, explain(r)).toBe(0);
      expect(r.stdout).toContain('deno: written under Deno');
    } finally {
      fs.rmSync(denoDir, { recursive: true, force: true });
    }
  });

  it('http-service.ts: volumes and snapshots through HTTP, detached and attached (loopback Nova), clean stop', async () => {
    const volumes = path.join(project.dir, 'share');
    fs.mkdirSync(volumes);
    const statusPort = await freePort();
    const nova = new LoopbackNova({ token: 'nova-token', statusUrl: `http://127.0.0.1:${statusPort}/v3/project`, statusToken: 'status-token', stepBytes: 1 << 20 });
    const endpoint = await nova.start();
    const service = spawn(process.execPath, [transpile(project, 'http-service.ts')], {
      cwd: project.dir,
      env: { ...process.env, VOLUME_DIR: volumes, LISTEN: '127.0.0.1:0', STATUS_LISTEN: `127.0.0.1:${statusPort}`, NOVA_ENDPOINT: endpoint, NOVA_TOKEN: 'nova-token', STATUS_TOKEN: 'status-token' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    service.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    service.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => service.on('close', (code) => resolve(code)));
    const guard = setTimeout(() => service.kill('SIGKILL'), 600_000);
    try {
      const base = await new Promise<string>((resolve, reject) => {
        const look = () => {
          const m = /listening on (http:\/\/\S+?)[;\s]/.exec(stdout);
          if (m) resolve(m[1]);
        };
        service.stdout.on('data', look);
        void exited.then((code) => reject(new Error(`the service exited ${code} before listening\n${stdout}\n${stderr}`)));
      });
      const call = async (method: string, url: string, body?: unknown) => {
        const res = await fetch(`${base}${url}`, { method, body: body === undefined ? undefined : JSON.stringify(body) });
        return { status: res.status, json: (await res.json()) as Record<string, unknown> };
      };
      const vol = '7d0c1e2f-3a4b-4c5d-8e6f-000000000001';
      const [s1, s2] = ['7d0c1e2f-0000-4000-8000-000000000011', '7d0c1e2f-0000-4000-8000-000000000012'];
      expect((await call('PUT', `/volumes/${vol}`, { size: '16M', format: 'qcow2' })).status).toBe(201);
      expect(await call('PUT', '/volumes/not-a-uuid', { size: '16M' })).toMatchObject({ status: 400 });
      expect(await call('PUT', `/volumes/${vol}`, { size: 'lots' })).toMatchObject({ status: 400, json: { code: 'ECOW_BAD_ARGUMENT' } });
      // Detached: the service's own engine (in its worker pool).
      expect((await call('PUT', `/volumes/${vol}/snapshots/${s1}`, { status: 'available' })).status).toBe(201);
      expect(await call('DELETE', `/volumes/${vol}/snapshots/${s1}`, { status: 'available' })).toMatchObject({ status: 200, json: { outcome: 'deleted' } });
      // Attached: Nova moves the guest and merges; it reports to the service's status endpoint.
      const guest = await nova.attach(vol, volumes);
      const created = await call('PUT', `/volumes/${vol}/snapshots/${s2}`, { status: 'in-use' });
      expect(created.status, JSON.stringify(created.json)).toBe(201);
      expect(guest.activeName()).toBe(created.json.file);
      const deleted = await call('DELETE', `/volumes/${vol}/snapshots/${s2}`, { status: 'in-use' });
      expect(deleted, JSON.stringify(deleted.json)).toMatchObject({ status: 200, json: { outcome: 'deleted' } });
      const info = await call('GET', `/volumes/${vol}`);
      expect(info.json.snapshots).toEqual({});
      expect(info.json.active).toBe(guest.activeName());
      await nova.detach(vol);
      expect((await call('DELETE', `/volumes/${vol}`)).status).toBe(200);
      expect(fs.readdirSync(volumes).filter((f) => f.includes(vol))).toEqual([]);
      service.kill('SIGTERM');
      expect(await exited, stderr).toBe(0);
      expect(stdout).toMatch(/stopped\n$/);
    } finally {
      clearTimeout(guard);
      if (service.exitCode === null) service.kill('SIGKILL');
      await nova.stop();
    }
  });
});
