// The `--coordination` option's name in the environment and its help (coordination-option.ts
// makes the coordinator): apart, so that declaring the option loads no lock code.
export const COORDINATION_ENV = 'COWCHAIN_COORDINATION';

export const COORDINATION_HELP =
  `share (default: a lease directory on the share) or etcd://HOST:PORT[,HOST:PORT…][/PREFIX] (several hosts; credentials from COWCHAIN_ETCD_USERNAME / COWCHAIN_ETCD_PASSWORD); default: $${COORDINATION_ENV}`;
