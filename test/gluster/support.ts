/**
 * Shared pieces of the GlusterFS suite (npm run test:gluster): the two mounts of one GlusterFS
 * volume (COWCHAIN_GLUSTER_A / COWCHAIN_GLUSTER_B, set up by test/gluster/setup.sh), scratch
 * directories on the volume seen through both mounts, and child processes bundled with esbuild (run with test/support/child.ts).
 *
 * Without the mounts the suite FAILS (it never skips): a run that silently tested nothing
 * would look like a pass.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll } from 'vitest';
import { ROOT, bundleForNode } from '../support/bundle.js';

export { ROOT };

export interface Mounts {
  a: string;
  b: string;
  /** The GlusterFS volume both mount (`host:/volume`). */
  source: string;
}

interface MountEntry {
  source: string;
  target: string;
  type: string;
  options: string;
}

function mountTable(): MountEntry[] {
  // /proc/mounts escapes spaces and such as octal
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return fs
    .readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [source, target, type, options] = l.split(' ');
      return { source: unescape(source), target: unescape(target), type, options };
    });
}

/**
 * The two mounts, checked: both set, both FUSE mounts of the same GlusterFS volume, distinct
 * mount points. Throws (failing the test file) otherwise, saying how to get them.
 */
export function glusterMounts(): Mounts {
  const how = 'run `bash test/gluster/setup.sh` first (it writes /run/cowchain-gluster/env), then `npm run test:gluster`';
  const a = process.env.COWCHAIN_GLUSTER_A;
  const b = process.env.COWCHAIN_GLUSTER_B;
  if (!a || !b) throw new Error(`COWCHAIN_GLUSTER_A and COWCHAIN_GLUSTER_B must name two mounts of one GlusterFS volume: ${how}`);
  const table = mountTable();
  const entry = (p: string): MountEntry => {
    const real = fs.realpathSync(p);
    const e = table.filter((m) => m.target === real).pop();
    if (!e || e.type !== 'fuse.glusterfs') {
      throw new Error(`${p} is not a GlusterFS FUSE mount (${e ? `it is ${e.type}` : 'not a mount point'}): ${how}`);
    }
    return e;
  };
  const ea = entry(a);
  const eb = entry(b);
  if (ea.target === eb.target) throw new Error(`COWCHAIN_GLUSTER_A and _B are the same mount (${ea.target}): two mounts are needed`);
  if (ea.source !== eb.source) throw new Error(`${a} mounts ${ea.source} but ${b} mounts ${eb.source}: they must mount the same volume`);
  return { a: ea.target, b: eb.target, source: ea.source };
}

export interface SharedDir {
  /** The directory through mount A. */
  a: string;
  /** The same directory through mount B. */
  b: string;
}

const created: string[] = [];
afterAll(() => {
  for (const d of created.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** A fresh directory on the GlusterFS volume, seen through both mounts; removed after the file. */
export function sharedDir(m: Mounts, label: string): SharedDir {
  const name = `cowchain-${label}-${process.pid}-${randomBytes(4).toString('hex')}`;
  const a = path.join(m.a, name);
  fs.mkdirSync(a);
  created.push(a);
  return { a, b: path.join(m.b, name) };
}

/** A fresh local (not GlusterFS) directory, removed after the file. */
export function localDir(label: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), `cowchain-gluster-${label}-`));
  created.push(d);
  return d;
}

/** Bundle a child-process source (a .ts file of the repo) for plain node (test/support/bundle.ts). */
export function bundleChild(source: string): Promise<string> {
  return bundleForNode(source, localDir('child'), path.basename(source, '.ts'));
}

export { runChild, type ChildOptions, type ChildResult } from '../support/child.js';
