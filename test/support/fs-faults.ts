/**
 * In-process crash injection for synchronous engine operations (createImage, rebaseImage, …):
 * the process "dies" just before its Nth file mutation — write(2) or ftruncate(2), the only ways
 * the engine's FileBackend changes a file. From then on every mutating fs call throws (EIO), so
 * nothing the operation would do afterwards (its flushes at close, its cleanup on error) reaches
 * the disk: the files hold exactly mutations 1..N-1, as after a SIGKILL at that instant.
 *
 * Works by patching node:fs and re-exporting to ESM (syncBuiltinESMExports), as
 * test/volume/fixtures/driver-child.ts does; only for synchronous operations (no other code
 * may run while armed).
 */
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';

const MUTATING = ['writeSync', 'ftruncateSync', 'truncateSync', 'rmSync', 'unlinkSync', 'renameSync', 'copyFileSync', 'writeFileSync', 'fsyncSync', 'fdatasyncSync'] as const;
type Name = (typeof MUTATING)[number];

export class Crash extends Error {
  code = 'EIO';
  constructor(at: number) {
    super(`injected crash before file mutation ${at}`);
  }
}

export interface CrashRun {
  /** File mutations (writes and truncates) that happened. */
  mutations: number;
  /** Whether the crash point was reached (false: the operation finished first). */
  crashed: boolean;
  /** What the operation threw (undefined when it finished). */
  error: unknown;
}

/**
 * Run `fn` and crash just before its `at`-th write/truncate (1-based; 0 or Infinity: never).
 * Flushes (fsync) pass until the crash; afterwards they fail too.
 */
export function runWithCrashAt(at: number, fn: () => void): CrashRun {
  const saved = new Map<Name, unknown>();
  let mutations = 0;
  let dead = false;
  const target = fs as unknown as Record<Name, (...a: unknown[]) => unknown>;
  for (const name of MUTATING) {
    const orig = target[name];
    saved.set(name, orig);
    target[name] = (...args: unknown[]) => {
      if (dead) throw new Crash(at);
      if (name === 'writeSync' || name === 'ftruncateSync' || name === 'truncateSync') {
        if (++mutations === at) {
          mutations--;
          dead = true;
          throw new Crash(at);
        }
      }
      return orig.apply(fs, args);
    };
  }
  syncBuiltinESMExports();
  let error: unknown;
  try {
    fn();
  } catch (e) {
    error = e;
  } finally {
    for (const [name, orig] of saved) target[name] = orig as (...a: unknown[]) => unknown;
    syncBuiltinESMExports();
  }
  return { mutations, crashed: dead, error };
}
