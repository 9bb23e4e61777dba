import * as fs from 'node:fs';
import { CowError } from '../errors.js';

/**
 * A file `npm run build` writes into the package's build/ (the zstd coder modules), read
 * synchronously: they load on first use, inside a host import the engine calls. A missing or
 * unreadable file is ECOW_ENGINE_LOAD naming it, never a bare ENOENT.
 */
export function readBuildFile(name: string, what: string): Buffer {
  const url = new URL(`../../build/${name}`, import.meta.url);
  try {
    return fs.readFileSync(url);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new CowError('ECOW_ENGINE_LOAD', `cannot read the ${what} ${url.href}: ${err.code ?? err.message} (npm run build writes it)`, { cause: e });
  }
}
