/**
 * qemu's image locks, so that cowchain and qemu (qemu-img, qemu-io, a running guest) see each
 * other. qemu locks one byte per permission with OFD locks (fcntl F_OFD_SETLK): byte 100+p while it
 * holds permission p, byte 200+p while it does not let others have p; before taking a permission it
 * tests byte 200+p, and before refusing to share one it tests byte 100+p (qemu's file-posix.c,
 * raw_apply_lock_bytes / raw_check_lock_bytes). Permissions: 0 consistent read, 1 write,
 * 2 write unchanged, 3 resize.
 *
 * A writer here holds all four and shares neither write nor resize, as `qemu-img commit` does; a
 * reader holds consistent read and does not share write, as `qemu-img info` does; `none` (`-U`,
 * force-share) neither takes nor tests anything.
 *
 * Node takes the locks through a small native binding (native/ofd-lock.c, `npm run build:native`).
 * Without it — not built, Deno, another OS — locks held by others are still found in /proc/locks
 * (Linux), so cowchain refuses to write what qemu holds, but it takes none itself: qemu and a
 * second cowchain process cannot see it. `COWCHAIN_OFD_LOCKS=off` turns all of this off,
 * `COWCHAIN_OFD_LOCKS=detect` uses only /proc/locks; `COWCHAIN_REQUIRE_NATIVE=1` makes a missing
 * binding an error.
 */
import * as fs from 'node:fs';
import { loadNativeBinding } from './native-binding.js';
import { CowError } from '../errors.js';

export type LockMode = 'write' | 'read' | 'none';

const PERM_BASE = 100;
const SHARED_BASE = 200;
const PERM_NAMES = ['consistent read', 'write', 'write unchanged', 'resize'];
/** Permissions held, and permissions not shared with anyone else, per mode. */
const MODES: Record<Exclude<LockMode, 'none'>, { hold: number[]; unshare: number[] }> = {
  write: { hold: [0, 1, 2, 3], unshare: [1, 3] },
  read: { hold: [0], unshare: [1] },
};

interface OfdBinding {
  setlk(fd: number, start: number, len: number, type: 0 | 1 | 2): number;
  getlk(fd: number, start: number, len: number, type: 0 | 1 | 2): number;
}

/** How this runtime handles image locks: `native` takes and tests them, `detect` only tests. */
export type LockSupport = 'native' | 'detect' | 'off';

let binding: OfdBinding | null | undefined;

/** An environment variable; unset where reading it is not allowed (Deno without --allow-env). */
function env(name: string): string | undefined {
  try {
    return process.env[name];
  } catch {
    return undefined;
  }
}

function loadBinding(): OfdBinding | null {
  if (binding !== undefined) return binding;
  // Not under Deno: fcntl on its node:fs descriptors would lock the wrong file.
  binding = loadNativeBinding<OfdBinding>('ofd-lock');
  if (!binding && env('COWCHAIN_REQUIRE_NATIVE') === '1') {
    throw new CowError('ECOW_IO', 'COWCHAIN_REQUIRE_NATIVE=1 but build/ofd-lock.node could not be loaded (run npm run build:native)');
  }
  return binding;
}

export function lockSupport(): LockSupport {
  if (env('COWCHAIN_OFD_LOCKS') === 'off') return 'off';
  if (env('COWCHAIN_OFD_LOCKS') === 'detect') return 'detect';
  return loadBinding() ? 'native' : 'detect';
}

/**
 * Take `mode`'s locks on `fd` (the image `file`), after testing that nobody holds what they
 * conflict with; ECOW_IMAGE_LOCKED (nothing taken) otherwise. Closing `fd` releases them.
 */
export function lockImage(fd: number, file: string, mode: LockMode): void {
  if (mode === 'none') return;
  const support = lockSupport();
  if (support === 'off') return;
  const { hold, unshare } = MODES[mode];
  if (support === 'detect') return detectConflicts(fd, file, mode);
  const b = binding!;
  // As qemu: take the locks first, then test (a racing opener then sees ours, or we see its).
  const taken: number[] = [];
  const release = () => {
    for (const off of taken) b.setlk(fd, off, 1, 0);
  };
  for (const off of [...hold.map((p) => PERM_BASE + p), ...unshare.map((p) => SHARED_BASE + p)]) {
    const r = b.setlk(fd, off, 1, 1);
    if (r < 0) {
      release();
      // A file system without OFD locks (EINVAL/ENOLCK/EOPNOTSUPP): as qemu with locking=auto.
      if (r === -22 || r === -37 || r === -95) return;
      throw locked(file, mode, `cannot take lock byte ${off} (errno ${-r})`);
    }
    taken.push(off);
  }
  for (const p of hold) {
    if (b.getlk(fd, SHARED_BASE + p, 1, 2) > 0) {
      release();
      throw locked(file, mode, `Failed to get "${PERM_NAMES[p]}" lock`);
    }
  }
  for (const p of unshare) {
    if (b.getlk(fd, PERM_BASE + p, 1, 2) > 0) {
      release();
      throw locked(file, mode, `Failed to get shared "${PERM_NAMES[p]}" lock`);
    }
  }
}

function locked(file: string, mode: LockMode, why: string): CowError {
  return new CowError(
    'ECOW_IMAGE_LOCKED',
    `${file}: ${why}: another process (qemu, or another cowchain) has the image open${mode === 'write' ? '' : ' for writing'}${mode === 'read' ? ' (-U/--force-share reads anyway)' : ''}`,
  );
}

/** Without the binding: the OFD locks others hold on this file, from /proc/locks. */
function detectConflicts(fd: number, file: string, mode: Exclude<LockMode, 'none'>): void {
  let text: string;
  try {
    text = fs.readFileSync('/proc/locks', 'utf8');
  } catch {
    return; // no /proc: nothing can be seen
  }
  const st = fs.fstatSync(fd);
  const major = Number((BigInt(st.dev) >> 8n) & 0xfffn);
  const minor = Number((BigInt(st.dev) & 0xffn) | ((BigInt(st.dev) >> 12n) & 0xfff00n));
  const held = new Set<number>();
  for (const line of text.split('\n')) {
    // "12: OFDLCK  ADVISORY  READ  -1 00:2d:1234 100 100"
    const m = /^\d+:\s+(?:->\s+)?OFDLCK\s+\S+\s+\S+\s+\S+\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s+(\d+)\s+(\d+|EOF)/.exec(line);
    if (!m || parseInt(m[1], 16) !== major || parseInt(m[2], 16) !== minor || BigInt(m[3]) !== BigInt(st.ino)) continue;
    const start = Number(m[4]);
    const end = m[5] === 'EOF' ? Infinity : Number(m[5]);
    for (let b = Math.max(start, PERM_BASE); b <= Math.min(end, SHARED_BASE + 3); b++) held.add(b);
  }
  const { hold, unshare } = MODES[mode];
  for (const p of hold) if (held.has(SHARED_BASE + p)) throw locked(file, mode, `Failed to get "${PERM_NAMES[p]}" lock`);
  for (const p of unshare) if (held.has(PERM_BASE + p)) throw locked(file, mode, `Failed to get shared "${PERM_NAMES[p]}" lock`);
}
