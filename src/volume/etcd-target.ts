/**
 * Where the etcd coordinator connects: `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]`, the syntax of
 * the CLI's `--coordination` and of `COWCHAIN_COORDINATION`. Credentials never come from the
 * URL (argv is visible to every user of the host): `COWCHAIN_ETCD_USERNAME` and
 * `COWCHAIN_ETCD_PASSWORD` from the environment.
 */
import * as z from 'zod';
import { CowError } from '../errors.js';
import { lazy } from '../lazy.js';
import { describeIssues } from './info-file.js';

export interface EtcdTarget {
  /** `host:port` of each member. */
  hosts: string[];
  /** Key prefix of every lock (default `cowchain`). */
  prefix: string;
  auth?: { username: string; password: string };
}

const Part = '[A-Za-z0-9_-][A-Za-z0-9._-]*';

/** Built at first use (lazy.ts): only a command given an etcd:// URL parses one. */
const schemas = lazy(() => {
  const Port = z.coerce.number().int().min(1).max(65535);
  /** A host name, an IPv4 address or a bracketed IPv6 address, then a port. */
  const HostPort = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):[0-9]{1,5}$/, 'HOST:PORT').refine((s) => Port.safeParse(s.slice(s.lastIndexOf(':') + 1)).success, 'port 1–65535');
  return {
    hosts: z.array(HostPort).min(1),
    prefix: z.string().regex(new RegExp(`^${Part}(/${Part})*$`), 'parts of letters, digits, . _ - (not starting with .) between /'),
    credentials: z.strictObject({ username: z.string().min(1), password: z.string() }),
  };
});

/** Parse an `etcd://` coordination URL (ECOW_BAD_ARGUMENT naming `what` and the value). */
export function parseEtcdUrl(url: string, what: string, env: NodeJS.ProcessEnv = process.env): EtcdTarget {
  const bad = (why: string): never => {
    throw new CowError('ECOW_BAD_ARGUMENT', `${what} "${url}" is not etcd://HOST:PORT[,HOST:PORT…][/PREFIX]: ${why}`);
  };
  const m = /^etcd:\/\/([^/]*)(?:\/(.*))?$/.exec(url);
  if (!m) return bad('it must start with etcd://');
  if (/@/.test(m[1])) return bad('credentials go in COWCHAIN_ETCD_USERNAME / COWCHAIN_ETCD_PASSWORD, never in the URL');
  const hosts = schemas().hosts.safeParse(m[1].split(','));
  if (!hosts.success) return bad(describeIssues(hosts.error));
  const prefix = schemas().prefix.safeParse(m[2] ?? 'cowchain');
  if (!prefix.success) return bad(`prefix: ${describeIssues(prefix.error)}`);
  const user = env.COWCHAIN_ETCD_USERNAME;
  let auth: EtcdTarget['auth'];
  if (user !== undefined) {
    const creds = schemas().credentials.safeParse({ username: user, password: env.COWCHAIN_ETCD_PASSWORD ?? '' });
    if (!creds.success) throw new CowError('ECOW_BAD_ARGUMENT', `COWCHAIN_ETCD_USERNAME: ${describeIssues(creds.error)}`);
    auth = creds.data;
  }
  return { hosts: hosts.data, prefix: prefix.data, auth };
}
