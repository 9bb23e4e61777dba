// Credentials for etcd come from the environment only (COWCHAIN_ETCD_USERNAME /
// COWCHAIN_ETCD_PASSWORD): with authentication enabled on the live cluster, a CLI command without
// them is refused at once with one coded line and changes nothing; with them it works. The test
// enables authentication for its own duration (etcdctl) and always disables it again.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { runProcess } from '../support/child.js';
import { CLI_MAIN, expectCliFailure } from '../support/cli.js';
import { requireQemu, tmpDir } from '../support/qemu.js';
import { VOL } from '../support/volume.js';
import { etcdEndpoints, etcdUrl } from './support.js';

requireQemu();

async function etcdctl(...args: string[]): Promise<void> {
  const r = await runProcess('etcdctl', ['--endpoints', etcdEndpoints().join(','), ...args], { env: { ...process.env, ETCDCTL_API: '3' }, timeoutMs: 60_000 });
  if (r.status !== 0) throw new Error(`etcdctl ${args.join(' ')}: ${r.stderr}`);
}

describe('etcd credentials from the environment', () => {
  it('authentication on: without COWCHAIN_ETCD_USERNAME refused in one line, nothing changed; with it, the command runs', async () => {
    const password = randomBytes(9).toString('hex');
    const dir = tmpDir('cowchain-etcd-auth-');
    const url = etcdUrl();
    const create = ['volume', 'create', '--dir', dir, '--volume', VOL, '--size', '1M'];
    await etcdctl('user', 'add', `root:${password}`);
    try {
      await etcdctl('role', 'add', 'root');
      await etcdctl('user', 'grant-role', 'root', 'root');
      await etcdctl('auth', 'enable');
      try {
        const t0 = performance.now();
        const refused = await runProcess(process.execPath, [CLI_MAIN, ...create], { env: { ...process.env, COWCHAIN_COORDINATION: url }, timeoutMs: 120_000 });
        const message = expectCliFailure({ status: refused.status ?? -1, stdout: refused.stdout, stderr: refused.stderr }, 'ECOW_COORDINATION_UNAVAILABLE', 'without credentials');
        expect(message).toContain('refused the request');
        expect(performance.now() - t0).toBeLessThan(10_000);
        expect(fs.readdirSync(dir)).toEqual([]);

        const wrong = await runProcess(process.execPath, [CLI_MAIN, ...create], { env: { ...process.env, COWCHAIN_COORDINATION: url, COWCHAIN_ETCD_USERNAME: 'root', COWCHAIN_ETCD_PASSWORD: 'not-it' }, timeoutMs: 120_000 });
        expectCliFailure({ status: wrong.status ?? -1, stdout: wrong.stdout, stderr: wrong.stderr }, 'ECOW_COORDINATION_UNAVAILABLE', 'wrong password');
        expect(wrong.stderr).not.toContain('not-it');
        expect(fs.readdirSync(dir)).toEqual([]);

        const ok = await runProcess(process.execPath, [CLI_MAIN, ...create], { env: { ...process.env, COWCHAIN_COORDINATION: url, COWCHAIN_ETCD_USERNAME: 'root', COWCHAIN_ETCD_PASSWORD: password }, timeoutMs: 120_000 });
        expect({ status: ok.status, stderr: ok.stderr }).toEqual({ status: 0, stderr: '' });
      } finally {
        await etcdctl('--user', `root:${password}`, 'auth', 'disable');
      }
    } finally {
      await etcdctl('user', 'delete', 'root');
      await etcdctl('role', 'delete', 'root').catch(() => {});
    }
  });
});
