#!/usr/bin/env node
// The `cowchain` bin: `npm run build` copies this file to dist/cli/main.js (scripts/build-cli.mjs).
// The command line's code is one CommonJS bundle beside it, cli.js, compiled here with a V8 code
// cache that the build made by running short commands once (cli-volume-info.cache for volume
// info, cli-volume.cache for the other volume and snapshot commands, cli.cache for the rest): V8 then deserializes the
// bytecode of what those commands run instead of parsing and compiling it at every start. A cache
// that this Node (V8 version, flags) cannot use is rejected by V8 and the bundle is compiled from
// its source, as without one. CommonJS (dist/cli/package.json says so) because an ES module entry
// costs a start the ESM loader, and Node 20 has no code cache for ES modules.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const { createRequire } = require('node:module');

const BUNDLE = path.join(__dirname, 'cli.js');
/**
 * volume info has a cache of its own, the other volume and snapshot commands one together, the
 * rest another: a cache of more commands costs a start more to deserialize (scripts/build-cli.mjs).
 */
function cacheName(argv) {
  if (require.main !== module) return 'cli.cache'; // loaded by the build or a test
  const [group = '', command = ''] = argv;
  if (group === 'volume' && command === 'info') return 'cli-volume-info.cache';
  return group === 'volume' || group === 'snapshot' ? 'cli-volume.cache' : 'cli.cache';
}
const CACHE = path.join(__dirname, cacheName(process.argv.slice(2)));

function readCache() {
  try {
    return fs.readFileSync(CACHE);
  } catch {
    return undefined; // not built (or removed): compiled from the source
  }
}

// The bundle is a function expression, `(function (exports, require, module, __filename,
// __dirname) {…})`, as Node wraps a CommonJS module; esbuild writes it ASCII-only, so latin1 reads it.
const script = new vm.Script(fs.readFileSync(BUNDLE, 'latin1'), { filename: BUNDLE, cachedData: readCache() });
const bundle = { exports: {} };
script.runInThisContext()(bundle.exports, createRequire(BUNDLE), bundle, BUNDLE, __dirname);

/** `main(argv)` and `buildProgram(argv?)` of src/cli/main.ts. */
exports.main = bundle.exports.main;
exports.buildProgram = bundle.exports.buildProgram;
/** For the build: the code cache of the bundle with every function compiled so far. */
exports.createCodeCache = () => script.createCachedData();
/** true when V8 refused the cache (another Node, other V8 flags); undefined when there was none. */
exports.codeCacheRejected = script.cachedDataRejected;

if (require.main === module) bundle.exports.runAsBin(process.argv.slice(2));
