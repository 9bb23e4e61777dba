/**
 * Who holds a volume lock: a small `owner` file inside the lock directory, written before the
 * holder first stats its lock. A waiter on the same host (same boot, same pid namespace) can then
 * tell a holder that is gone — killed, crashed, interrupted in the middle of an engine job — from
 * one that is only slow, and take the lock over at once instead of after `staleMs`.
 *
 * A holder is judged gone only when that is certain: the record names this host, this boot and
 * this pid namespace, and its pid no longer runs, or runs a process that started at another
 * time (a reused pid). Anything else — another host, a container with its own pids, no /proc, an
 * unreadable or hostile record — proves nothing, and the lease's own staleness decides as before.
 */
import * as fs from 'node:fs';
import path from 'node:path';
import * as z from 'zod';
import { lazy } from '../lazy.js';
import { nodeOs } from '../load-on-use.js';
import { readSmallFile } from './small-file.js';

const OWNER_FILE = 'owner';
const MAX_OWNER_BYTES = 4096;

/** Built at first use (lazy.ts): only a command that finds another holder's record reads one. */
const ownerSchema = lazy(() =>
  z.strictObject({
    host: z.string().max(255),
    bootId: z.string().max(64),
    pidNs: z.string().max(64),
    pid: z.number().int().positive(),
    /** The process's start time in clock ticks since boot (/proc/<pid>/stat, field 22). */
    start: z.string().max(32),
  }),
);
export type LockOwner = z.infer<ReturnType<typeof ownerSchema>>;

function readText(p: string): string | null {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch {
    return null;
  }
}

/** Field 22 of /proc/<pid>/stat (after the parenthesised command name, which may hold spaces). */
function startTime(pid: number): string | null {
  const stat = readText(`/proc/${pid}/stat`);
  if (stat === null) return null;
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
}

function pidNamespace(): string | null {
  try {
    return fs.readlinkSync('/proc/self/ns/pid');
  } catch {
    return null;
  }
}

/**
 * The host's name as gethostname(2) gives it (os.hostname()): on Linux the kernel's own copy of
 * it for this UTS namespace, read without loading node:os (some 0.2 ms of a volume command's
 * start); os.hostname() where that cannot be read.
 */
function hostname(): string {
  const proc = readText('/proc/sys/kernel/hostname');
  return proc !== null && proc.endsWith('\n') && proc.length > 1 ? proc.slice(0, -1) : nodeOs().hostname();
}

/** This process as a lock owner; null where it cannot be identified for certain (no /proc). */
export function currentOwner(): LockOwner | null {
  const bootId = readText('/proc/sys/kernel/random/boot_id')?.trim();
  const pidNs = pidNamespace();
  const start = startTime(process.pid);
  if (!bootId || !pidNs || !start) return null;
  return { host: hostname(), bootId, pidNs, pid: process.pid, start };
}

/** Record this process in the fresh lock directory `lockPath` (best effort: without it, only staleness frees the lock). */
export function writeOwner(lockPath: string, owner: LockOwner | null): void {
  if (!owner) return;
  try {
    fs.writeFileSync(path.join(lockPath, OWNER_FILE), JSON.stringify(owner), { flag: 'wx', mode: 0o644 });
  } catch {
    // a lock without an owner record is still a lock
  }
}

/** The recorded owner of `lockPath` when it is certainly gone, else null. */
export function goneOwner(lockPath: string, me: LockOwner | null): LockOwner | null {
  if (!me) return null;
  let bytes: Buffer | null;
  try {
    bytes = readSmallFile(path.join(lockPath, OWNER_FILE), MAX_OWNER_BYTES, 'lock owner');
  } catch {
    return null;
  }
  if (bytes === null) return null;
  let parsed: ReturnType<ReturnType<typeof ownerSchema>['safeParse']>;
  try {
    parsed = ownerSchema().safeParse(JSON.parse(bytes.toString('utf8')));
  } catch {
    return null;
  }
  if (!parsed.success) return null;
  const owner = parsed.data;
  if (owner.host !== me.host || owner.bootId !== me.bootId || owner.pidNs !== me.pidNs) return null;
  if (owner.pid === me.pid) return null; // this process: never gone
  try {
    process.kill(owner.pid, 0);
  } catch (e) {
    // ESRCH: no such process. EPERM: it runs (as another user): alive.
    return (e as NodeJS.ErrnoException).code === 'ESRCH' ? owner : null;
  }
  // The pid runs: the owner only if it started when the owner did (else the pid was reused).
  const now = startTime(owner.pid);
  return now !== null && now !== owner.start ? owner : null;
}

/** Remove the owner record (before the lock directory itself is removed). */
export function removeOwner(lockPath: string): void {
  // unlink, not rmSync({ force }): Node 20's rmSync loads its recursive remover for a single file
  try {
    fs.unlinkSync(path.join(lockPath, OWNER_FILE));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}
