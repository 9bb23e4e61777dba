// Sizes as qemu writes them on a command line (qemu_strtosz): decimal, optionally with a fraction
// when a suffix follows, or 0x-hex; an optional suffix b/k/M/G/T/P/E (any case, 1024-based);
// nothing else after it. Errors are CowError ECOW_BAD_ARGUMENT naming the argument.
import { CowError } from './errors.js';

const INT64_MAX = (1n << 63n) - 1n;

const SUFFIXES: Record<string, bigint> = {
  b: 1n,
  k: 1n << 10n,
  m: 1n << 20n,
  g: 1n << 30n,
  t: 1n << 40n,
  p: 1n << 50n,
  e: 1n << 60n,
};

/** ECOW_BAD_ARGUMENT: `invalid <what> "<text>": <hint>` (the CLI's argument parsers share it). */
export function badArgument(what: string, text: string, hint = ''): CowError {
  return new CowError('ECOW_BAD_ARGUMENT', `invalid ${what} "${text}"${hint ? `: ${hint}` : ''}`);
}

const SIZE_HINT = 'expected a number of bytes, optionally with a k, M, G, T, P or E suffix (1024-based)';

/**
 * A size as qemu_strtosz reads it, exactly (as a bigint, at most 2^63-1). `1.5k` is 1536, `1.3k`
 * is 1331 (the fraction is truncated to whole bytes); a fraction needs a suffix other than `b`.
 */
export function parseSizeBig(text: string, what = 'size'): bigint {
  const s = text.replace(/^\s+/, '');
  let value: bigint;
  let rest: string;
  const hex = /^0[xX]([0-9a-fA-F]+)(.*)$/.exec(s);
  if (hex) {
    value = BigInt('0x' + hex[1]);
    rest = hex[2];
    if (rest.startsWith('.')) throw badArgument(what, text, 'a hexadecimal number cannot have a fraction');
    let mul = 1n;
    if (rest.length > 0) {
      mul = SUFFIXES[rest.toLowerCase()] ?? 0n;
      if (mul === 0n) throw badArgument(what, text, SIZE_HINT);
    }
    value *= mul;
  } else {
    const dec = /^([0-9]+)(?:\.([0-9]*))?(.*)$/.exec(s);
    if (!dec) throw badArgument(what, text, SIZE_HINT);
    const [, whole, frac = '', suffix] = dec;
    let mul = 1n;
    if (suffix.length > 0) {
      mul = SUFFIXES[suffix.toLowerCase()] ?? 0n;
      if (mul === 0n) throw badArgument(what, text, SIZE_HINT);
    }
    const fracNonZero = /[1-9]/.test(frac);
    if (fracNonZero && mul === 1n) throw badArgument(what, text, 'a fraction needs a k, M, G, T, P or E suffix');
    value = BigInt(whole) * mul;
    if (fracNonZero) value += (BigInt(frac) * mul) / 10n ** BigInt(frac.length);
  }
  if (value > INT64_MAX) throw badArgument(what, text, 'larger than 2^63 - 1 bytes');
  return value;
}

/**
 * A size as qemu-img and the CLI read it (`10G`, `1.5k`, `0x1000`, `512`): see parseSizeBig; the
 * result must also be an exact JavaScript number (at most 2^53). ECOW_BAD_ARGUMENT names `what`.
 */
export function parseSize(text: string, what = 'size'): number {
  const v = parseSizeBig(text, what);
  if (v > BigInt(Number.MAX_SAFE_INTEGER) + 1n) throw badArgument(what, text, 'larger than 2^53 bytes');
  return Number(v);
}

