// `--coordination` / COWCHAIN_COORDINATION: which lock keeps the volume commands of several
// processes and hosts apart. `share` (the default) is the lease directory on the share;
// `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]` is an etcd cluster (src/volume/etcd-lock.ts), with
// credentials from COWCHAIN_ETCD_USERNAME / COWCHAIN_ETCD_PASSWORD, never argv. An etcd that
// cannot be reached fails the command (ECOW_COORDINATION_UNAVAILABLE); there is no fallback.
import { CowError } from '../errors.js';
import type { VolumeCoordinator } from '../volume/coordination.js';
import { etcdCoordinator } from '../volume/etcd-lock.js';
import { parseEtcdUrl } from '../volume/etcd-target.js';
import { shareLease } from '../volume/lock.js';

import { COORDINATION_ENV } from './coordination-help.js';

export { COORDINATION_ENV, COORDINATION_HELP } from './coordination-help.js';

/** The coordinator `--coordination` (or else the environment) names; the caller closes it. */
export function coordinationFrom(option: string | undefined, env: NodeJS.ProcessEnv = process.env): VolumeCoordinator {
  const fromEnv = option === undefined;
  const spec = option ?? env[COORDINATION_ENV];
  const what = fromEnv ? COORDINATION_ENV : '--coordination';
  if (spec === undefined || spec === 'share') return shareLease();
  if (spec.startsWith('etcd://')) return etcdCoordinator(parseEtcdUrl(spec, what, env));
  throw new CowError('ECOW_BAD_ARGUMENT', `${what} must be share or etcd://HOST:PORT[,HOST:PORT…][/PREFIX], not "${spec}"`);
}
