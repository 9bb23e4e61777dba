/**
 * A real qemu process holding an image open, as a running guest would: `qemu-io FILE` waiting
 * for commands on its stdin. It holds qemu's image locks (OFD locks, visible in /proc/locks)
 * until `release()` closes its stdin.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

export interface Holder {
  release(): Promise<void>;
}

/** Whether /proc/locks shows an OFD lock on `file`'s inode. */
export function ofdLocked(file: string): boolean {
  const ino = String(fs.statSync(file).ino);
  return fs
    .readFileSync('/proc/locks', 'utf8')
    .split('\n')
    .some((l) => /OFDLCK/.test(l) && l.split(/\s+/).some((w) => w.endsWith(`:${ino}`)));
}

/** Start `qemu-io [-r] -f FORMAT FILE` and wait until its locks show. */
export async function holdWithQemuIo(file: string, format: 'raw' | 'qcow2', readOnly = false): Promise<Holder> {
  const child: ChildProcess = spawn('qemu-io', [...(readOnly ? ['-r'] : []), '-f', format, file], { stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += String(d)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  for (let i = 0; !ofdLocked(file); i++) {
    if (child.exitCode !== null || i > 1000) {
      child.kill('SIGKILL');
      throw new Error(`qemu-io ${file} did not take its locks: ${stderr}`);
    }
    await sleep(20);
  }
  return {
    release: async () => {
      child.stdin!.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
