/**
 * The Cinder `volume-<vol>.info` file: `{"active": "<file>", "<snapshot id>": "<file>", …}`.
 *
 * A volume can move between Cinder's own remotefs driver and ours, so we read whatever Cinder
 * writes and write exactly the bytes Cinder writes: Python's
 * `json.dump(info, f, indent=1, sort_keys=True)`.
 */
import path from 'node:path';
import * as z from 'zod';
import { baseName } from './names.js';
import { CowError } from '../errors.js';
import { lazy } from '../lazy.js';
import { writeFileAtomic } from './atomic-file.js';
import { quoteBounded, readSmallFile } from './small-file.js';

/**
 * Content of an info file, built at first use (lazy.ts): a well-formed file is read and written
 * without it (wellFormedInfo), so that a volume command need not load zod at all. zod (like any
 * JS object) silently drops an own `__proto__` key, so it is refused up front: a key we could not
 * keep would otherwise vanish on the next write. `cowchain/volume` exports it as VolumeInfoSchema.
 */
export const volumeInfoSchema = lazy(() => {
  /** A bare file name: never a path, never `.`/`..`, never empty, no NUL (isBareFileName). */
  const BareFileName = z
    .string()
    .min(1, 'empty file name')
    .refine((s) => !s.includes('/'), 'file name contains "/" (must be a bare name, not a path)')
    .refine((s) => s !== '.' && s !== '..', 'file name is "." or ".."')
    .refine((s) => !s.includes('\0'), 'file name contains a NUL byte');
  return z
    .custom<unknown>(
      (v) => typeof v !== 'object' || v === null || !Object.prototype.hasOwnProperty.call(v, '__proto__'),
      'key "__proto__" is not supported',
    )
    .pipe(z.object({ active: BareFileName }).catchall(BareFileName));
});

/** An info file's content: the active file, and each snapshot's file by snapshot id (volumeInfoSchema). */
export interface VolumeInfo {
  active: string;
  [snapshotId: string]: string;
}

/** What the schema's BareFileName accepts. */
function isBareFileName(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0 && !v.includes('/') && v !== '.' && v !== '..' && !v.includes('\0');
}

/**
 * `v` as volumeInfoSchema() parses it (a new object, `active` first, as zod builds it) when `v`
 * is a plain object the schema plainly accepts; undefined for anything else, which the schema
 * then decides (and says why). It accepts exactly what the schema accepts of what JSON.parse
 * returns (test/volume/zod-fast-paths.test.ts checks both over generated inputs).
 */
export function wellFormedInfo(v: unknown): VolumeInfo | undefined {
  if (typeof v !== 'object' || v === null || Object.getPrototypeOf(v) !== Object.prototype) return undefined;
  const o = v as Record<string, unknown>;
  if (!Object.hasOwn(o, 'active') || !isBareFileName(o.active)) return undefined;
  const info: VolumeInfo = { active: o.active };
  // for…in as zod's catchall walks the keys (inherited enumerable ones included: those fall back)
  for (const key in o) {
    const value = o[key];
    if (key === '__proto__' || !Object.hasOwn(o, key) || !isBareFileName(value)) return undefined;
    if (key !== 'active') info[key] = value;
  }
  return info;
}

/**
 * Largest info file read: about 8 000 snapshots of 120-byte entries. A bigger one is not an
 * info file this driver or Cinder wrote, and is refused before it is read into memory.
 */
export const MAX_INFO_BYTES = 1 << 20;

/** `<dir>/volume-<vol>.info` */
export function infoPath(dir: string, volumeId: string): string {
  return path.join(dir, `${baseName(volumeId)}.info`);
}

/** Prefix of writeInfo's temp files; a leftover one (crash mid-write) is garbage for fsck. */
export function infoTempPrefix(volumeId: string): string {
  return `.${baseName(volumeId)}.info.tmp-`;
}

/** A key from the file as printed: bare when plainly harmless, else quoted and cut. */
const safeKey = (k: string): string => (/^[\w.-]{1,80}$/.test(k) ? k : quoteBounded(k, 60));

/** zod's issues on one bounded line: the first three, keys quoted (they come from the file). */
export function describeIssues(error: z.ZodError): string {
  const shown = error.issues
    .slice(0, 3)
    .map((i) => (i.path.length ? `${i.path.map((k) => safeKey(String(k))).join('.')}: ${i.message}` : i.message))
    .join('; ');
  return error.issues.length > 3 ? `${shown}; and ${error.issues.length - 3} more` : shown;
}

/**
 * Parse info-file bytes. Strict UTF-8 and no BOM skipping, as Python's json.load on a text file
 * opened as UTF-8 would refuse them too. Throws ECOW_INFO_INVALID naming `source` and the reason.
 */
export function parseInfo(bytes: Uint8Array, source: string): VolumeInfo {
  const invalid = (reason: string, cause?: unknown): never => {
    throw new CowError('ECOW_INFO_INVALID', `info file ${source}: ${reason}`, { cause });
  };
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch (e) {
    return invalid('not valid UTF-8', e);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    return invalid(`not JSON (${(e as Error).message})`, e);
  }
  if (typeof raw === 'object' && raw !== null && !Array.isArray(raw) && !Object.hasOwn(raw, 'active')) {
    return invalid('no "active" key (the file the volume uses now)');
  }
  const info = wellFormedInfo(raw);
  if (info) return info;
  const result = volumeInfoSchema().safeParse(raw);
  if (!result.success) return invalid(describeIssues(result.error), result.error);
  return result.data;
}

/**
 * Read `volume-<vol>.info`. A missing file is `null` (no snapshots, active = `volume-<vol>`);
 * anything else that is not a valid info file is ECOW_INFO_INVALID, never an empty default —
 * guessing would let a later write drop every snapshot.
 */
export async function readInfo(dir: string, volumeId: string): Promise<VolumeInfo | null> {
  const file = infoPath(dir, volumeId);
  const bytes = readSmallFile(file, MAX_INFO_BYTES, 'info file');
  return bytes === null ? null : parseInfo(bytes, file);
}

/** Python's str ordering: by code point (JS sort compares UTF-16 units, which differs above U+FFFF). */
function compareCodePoints(a: string, b: string): number {
  let i = 0;
  while (i < a.length && i < b.length) {
    const ca = a.codePointAt(i)!;
    const cb = b.codePointAt(i)!;
    if (ca !== cb) return ca - cb;
    i += ca > 0xffff ? 2 : 1; // equal code points have equal widths, so one index serves both
  }
  return (a.length - i) - (b.length - i);
}

const SHORT_ESCAPES: Record<string, string> = {
  '"': '\\"',
  '\\': '\\\\',
  '\b': '\\b',
  '\f': '\\f',
  '\n': '\\n',
  '\r': '\\r',
  '\t': '\\t',
};

/**
 * Python's json encoder with ensure_ascii=True: `"` and `\` and the five short escapes, every
 * other UTF-16 unit outside 0x20..0x7e as `\uxxxx` (lowercase; non-BMP characters therefore
 * become surrogate pairs, lone surrogates stay lone), everything else verbatim.
 */
function pyJsonString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const ch = s[i];
    const short = SHORT_ESCAPES[ch];
    if (short !== undefined) out += short;
    else if (c < 0x20 || c > 0x7e) out += `\\u${c.toString(16).padStart(4, '0')}`;
    else out += ch;
  }
  return out + '"';
}

/**
 * Byte-identical to Python's `json.dump(info, f, indent=1, sort_keys=True)`: keys sorted by code
 * point, one-space indent, separators `,` and `: ` (no trailing spaces), ASCII only, no trailing
 * newline. Written by hand because JS objects put integer-like keys first whatever the insertion
 * order, and JSON.stringify neither escapes non-ASCII nor sorts by code point.
 */
export function serializeInfo(info: VolumeInfo): string {
  const checked = wellFormedInfo(info) ? undefined : volumeInfoSchema().safeParse(info);
  if (checked && !checked.success) {
    throw new CowError('ECOW_BAD_ARGUMENT', `invalid volume info: ${describeIssues(checked.error)}`, {
      cause: checked.error,
    });
  }
  const keys = Object.keys(info).sort(compareCodePoints);
  if (keys.length === 0) return '{}';
  return `{\n${keys.map((k) => ` ${pyJsonString(k)}: ${pyJsonString(info[k])}`).join(',\n')}\n}`;
}

/**
 * Replace `volume-<vol>.info` atomically and durably: a crash at any instant leaves either the
 * old file or the new one, complete. On failure before the rename the temp file is removed and
 * the old file is untouched.
 */
export async function writeInfo(dir: string, volumeId: string, info: VolumeInfo, beforeRename?: () => void, mode?: number): Promise<void> {
  const content = serializeInfo(info); // validate before touching the disk
  await writeFileAtomic(dir, path.basename(infoPath(dir, volumeId)), infoTempPrefix(volumeId), content, 'info file', beforeRename, mode);
}
