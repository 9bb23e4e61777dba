#!/usr/bin/env node
// The `cowchain` bin: `npm run build` copies this file to dist/cli/main.js (scripts/build-cli.mjs).
// The command line's code is one CommonJS bundle beside it, cli.js, compiled here with a V8 code
// cache that the build made by running short commands once (cli-volume.cache for the volume and
// snapshot commands, cli.cache for the others): V8 then deserializes the bytecode of what those
// commands run instead of parsing and compiling it at every start. A cache
// that this Node (V8 version, flags) cannot use is rejected by V8 and the bundle is compiled from
// its source, as without one. CommonJS (dist/cli/package.json says so) because an ES module entry
// costs a start the ESM loader, and Node 20 has no code cache for ES modules.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const { createRequire } = require('node:module');

const BUNDLE = path.join(__dirname, 'cli.js');
/** The volume and snapshot commands have a cache of their own: one of every command costs a start more to deserialize. */
const CACHE = path.join(__dirname, require.main === module && /^(volume|snapshot)$/.test(process.argv[2] ?? '') ? 'cli-volume.cache' : 'cli.cache');

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
/** true when V8 refused cli.cache (another Node, other V8 flags); undefined when there was none. */
exports.codeCacheRejected = script.cachedDataRejected;

if (require.main === module) bundle.exports.runAsBin(process.argv.slice(2));
