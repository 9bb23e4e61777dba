/**
 * Modes of the files the driver creates, as Cinder's NAS drivers set them: qemu often runs as
 * another user than the volume service, and must be able to write the new active overlay after an
 * online snapshot. Secure mode (`nas_secure_file_permissions`): `660`, and a new overlay takes
 * owner and group from its backing file (`chown --reference`). Otherwise `ugo+rw` (`666`).
 *
 * `auto`, Cinder's default, decides once per share: the indicator file `.cinderSecureEnvIndicator`
 * there means secure. Without it, a new share (no volume files yet) becomes secure and gets the
 * indicator (mode 640); a share that already holds volumes stays open, as for an existing Cinder
 * install, so that hypervisors that could write its files still can.
 */
import * as fs from 'node:fs';
import { readdirAsync } from './atomic-file.js';
import path from 'node:path';
import { parseChainName } from './names.js';
import { CowError } from '../errors.js';

export type SecureFilePermissions = 'auto' | boolean;

export const SECURE_ENV_INDICATOR = '.cinderSecureEnvIndicator';

export interface FileModes {
  secure: boolean;
  /** Mode of every new file: 0o660 (secure) or 0o666. */
  mode: number;
}

/** `auto` / `true` / `false` as the CLI and Cinder's configuration spell them. */
export function parseSecureFilePermissions(text: string): SecureFilePermissions {
  if (text === 'auto') return 'auto';
  if (text === 'true') return true;
  if (text === 'false') return false;
  throw new CowError('ECOW_BAD_ARGUMENT', `--secure-file-permissions must be auto, true or false, not "${text}"`);
}

function modesFor(secure: boolean): FileModes {
  return { secure, mode: secure ? 0o660 : 0o666 };
}

/** Decide the modes for share `dir` (creating the indicator where Cinder would). */
export async function resolveFileModes(dir: string, setting: SecureFilePermissions = 'auto'): Promise<FileModes> {
  if (setting !== 'auto') return modesFor(setting);
  const indicator = path.join(dir, SECURE_ENV_INDICATOR);
  const marked = () => {
    try {
      return fs.statSync(indicator).isFile();
    } catch {
      return false;
    }
  };
  if (marked()) return modesFor(true);
  let entries: string[];
  try {
    entries = await readdirAsync(dir);
  } catch (e) {
    throw new CowError('ECOW_IO', `cannot list ${dir}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e });
  }
  // Volume images (not lock files or records) make it an existing share.
  // Looked at again: a process that made the share's first volume made the indicator before it.
  if (entries.some((n) => parseChainName(n) !== null)) return modesFor(marked());
  try {
    await fs.promises.writeFile(indicator, 'Detector file for Cinder secure environment usage.\nDo not delete this file.\n', { flag: 'wx' });
    await fs.promises.chmod(indicator, 0o640);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return modesFor(true); // a concurrent first operation made it
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') return modesFor(false); // Cinder reverts to open mode
    throw new CowError('ECOW_IO', `cannot create ${indicator}: ${code ?? String(e)}`, { cause: e });
  }
  return modesFor(true);
}

/**
 * Give a newly created file its mode and, in secure mode with a `reference` file, that file's
 * owner and group. Only files this driver just created pass through here.
 */
export function applyFileModes(file: string, modes: FileModes, reference?: string): void {
  try {
    fs.chmodSync(file, modes.mode);
    if (modes.secure && reference !== undefined) {
      const ref = fs.statSync(reference);
      const own = fs.statSync(file);
      if (ref.uid !== own.uid || ref.gid !== own.gid) fs.chownSync(file, ref.uid, ref.gid);
    }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CowError('ECOW_IO', `cannot set the mode${reference ? ` and owner (from ${reference})` : ''} of ${file}: ${code ?? String(e)}`, { cause: e });
  }
}
