// The command line's path to Nova for attached (`--status in-use`) volumes: `--nova-endpoint`
// (Nova's compute API) and `--status-listen` (where this process serves Cinder's
// `os-update_snapshot_status` for Nova's progress reports while the command runs); the options
// are declared in volume-commands.ts.
import * as z from 'zod';
import { CowError } from '../errors.js';
import { lazy } from '../lazy.js';
import type { StatusServer } from '../nova/status-endpoint.js';
import type { Hypervisor } from '../volume/hypervisor.js';
import { NOVA_TOKEN_ENV, STATUS_TOKEN_ENV } from './nova-tokens.js';
import { writeStderr } from './write.js';

export interface NovaCliOptions {
  novaEndpoint?: string;
  statusListen?: string;
  novaCreateTimeout?: string;
  novaDeleteTimeout?: string;
}

/** Seconds (decimal, > 0) as milliseconds; undefined keeps Cinder's default. */
function timeoutMs(text: string | undefined, option: string): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+(\.\d+)?$/.test(text) || !(Number(text) > 0)) {
    throw new CowError('ECOW_BAD_ARGUMENT', `${option} ${JSON.stringify(text)}: expected a number of seconds above 0`);
  }
  return Math.round(Number(text) * 1000);
}

/** Built at first use (lazy.ts): only a command given --status-listen parses it. */
const listenSchema = lazy(() =>
  z
    .string()
    .regex(/^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]+):(\d{1,5})$/, 'HOST:PORT (an IPv6 host in brackets)')
    .transform((s) => {
      const at = s.lastIndexOf(':');
      return { host: s.slice(0, at).replace(/^\[(.*)\]$/, '$1'), port: Number(s.slice(at + 1)) };
    })
    .refine((l) => l.port <= 65535, 'a port from 0 to 65535'),
);

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
  const listen = listenSchema().safeParse(o.statusListen);
  if (!listen.success) throw new CowError('ECOW_BAD_ARGUMENT', `--status-listen ${JSON.stringify(o.statusListen)}: expected ${listen.error.issues[0].message}`);
  // The Nova client and the status endpoint load only for a command that talks to Nova.
  const [{ NovaClient }, { NovaHypervisor }, { startStatusServer }, { SnapshotStatusStore }] = await Promise.all([
    import('../nova/client.js'),
    import('../nova/hypervisor.js'),
    import('../nova/status-endpoint.js'),
    import('../nova/status-store.js'),
  ]);
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
      onRejected: (r) => writeStderr(`cowchain: warning: refused a status report: ${r.method} ${r.url}: HTTP ${r.httpStatus} ${r.message}\n`),
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
