// The command line's path to Nova for attached (`--status in-use`) volumes: `--nova-endpoint`
// (Nova's compute API) and `--status-listen` (where this process serves Cinder's
// `os-update_snapshot_status` for Nova's progress reports while the command runs). Tokens come
// from the environment, never from the command line, where `ps` would show them.
import type { Command } from 'commander';
import { z } from 'zod';
import { CowError } from '../errors.js';
import { NovaClient } from '../nova/client.js';
import { NovaHypervisor } from '../nova/hypervisor.js';
import { startStatusServer, type StatusServer } from '../nova/status-endpoint.js';
import { SnapshotStatusStore } from '../nova/status-store.js';
import type { Hypervisor } from '../volume/hypervisor.js';

export const NOVA_TOKEN_ENV = 'COWCHAIN_NOVA_TOKEN';
export const STATUS_TOKEN_ENV = 'COWCHAIN_STATUS_TOKEN';

export interface NovaCliOptions {
  novaEndpoint?: string;
  statusListen?: string;
  novaCreateTimeout?: string;
  novaDeleteTimeout?: string;
}

/** Add the Nova options to a command that may act on an attached volume. */
export function novaOptions(cmd: Command): Command {
  return cmd
    .option('--nova-endpoint <url>', `Nova's compute endpoint, for in-use volumes (token: $${NOVA_TOKEN_ENV})`)
    .option(
      '--status-listen <host:port>',
      `serve Cinder's os-update_snapshot_status here while the command runs; Nova's Cinder endpoint must point at it (token Nova sends: $${STATUS_TOKEN_ENV})`,
    )
    .option('--nova-create-timeout <seconds>', "how long to wait for Nova's report on a snapshot create (Cinder: 600)")
    .option('--nova-delete-timeout <seconds>', "how long to wait for Nova's report on a snapshot delete (Cinder: 7200)");
}

/** Seconds (decimal, > 0) as milliseconds; undefined keeps Cinder's default. */
function timeoutMs(text: string | undefined, option: string): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+(\.\d+)?$/.test(text) || !(Number(text) > 0)) {
    throw new CowError('ECOW_BAD_ARGUMENT', `${option} ${JSON.stringify(text)}: expected a number of seconds above 0`);
  }
  return Math.round(Number(text) * 1000);
}

const listenSchema = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]+):(\d{1,5})$/, 'HOST:PORT (an IPv6 host in brackets)')
  .transform((s) => {
    const at = s.lastIndexOf(':');
    return { host: s.slice(0, at).replace(/^\[(.*)\]$/, '$1'), port: Number(s.slice(at + 1)) };
  })
  .refine((l) => l.port <= 65535, 'a port from 0 to 65535');

function tokenFrom(env: string, what: string): string {
  const token = process.env[env];
  if (!token) throw new CowError('ECOW_BAD_ARGUMENT', `${what} needs a token in $${env}, which is not set`);
  return token;
}

/**
 * Run `fn` with the hypervisor the options describe (none without `--nova-endpoint`): the status
 * endpoint listens for exactly as long as `fn` runs.
 */
export async function withHypervisor<T>(o: NovaCliOptions, fn: (hypervisor: Hypervisor | undefined) => Promise<T>): Promise<T> {
  const createTimeoutMs = timeoutMs(o.novaCreateTimeout, '--nova-create-timeout');
  const deleteTimeoutMs = timeoutMs(o.novaDeleteTimeout, '--nova-delete-timeout');
  if (o.novaEndpoint === undefined && o.statusListen === undefined) return fn(undefined);
  if (o.novaEndpoint === undefined || o.statusListen === undefined) {
    throw new CowError('ECOW_BAD_ARGUMENT', '--nova-endpoint and --status-listen go together: Nova is asked to act, then reports its progress to the status endpoint');
  }
  const listen = listenSchema.safeParse(o.statusListen);
  if (!listen.success) throw new CowError('ECOW_BAD_ARGUMENT', `--status-listen ${JSON.stringify(o.statusListen)}: expected ${listen.error.issues[0].message}`);
  const client = new NovaClient({ endpoint: o.novaEndpoint, token: tokenFrom(NOVA_TOKEN_ENV, '--nova-endpoint') }); // validates the URL
  const store = new SnapshotStatusStore();
  let server: StatusServer;
  try {
    server = await startStatusServer({
      store,
      token: tokenFrom(STATUS_TOKEN_ENV, '--status-listen'),
      host: listen.data.host,
      port: listen.data.port,
      // The waiting command fails with ECOW_STATUS_REJECTED too; this line says what came in.
      onRejected: (r) => process.stderr.write(`cowchain: warning: refused a status report: ${r.method} ${r.url}: HTTP ${r.httpStatus} ${r.message}\n`),
    });
  } catch (e) {
    if (e instanceof CowError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new CowError('ECOW_IO', `--status-listen ${o.statusListen}: cannot listen (${code ?? String(e)})`, { cause: e });
  }
  try {
    return await fn(new NovaHypervisor({ client, store, createTimeoutMs, deleteTimeoutMs }));
  } finally {
    await server.close();
  }
}
