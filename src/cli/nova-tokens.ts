// Where the Nova path's tokens come from: the environment, never the command line, where `ps`
// would show them.
export const NOVA_TOKEN_ENV = 'COWCHAIN_NOVA_TOKEN';
export const STATUS_TOKEN_ENV = 'COWCHAIN_STATUS_TOKEN';
