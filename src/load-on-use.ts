// Modules that only some operations need, loaded by the first one that does: node:crypto (LUKS,
// temporary names), node:zlib and pako (compressed clusters). Loading them at start-up costs a
// short CLI command (`img info`, `volume info`) more than its own work.
import { createRequire } from 'node:module';
import { lazy } from './lazy.js';

const requireOnUse = createRequire(import.meta.url);

export const nodeCrypto = lazy(() => requireOnUse('node:crypto') as typeof import('node:crypto'));
export const nodeZlib = lazy(() => requireOnUse('node:zlib') as typeof import('node:zlib'));
export const pako = lazy(() => requireOnUse('pako') as typeof import('pako'));
