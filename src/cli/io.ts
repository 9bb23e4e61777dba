// `cowchain io`: a qemu-io-compatible subset for scripts and tests.
//
//   cowchain io [-f FMT] [-r] [-q] -c 'CMD' [-c 'CMD' …] FILE
//   cowchain io --object secret,id=ID,file=PATH --image-opts [-r] [-q] -c 'CMD' … \
//     driver=qcow2,file.filename=F,encrypt.key-secret=ID[,backing.encrypt.key-secret=ID]
//
//   write [-P PATTERN] [-z] [-q] OFF LEN   pattern write (default pattern 0xcd), or -z zero write
//   read  [-P PATTERN] [-q] OFF LEN        read; with -P verify every byte
//   discard [-q] OFF LEN                   qemu-io's discard (whole clusters only)
//
// OFF and LEN take qemu's size forms (decimal, 0x-hex, k/M/G/T/P/E suffixes, 1024-based).
// FILE (and its chain) is opened once — writable when a command writes and -r is not given — the
// commands run in order, then the image is flushed and closed. As in qemu-io a failing command does
// not stop the ones after it; every result line goes to stdout in qemu-io's words ("wrote N/N bytes
// at offset O", "Pattern verification failed at offset O, N bytes", "write failed: …"). When any
// command failed the exit status is 1 with one stderr line `cowchain: CODE: summary` (the code of
// the first failure; ECOW_IO for a pattern mismatch).
import { openImage, type KeySecrets } from '../image/open-chain.js';
import type { Image } from '../image/image.js';
import { CowError, isCowError, type CowErrorCode } from '../errors.js';
import { collect, humanBytes, parsePatternByte, parseSize, splitWords } from './args.js';
import { parseFormatOption } from './output.js';
import { imageArgument } from './secrets.js';
import { writeStdout } from './write.js';

/** qemu's BDRV_REQUEST_MAX_BYTES: the longest single qemu-io request. */
export const MAX_REQUEST_BYTES = 2147483136;
/** Host buffer for one step of a long request. */
const CHUNK = 4 << 20;
/** qemu-io's default pattern for `write` without -P. */
const DEFAULT_WRITE_PATTERN = 0xcd;

export type IoCommand =
  | { op: 'write'; off: number; len: number; pattern: number; zero: boolean; quiet: boolean }
  | { op: 'read'; off: number; len: number; pattern: number | undefined; quiet: boolean }
  | { op: 'discard'; off: number; len: number; quiet: boolean };

const ALIASES: Record<string, 'write' | 'read' | 'discard'> = { write: 'write', w: 'write', read: 'read', r: 'read', discard: 'discard', d: 'discard' };
const FLAGS: Record<string, { flags: string; withArg: string }> = {
  write: { flags: 'zq', withArg: 'P' },
  read: { flags: 'q', withArg: 'P' },
  discard: { flags: 'q', withArg: '' },
};
const USAGE: Record<string, string> = {
  write: 'write [-zq] [-P pattern] off len',
  read: 'read [-q] [-P pattern] off len',
  discard: 'discard [-q] off len',
};

function usage(op: string, why: string): CowError {
  return new CowError('ECOW_BAD_ARGUMENT', `${why} (usage: ${USAGE[op]})`);
}

/** Parse one -c command (getopt-style: options may be grouped, `-P0xab` or `-P 0xab`, `--` ends them). */
export function parseIoCommand(line: string): IoCommand {
  const words = splitWords(line);
  if (words.length === 0) throw new CowError('ECOW_BAD_ARGUMENT', 'empty command');
  const op = ALIASES[words[0]];
  if (!op) throw new CowError('ECOW_BAD_ARGUMENT', `command "${words[0]}" not found (supported: write, read, discard)`);
  const spec = FLAGS[op];
  const seen = new Set<string>();
  let pattern: string | undefined;
  const positional: string[] = [];
  for (let i = 1; i < words.length; i++) {
    const w = words[i];
    if (w === '--') {
      positional.push(...words.slice(i + 1));
      break;
    }
    if (!w.startsWith('-') || w.length === 1) {
      positional.push(w);
      continue;
    }
    for (let j = 1; j < w.length; j++) {
      const f = w[j];
      if (spec.withArg.includes(f)) {
        const arg = j + 1 < w.length ? w.slice(j + 1) : words[++i];
        if (arg === undefined) throw usage(op, `option -${f} requires an argument`);
        pattern = arg;
        seen.add(f);
        break;
      }
      if (!spec.flags.includes(f)) throw usage(op, `invalid option -- '${f}'`);
      seen.add(f);
    }
  }
  if (positional.length !== 2) throw usage(op, `bad argument count ${positional.length} to ${op}, expected 2 arguments`);
  const off = parseSize(positional[0], 'offset');
  const len = parseSize(positional[1], 'length');
  if (len > MAX_REQUEST_BYTES) throw new CowError('ECOW_BAD_ARGUMENT', `length cannot exceed ${MAX_REQUEST_BYTES}, given ${positional[1]}`);
  const quiet = seen.has('q');
  if (op === 'discard') return { op, off, len, quiet };
  if (op === 'read') return { op, off, len, pattern: pattern === undefined ? undefined : parsePatternByte(pattern), quiet };
  const zero = seen.has('z');
  if (zero && pattern !== undefined) throw usage(op, '-z and -P cannot be specified at the same time');
  return { op, off, len, pattern: pattern === undefined ? DEFAULT_WRITE_PATTERN : parsePatternByte(pattern), zero, quiet };
}

/** qemu's timestr for short runs: `00.00 sec`. */
function seconds(s: number): string {
  if (s >= 60) {
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    return `${h}:${String(m).padStart(2, '0')}:${(s % 60).toFixed(2).padStart(5, '0')}`;
  }
  return `${s.toFixed(2).padStart(5, '0')} sec`;
}

/** The two lines qemu-io prints for a completed request. */
function report(verb: string, off: number, len: number, elapsed: number): string[] {
  const t = Math.max(elapsed, 1e-6);
  return [
    `${verb} ${len}/${len} bytes at offset ${off}`,
    `${humanBytes(len)}, 1 ops; ${seconds(elapsed)} (${humanBytes(len / t)}/sec and ${(1 / t).toFixed(4)} ops/sec)`,
  ];
}

export interface IoFailure {
  command: string;
  code: CowErrorCode;
  message: string;
}

export interface IoResult {
  /** Lines for stdout, in order. */
  lines: string[];
  failures: IoFailure[];
}

function checkRange(img: Image, c: IoCommand): void {
  const size = img.virtualSize;
  if (c.off + c.len > size) {
    throw new CowError('ECOW_RANGE', `${c.op} of ${c.len} bytes at offset ${c.off} lies outside the virtual size ${size}`);
  }
}

function execute(img: Image, c: IoCommand, out: string[], globalQuiet: boolean): string | undefined {
  // A range error is found here, before the engine sees the request: a failed engine write poisons
  // the image (it is then abandoned unflushed), and the earlier commands' writes must survive.
  checkRange(img, c);
  const started = process.hrtime.bigint();
  let mismatch: string | undefined;
  if (c.op === 'write') {
    if (c.zero) {
      if (c.len > 0) img.writeZeroes(c.off, c.len);
    } else {
      const buf = new Uint8Array(Math.min(CHUNK, c.len)).fill(c.pattern);
      for (let done = 0; done < c.len; ) {
        const n = Math.min(buf.length, c.len - done);
        img.write(c.off + done, n === buf.length ? buf : buf.subarray(0, n));
        done += n;
      }
    }
  } else if (c.op === 'read') {
    for (let done = 0; done < c.len; ) {
      const n = Math.min(CHUNK, c.len - done);
      const data = img.read(c.off + done, n);
      if (c.pattern !== undefined && mismatch === undefined && data.some((b) => b !== c.pattern)) {
        mismatch = `Pattern verification failed at offset ${c.off}, ${c.len} bytes`;
      }
      done += n;
    }
  } else if (c.len > 0) {
    img.discard(c.off, c.len);
  }
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  if (mismatch) out.push(mismatch);
  if (!c.quiet && !globalQuiet) out.push(...report(c.op === 'write' ? 'wrote' : c.op === 'read' ? 'read' : 'discard', c.off, c.len, elapsed));
  return mismatch;
}

export interface IoOptions {
  format?: string;
  /** Open read-only even when a command writes (the writes then fail with ECOW_READ_ONLY). */
  readOnly?: boolean;
  /** Read while another process writes (-U): no image locks; refused with writes. */
  forceShare?: boolean;
  /** No report lines (failures are still printed). */
  quiet?: boolean;
  /** Called with each stdout line as soon as it is known (default: collected only). */
  onLine?: (line: string) => void;
  /** Key secrets of an encrypted image (and its chain), by depth, as openImage takes them. */
  keySecrets?: KeySecrets;
}

/** Run qemu-io-style commands on one image, opened once; flushes and closes it at the end. */
export function runIo(file: string, commands: readonly string[], options: IoOptions = {}): IoResult {
  const lines: string[] = [];
  const failures: IoFailure[] = [];
  const emit = (l: string[]) => {
    for (const line of l) {
      lines.push(line);
      options.onLine?.(line);
    }
  };
  const fail = (command: string, verb: string, e: unknown) => {
    const code: CowErrorCode = isCowError(e) ? e.code : 'ECOW_INTERNAL';
    const full = (e as Error)?.message ?? String(e);
    const message = full.startsWith(`${code}: `) ? full.slice(code.length + 2) : full;
    failures.push({ command, code, message });
    emit([`${verb} failed: ${code}: ${message}`]);
  };
  const parsed = commands.map((text) => {
    try {
      return { text, cmd: parseIoCommand(text) };
    } catch (e) {
      return { text, error: e };
    }
  });
  const writes = parsed.some((p) => p.cmd && p.cmd.op !== 'read');
  const writable = writes && !options.readOnly;
  if (writable && options.forceShare) throw new CowError('ECOW_BAD_ARGUMENT', `-U (force-share) can only be used with read-only images: add -r, or drop the writes`);
  const img = openImage(file, { format: parseFormatOption(options.format), writable, readLocks: !options.forceShare, keySecrets: options.keySecrets });
  try {
    // Every command moves data, which an encrypted image cannot without its key: refused before
    // the first, as qemu-io refuses to open it (a failed write would also poison the image).
    if (img.encrypted && !options.keySecrets?.(0, img.filename)) {
      throw new CowError('ECOW_KEY_REQUIRED', `${file} is encrypted (LUKS): give its key with --object secret,id=ID,file=PATH and --image-opts driver=qcow2,file.filename=${file},encrypt.key-secret=ID`);
    }
    for (const p of parsed) {
      if (!p.cmd) {
        fail(p.text, splitWordsSafe(p.text)[0] ?? 'command', p.error);
        continue;
      }
      const out: string[] = [];
      try {
        const mismatch = execute(img, p.cmd, out, options.quiet ?? false);
        emit(out);
        if (mismatch) failures.push({ command: p.text, code: 'ECOW_IO', message: mismatch });
      } catch (e) {
        emit(out);
        fail(p.text, p.cmd.op, e);
      }
    }
    if (img.writable) {
      try {
        img.flush();
      } catch (e) {
        fail('flush', 'flush', e);
      }
    }
  } finally {
    img.close();
  }
  return { lines, failures };
}

function splitWordsSafe(text: string): string[] {
  try {
    return splitWords(text);
  } catch {
    return [];
  }
}

export interface IoCliOptions {
  c: string[];
  f?: string;
  r?: boolean;
  q?: boolean;
  forceShare?: boolean;
  /** `--object secret,…` specs and `--image-opts` (FILE is then an option string): secrets.ts. */
  object?: string[];
  imageOpts?: boolean;
}

/** `cowchain io`: the lines as they come, then one error for the failed commands. */
export async function ioCommand(file: string, o: IoCliOptions): Promise<void> {
  const image = await imageArgument(file, o);
  const result = runIo(image.file, o.c, { format: image.format, readOnly: o.r, quiet: o.q, forceShare: o.forceShare, keySecrets: image.keySecrets, onLine: (l) => writeStdout(l + '\n') });
  if (result.failures.length > 0) {
    const first = result.failures[0];
    throw new CowError(first.code, `${result.failures.length} of ${o.c.length} commands failed; first: "${first.command}": ${first.message}`);
  }
}
