/**
 * File names of one volume's chain, and the checks that keep an untrusted name inside it.
 *
 * A backing-file name read from a qcow2 header is guest-influenced data (a forged upload can put
 * anything there), so before the driver opens it, the name must be one of THIS volume's files:
 *   volume-<vol>                  the base image
 *   volume-<vol>.<snap-uuid>      the overlay made by snapshot <snap-uuid>
 *   volume-<vol>.tmp-snap-<uuid>  the overlay of a temporary (clone) snapshot
 * and, after symlinks are resolved, a regular file inside the volume directory.
 */
import fsSync from 'node:fs';
import path from 'node:path';
import { CowError } from '../errors.js';

// Hex digits in either case; the literal parts (`volume-`, `tmp-snap-`) are lower case only,
// as Cinder writes them. No 'i' flag, so it cannot leak onto those parts.
const UUID_SOURCE = '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}';
const UUID_RE = new RegExp(`^${UUID_SOURCE}$`);
const SNAPSHOT_ID_RE = new RegExp(`^(?:tmp-snap-)?${UUID_SOURCE}$`);
// Anchored and exact (JS `$` does not match before a trailing newline): nothing but these parts.
const CHAIN_NAME_RE = new RegExp(`^volume-(${UUID_SOURCE})(?:\\.((?:tmp-snap-)?${UUID_SOURCE}))?$`);

/** Quote a value for an error message so NUL bytes, separators and empty strings stay visible. */
function show(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

/** A snapshot id: a uuid, or tmp-snap-<uuid> (a clone's temporary snapshot). */
export function isSnapshotId(value: unknown): value is string {
  return typeof value === 'string' && SNAPSHOT_ID_RE.test(value);
}

/** Canonical 8-4-4-4-12 hex form, either case. */
export function isUuid(value: unknown): value is string {
  return typeof value === 'string' && UUID_RE.test(value);
}

/** Returns `volumeId` if it is a uuid; ECOW_BAD_ARGUMENT otherwise. */
export function validateVolumeId(volumeId: string): string {
  if (!isUuid(volumeId)) {
    throw new CowError('ECOW_BAD_ARGUMENT', `volume id ${show(volumeId)} is not a uuid`);
  }
  return volumeId;
}

/** Returns `snapshotId` if it is a uuid or `tmp-snap-<uuid>`; ECOW_BAD_ARGUMENT otherwise. */
export function validateSnapshotId(snapshotId: string): string {
  if (typeof snapshotId !== 'string' || !SNAPSHOT_ID_RE.test(snapshotId)) {
    throw new CowError(
      'ECOW_BAD_ARGUMENT',
      `snapshot id ${show(snapshotId)} is not a uuid or tmp-snap-<uuid>`,
    );
  }
  return snapshotId;
}

/** `volume-<vol>`: the base image (and the prefix of every file of the volume). */
export function baseName(volumeId: string): string {
  return `volume-${validateVolumeId(volumeId)}`;
}

/** `volume-<vol>.<snap>`: the overlay file created when snapshot `<snap>` was taken. */
export function snapshotFileName(volumeId: string, snapshotId: string): string {
  return `${baseName(volumeId)}.${validateSnapshotId(snapshotId)}`;
}

export interface ParsedChainName {
  volumeId: string;
  /** null for the base image. */
  snapshotId: string | null;
}

/** Split a chain file name into its parts; null if it is not a chain file name of any volume. */
export function parseChainName(name: string): ParsedChainName | null {
  if (typeof name !== 'string') return null;
  const m = CHAIN_NAME_RE.exec(name);
  if (!m) return null;
  return { volumeId: m[1], snapshotId: m[2] ?? null };
}

/**
 * Accept `name` only if it is a bare file name of volume `volumeId`'s chain; otherwise throw
 * ECOW_BACKING_REJECTED naming the value and the reason. The volume part must equal `volumeId`
 * exactly: on a case-sensitive file system `volume-ABC…` is a different file from `volume-abc…`.
 */
export function checkChainName(volumeId: string, name: string): ParsedChainName {
  validateVolumeId(volumeId);
  const reject = (reason: string): never => {
    throw new CowError(
      'ECOW_BACKING_REJECTED',
      `backing file name ${show(name)} rejected for volume ${volumeId}: ${reason}`,
    );
  };
  if (typeof name !== 'string') return reject('not a string');
  if (name.length === 0) return reject('empty name');
  if (name.includes('\0')) return reject('contains a NUL byte');
  if (path.posix.isAbsolute(name) || path.win32.isAbsolute(name)) return reject('absolute path');
  if (name.includes('/') || name.includes('\\')) return reject('contains a path separator');
  if (name.includes('..')) return reject("contains '..'");
  const parsed = parseChainName(name);
  if (!parsed) {
    return reject('not volume-<uuid>, volume-<uuid>.<uuid> or volume-<uuid>.tmp-snap-<uuid>');
  }
  if (parsed.volumeId !== volumeId) return reject(`belongs to volume ${parsed.volumeId}`);
  return parsed;
}

/** The failure modes of resolveInsideDir, shared by its async and sync forms. */
function rejectBacking(dir: string, name: string, reason: string, cause?: unknown): never {
  throw new CowError('ECOW_BACKING_REJECTED', `backing file ${show(name)} in ${dir} rejected: ${reason}`, { cause });
}

function checkNameForResolve(dir: string, name: string): void {
  // path functions throw a TypeError on NUL; turn it into the same rejection as any bad name.
  if (typeof name !== 'string' || name.length === 0 || name.includes('\0')) {
    rejectBacking(dir, name, 'empty or contains a NUL byte');
  }
}

function dirResolveError(dir: string, e: unknown): CowError {
  const code = (e as NodeJS.ErrnoException).code;
  return new CowError(
    code === 'ENOENT' ? 'ECOW_NOT_FOUND' : 'ECOW_IO',
    `volume directory ${dir} cannot be resolved: ${code ?? String(e)}`,
    { cause: e },
  );
}

function nameResolveError(dir: string, name: string, e: unknown): CowError {
  const code = (e as NodeJS.ErrnoException).code;
  // A dangling symlink also ends here: whatever it points at does not exist, so nothing is
  // followed, and "missing" is the accurate report.
  if (code === 'ENOENT' || code === 'ENOTDIR') {
    return new CowError('ECOW_BACKING_MISSING', `backing file ${show(name)} does not exist in ${dir}`, { cause: e });
  }
  if (code === 'ELOOP') {
    return new CowError('ECOW_BACKING_REJECTED', `backing file ${show(name)} in ${dir} rejected: symlink loop`, { cause: e });
  }
  return new CowError('ECOW_IO', `backing file ${show(name)} in ${dir} cannot be resolved: ${code ?? String(e)}`, {
    cause: e,
  });
}

function checkContained(dir: string, name: string, realDir: string, real: string): void {
  const rel = path.relative(realDir, real);
  if (rel === '' || rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel)) {
    rejectBacking(dir, name, `resolves to ${real}, outside ${realDir}`);
  }
}

function statError(real: string, e: unknown): CowError {
  const code = (e as NodeJS.ErrnoException).code;
  return new CowError(
    code === 'ENOENT' ? 'ECOW_BACKING_MISSING' : 'ECOW_IO',
    `backing file ${real} cannot be examined: ${code ?? String(e)}`,
    { cause: e },
  );
}

/**
 * Resolve `dir/name` through symlinks and return its real path, which must be a regular file
 * inside realpath(dir). A symlink escaping the directory (or a loop) is ECOW_BACKING_REJECTED, a
 * missing target ECOW_BACKING_MISSING. Call checkChainName first: this checks containment only.
 */
export async function resolveInsideDir(dir: string, name: string): Promise<string> {
  checkNameForResolve(dir, name);
  // fs.promises, read when used: node:fs/promises takes a start some 1 ms to load (with readline and
  // the watchers), and the short volume commands need none of it (atomic-file.ts)
  const fs = fsSync.promises;
  const realDir = await fs.realpath(dir).catch((e) => Promise.reject(dirResolveError(dir, e)));
  // resolve, not join: an absolute name means that absolute path (as qemu would read it), and
  // is then rejected as outside rather than quietly reinterpreted as relative.
  const real = await fs.realpath(path.resolve(realDir, name)).catch((e) => Promise.reject(nameResolveError(dir, name, e)));
  checkContained(dir, name, realDir, real);
  // Opening a FIFO or device as an image could block or read unbounded data; images are files.
  const st = await fs.stat(real).catch((e) => Promise.reject(statError(real, e)));
  if (!st.isFile()) rejectBacking(dir, name, `${real} is not a regular file`);
  return real;
}

/**
 * resolveInsideDir for synchronous callers (a BackingResolver of openImage runs inside the
 * engine's synchronous chain walk). Same checks, same errors.
 */
export function resolveInsideDirSync(dir: string, name: string): string {
  checkNameForResolve(dir, name);
  let realDir: string;
  try {
    // realpath(3), as the async resolveInsideDir's fs.realpath: the JavaScript realpathSync
    // lstat()s every component of the path, for every layer of every chain opened.
    realDir = fsSync.realpathSync.native(dir);
  } catch (e) {
    throw dirResolveError(dir, e);
  }
  let real: string;
  try {
    real = fsSync.realpathSync.native(path.resolve(realDir, name));
  } catch (e) {
    throw nameResolveError(dir, name, e);
  }
  checkContained(dir, name, realDir, real);
  let st: fsSync.Stats;
  try {
    st = fsSync.statSync(real);
  } catch (e) {
    throw statError(real, e);
  }
  if (!st.isFile()) rejectBacking(dir, name, `${real} is not a regular file`);
  return real;
}
