// Small argument parsers shared by the CLI commands, following qemu's own rules so that command
// lines written for qemu-img / qemu-io mean the same thing here:
//  - sizes as qemu_strtosz (../size.ts, re-exported here);
//  - option lists as QemuOpts: `key=value,key=value`, `,,` for a literal comma, a bare `key`
//    meaning `key=on`;
//  - booleans as qapi: on/yes/true/y and off/no/false/n;
//  - pattern bytes as qemu-io: strtol base 0 (decimal, 0x-hex, 0-octal), 0..255.
// Every error is a CowError ECOW_BAD_ARGUMENT naming the argument.
import { CowError } from '../errors.js';
import { badArgument as bad } from '../size.js';

export { parseSize, parseSizeBig } from '../size.js';

/** A plain non-negative integer (decimal or 0x-hex), no suffix. */
export function parseCount(text: string, what: string): number {
  if (!/^(0[xX][0-9a-fA-F]+|[0-9]+)$/.test(text)) throw bad(what, text, 'expected a non-negative integer');
  const v = BigInt(text);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(what, text, 'too large');
  return Number(v);
}

/** A qapi boolean: on/yes/true/y or off/no/false/n. */
export function parseBool(text: string, what: string): boolean {
  if (['on', 'yes', 'true', 'y'].includes(text)) return true;
  if (['off', 'no', 'false', 'n'].includes(text)) return false;
  throw bad(what, text, "expected 'on' or 'off'");
}

/** A pattern byte as qemu-io's parse_pattern: strtol base 0, 0..255. */
export function parsePatternByte(text: string): number {
  const m = /^\s*\+?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(text);
  if (!m) throw new CowError('ECOW_BAD_ARGUMENT', `${text} is not a valid pattern byte`);
  const t = m[1];
  const v = /^0[xX]/.test(t) ? parseInt(t.slice(2), 16) : t.length > 1 && t.startsWith('0') ? parseInt(t, 8) : parseInt(t, 10);
  if (!(v >= 0 && v <= 0xff)) throw new CowError('ECOW_BAD_ARGUMENT', `${text} is not a valid pattern byte`);
  return v;
}

/**
 * A QemuOpts list (`-o key=value,key2=value2`): `,,` is a literal comma in a value, a bare `key`
 * means `key=on`. Keys are returned in order; a repeated key keeps its last value (as qemu does).
 */
export function parseOptionList(text: string, what = '-o'): Map<string, string> {
  const out = new Map<string, string>();
  const items: string[] = [];
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === ',') {
      if (text[i + 1] === ',') {
        cur += ',';
        i++;
        continue;
      }
      items.push(cur);
      cur = '';
      continue;
    }
    cur += c;
  }
  items.push(cur);
  for (const item of items) {
    const eq = item.indexOf('=');
    const key = eq < 0 ? item : item.slice(0, eq);
    const value = eq < 0 ? 'on' : item.slice(eq + 1);
    if (!/^[A-Za-z0-9_.-]+$/.test(key)) throw bad(`${what} option list`, text, `empty or malformed option name "${key}"`);
    out.set(key, value);
  }
  return out;
}

/** Several `-o` lists merged, later ones overriding earlier ones (qemu-img accepts `-o` repeatedly). */
export function mergeOptionLists(lists: readonly string[], what = '-o'): Map<string, string> {
  const out = new Map<string, string>();
  for (const l of lists) for (const [k, v] of parseOptionList(l, what)) out.set(k, v);
  return out;
}

/** Collector for commander options that may repeat (`-c A -c B`). */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/**
 * Split a qemu-io command line into words: blanks separate words, double or single quotes group
 * (as qemu's breakline).
 */
export function splitWords(line: string): string[] {
  const words: string[] = [];
  let cur = '';
  let inWord = false;
  let quote = '';
  for (const c of line) {
    if (quote) {
      if (c === quote) quote = '';
      else cur += c;
      continue;
    }
    if (c === '"' || c === "'") {
      quote = c;
      inWord = true;
      continue;
    }
    if (c === ' ' || c === '\t') {
      if (inWord) words.push(cur);
      cur = '';
      inWord = false;
      continue;
    }
    cur += c;
    inWord = true;
  }
  if (quote) throw new CowError('ECOW_BAD_ARGUMENT', `unterminated quote in "${line}"`);
  if (inWord) words.push(cur);
  return words;
}

/**
 * Human byte count as qemu's cvtstr: `512 bytes`, `4 KiB`, `1.500 KiB`.
 */
export function humanBytes(value: number): string {
  const units: [number, string][] = [
    [2 ** 60, 'EiB'],
    [2 ** 50, 'PiB'],
    [2 ** 40, 'TiB'],
    [2 ** 30, 'GiB'],
    [2 ** 20, 'MiB'],
    [2 ** 10, 'KiB'],
  ];
  for (const [size, name] of units) {
    if (value >= size) return `${trimZeros((value / size).toFixed(3))} ${name}`;
  }
  return `${trimZeros(value.toFixed(3))} bytes`;
}

function trimZeros(s: string): string {
  return s.endsWith('.000') ? s.slice(0, -4) : s;
}
