/**
 * The driver child (test/volume/fixtures/driver-child.ts, bundled): one snapshot create or delete
 * through the real driver in its own process, SIGKILLed where the crash tests say — at a named
 * step, just before its Nth write(2) after the journal, after a delay, or never.
 */
import { runChild } from './child.js';
import type { VolumeStatus } from '../../src/volume/status.js';

export type DriverKill = { step: string; nth?: number } | { write: number } | { delayMs: number } | 'never';

export interface DriverChildRun {
  dir: string;
  vol: string;
  op: 'create' | 'delete';
  /** The snapshot id. */
  snap: string;
  status: VolumeStatus;
  stepBytes: number;
  staleMs: number;
  kill: DriverKill;
  /** After the guest switched onto the new file, it writes this many bytes there. */
  guestWrite?: number;
  /** Where the driver runs its engine jobs (default inline: write(2) is counted in the child's own thread). */
  engine?: 'inline' | 'worker';
}

/** Run the child; resolves with how it ended and, if it finished, its write count. */
export async function runDriverChild(bundle: string, run: DriverChildRun): Promise<{ killed: boolean; writes: number; err: string }> {
  const { kill } = run;
  let armed = false;
  const r = await runChild(bundle, {
    env: {
      DIR: run.dir,
      VOL: run.vol,
      OP: run.op,
      SNAP: run.snap,
      STATUS: run.status,
      STEP_BYTES: String(run.stepBytes),
      LOCK_STALE_MS: String(run.staleMs),
      ...(kill !== 'never' && 'step' in kill ? { KILL_AT: kill.step, KILL_NTH: String(kill.nth ?? 1) } : {}),
      ...(kill !== 'never' && 'write' in kill ? { KILL_WRITE: String(kill.write) } : {}),
      ...(run.guestWrite ? { GUEST_WRITE: String(run.guestWrite) } : {}),
      ...(run.engine ? { ENGINE: run.engine } : {}),
    },
    onStdout: (out, proc) => {
      if (kill !== 'never' && 'delayMs' in kill && !armed && out.startsWith('ready')) {
        armed = true;
        setTimeout(() => proc.kill('SIGKILL'), kill.delayMs);
      }
    },
  });
  const writes = Number(/^done (\d+)/m.exec(r.stdout)?.[1] ?? -1);
  if (r.signal === 'SIGKILL') return { killed: true, writes, err: r.stderr };
  if (r.code === 0) return { killed: false, writes, err: r.stderr };
  throw new Error(`driver child exited ${r.code}: ${r.stderr}`);
}
