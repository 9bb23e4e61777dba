// The Deno binary of the `deno` devDependency. It ships in a per-platform package
// (@deno/linux-x64-glibc, @deno/darwin-arm64, …). Its postinstall (which would copy the binary
// to node_modules/deno/deno) may not run — npm 11 holds back install scripts that were not
// approved — so the platform package's binary is tried first, then node_modules/deno/deno and
// last `node node_modules/deno/bin.cjs` (which installs on first use).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ROOT } from './bundle.js';

const EXE = process.platform === 'win32' ? 'deno.exe' : 'deno';

export interface DenoCommand {
  file: string;
  prefix: string[];
  how: string;
}

function works(cmd: DenoCommand): string | null {
  const r = spawnSync(cmd.file, [...cmd.prefix, '--version'], { encoding: 'utf8', timeout: 30_000 });
  return r.status === 0 && /^deno \d+\./.test(r.stdout) ? r.stdout.split('\n')[0] : null;
}

/** The first way of running Deno that answers `--version`, and every way tried (for the failure message). */
export function findDeno(): { cmd: DenoCommand | null; version: string | null; tried: string[] } {
  const candidates: DenoCommand[] = [];
  const platformDir = path.join(ROOT, 'node_modules/@deno');
  if (fs.existsSync(platformDir)) {
    for (const name of fs.readdirSync(platformDir).sort()) {
      const file = path.join(platformDir, name, EXE);
      if (fs.existsSync(file)) candidates.push({ file, prefix: [], how: `node_modules/@deno/${name}/${EXE}` });
    }
  }
  const installed = path.join(ROOT, 'node_modules/deno', EXE);
  if (fs.existsSync(installed)) candidates.push({ file: installed, prefix: [], how: `node_modules/deno/${EXE}` });
  const shim = path.join(ROOT, 'node_modules/deno/bin.cjs');
  if (fs.existsSync(shim)) candidates.push({ file: process.execPath, prefix: [shim], how: 'node node_modules/deno/bin.cjs' });
  const tried: string[] = [];
  for (const cmd of candidates) {
    tried.push(cmd.how);
    const version = works(cmd);
    if (version) return { cmd, version, tried };
  }
  return { cmd: null, version: null, tried };
}

