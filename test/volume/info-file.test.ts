import { spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import fsSync from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  infoPath,
  infoTempPrefix,
  parseInfo,
  readInfo,
  serializeInfo,
  writeInfo,
  type VolumeInfo,
} from '../../src/volume/info-file.js';
import { VolumeInfoSchema } from '../../src/volume/schemas.js';
import { rejection } from '../support/errors.js';

const VOL = '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d';
const SNAP = '12345678-9abc-4def-8123-456789abcdef';
const SNAP2 = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee';
const BASE = `volume-${VOL}`;

const hasPython = spawnSync('python3', ['-c', 'import json'], { stdio: 'ignore' }).status === 0;

/** Python is the referee of Cinder's byte format: without it these tests fail, never skip. */
function requirePython(): void {
  if (!hasPython) throw new Error('python3 is required to compare with Cinder\'s json.dump output');
}

/**
 * Have real Python write each info exactly as Cinder's remotefs driver does
 * (`with open(path, 'w') as f: json.dump(info, f, indent=1, sort_keys=True)`) and return the
 * bytes. Inputs travel as JSON (JSON.stringify escapes lone surrogates, Python decodes them).
 */
async function pythonDump(tmp: string, infos: Record<string, string>[]): Promise<Buffer[]> {
  const input = path.join(tmp, 'py-input.json');
  await fs.writeFile(input, JSON.stringify(infos), 'utf8');
  const script = [
    'import json, os, sys',
    'infos = json.load(open(sys.argv[1], encoding="utf-8"))',
    'for i, info in enumerate(infos):',
    '    with open(os.path.join(sys.argv[2], "py-%d" % i), "w") as f:',
    '        json.dump(info, f, indent=1, sort_keys=True)',
  ].join('\n');
  const r = spawnSync('python3', ['-c', script, input, tmp], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return Promise.all(infos.map((_, i) => fs.readFile(path.join(tmp, `py-${i}`))));
}

let tmp: string;
beforeEach(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'cowchain-info-'));
});
afterEach(async () => {
  vi.restoreAllMocks();
  await fs.rm(tmp, { recursive: true, force: true });
});

const tempFiles = async (dir: string) => (await fs.readdir(dir)).filter((n) => n.startsWith(infoTempPrefix(VOL)));

describe('infoPath', () => {
  it('is volume-<vol>.info in the directory, and refuses bad volume ids', () => {
    expect(infoPath('/srv/share', VOL)).toBe(`/srv/share/volume-${VOL}.info`);
    expect(() => infoPath('/srv/share', '../../etc/x')).toThrow(/ECOW_BAD_ARGUMENT/);
  });
});

describe('serializeInfo', () => {
  it('matches the documented Cinder layout exactly', () => {
    const info = { [SNAP2]: `${BASE}.${SNAP2}`, active: `${BASE}.${SNAP2}`, [SNAP]: `${BASE}.${SNAP}` };
    expect(serializeInfo(info)).toBe(
      `{\n "${SNAP}": "${BASE}.${SNAP}",\n "${SNAP2}": "${BASE}.${SNAP2}",\n "active": "${BASE}.${SNAP2}"\n}`,
    );
    expect(serializeInfo({ active: BASE })).toBe(`{\n "active": "${BASE}"\n}`);
  });

  it('sorts by code point, not by JS object order or UTF-16 units', () => {
    // JS objects list integer-like keys first; Python sorts them as strings ("10" < "9" < "A").
    const info = { active: 'a', b: 'b', '9': 'n9', '10': 'n10', A: 'A', '\uffff': 'hi', '\u{1f600}': 'astral' };
    const keys = serializeInfo(info)
      .split('\n')
      .slice(1, -1)
      .map((line) => JSON.parse(`{${line.replace(/,$/, '')}}`))
      .map((o: Record<string, string>) => Object.keys(o)[0]);
    // U+FFFF < U+1F600 by code point, although its UTF-16 unit 0xFFFF > 0xD83D.
    expect(keys).toEqual(['10', '9', 'A', 'active', 'b', '\uffff', '\u{1f600}']);
  });

  it('escapes like ensure_ascii=True: lowercase \\uxxxx, surrogate pairs, DEL, short escapes', () => {
    const s = serializeInfo({ active: 'é日😀\u007f"\\\b\f\n\r\t\u0001\u001f ~', '\ud800': 'lone' });
    expect(s).toBe(
      '{\n "active": "\\u00e9\\u65e5\\ud83d\\ude00\\u007f\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001f ~",\n "\\ud800": "lone"\n}',
    );
    expect(/^[\x20-\x7e\n]*$/.test(s)).toBe(true);
  });

  it('refuses to serialize an invalid info (ECOW_BAD_ARGUMENT)', () => {
    for (const bad of [{}, { active: '' }, { active: 'a/b' }, { active: BASE, [SNAP]: '..' }]) {
      expect(() => serializeInfo(bad as VolumeInfo), JSON.stringify(bad)).toThrow(/ECOW_BAD_ARGUMENT/);
    }
  });

  it('is byte-identical to Python json.dump(indent=1, sort_keys=True)', async () => {
    requirePython();
    const infos: Record<string, string>[] = [
      { active: BASE },
      { active: `${BASE}.${SNAP2}`, [SNAP2]: `${BASE}.${SNAP2}`, [SNAP]: `${BASE}.${SNAP}` },
      { active: `${BASE}.tmp-snap-${SNAP}`, [`tmp-snap-${SNAP}`]: `${BASE}.tmp-snap-${SNAP}`, [SNAP.toUpperCase()]: 'X' },
      { active: 'a', b: 'b', '9': 'n9', '10': 'n10', A: 'A', _: 'u', '\uffff': 'hi', '\u{1f600}': 'astral' },
      { active: 'é日😀\u007f"\\\b\f\n\r\t\u0001\u001f ~', 'clé': 'ünïcødé', '\ud800': 'lone \udfff', '': 'empty key' },
      { active: '\u2028\u2029\u00a0\u0080\u00ff\u0100\ufffe', '\u0000': 'nul key' },
    ];
    const py = await pythonDump(tmp, infos);
    infos.forEach((info, i) => expect(serializeInfo(info as VolumeInfo), `info #${i}`).toBe(py[i].toString('latin1')));
  });

  it('matches Python for random infos (property)', async () => {
    requirePython();
    const codePoint = fc.integer({ min: 0, max: 0x10ffff }).map((cp) => String.fromCodePoint(cp));
    const anyString = fc.string({ unit: fc.oneof(codePoint, fc.constantFrom('a', 'Z', '0', '-', '.', '"', '\\')) });
    const fileName = anyString.filter((s) => VolumeInfoSchema.safeParse({ active: s }).success);
    const infoArb = fc
      .tuple(fileName, fc.dictionary(anyString.filter((k) => k !== '__proto__'), fileName, { maxKeys: 8 }))
      .map(([active, rest]) => ({ ...rest, active }));
    const infos = fc.sample(infoArb, { numRuns: 300, seed: 20240601 });
    const py = await pythonDump(tmp, infos);
    infos.forEach((info, i) => {
      const ours = serializeInfo(info);
      expect(ours, JSON.stringify(info)).toBe(py[i].toString('latin1'));
      // And reading it back gives the same info (what Cinder wrote, we read).
      expect(parseInfo(Buffer.from(ours, 'utf8'), 'roundtrip')).toEqual(info);
    });
  });
});

describe('readInfo', () => {
  it('returns null when the file does not exist', async () => {
    expect(await readInfo(tmp, VOL)).toBeNull();
  });

  it('reads what Cinder writes (indented, sorted) and compact JSON too', async () => {
    const info = { active: `${BASE}.${SNAP}`, [SNAP]: `${BASE}.${SNAP}` };
    await fs.writeFile(infoPath(tmp, VOL), serializeInfo(info));
    expect(await readInfo(tmp, VOL)).toEqual(info);
    await fs.writeFile(infoPath(tmp, VOL), JSON.stringify(info) + '\n');
    expect(await readInfo(tmp, VOL)).toEqual(info);
  });

  it('reads a file written by Python/Cinder with non-ASCII content', async () => {
    requirePython();
    const info = { active: `${BASE}.${SNAP}`, [SNAP]: `${BASE}.${SNAP}`, 'clé😀': 'vålue' };
    const [bytes] = await pythonDump(tmp, [info]);
    await fs.writeFile(infoPath(tmp, VOL), bytes);
    expect(await readInfo(tmp, VOL)).toEqual(info);
  });

  const invalid: Array<[string, string | Buffer, RegExp]> = [
    ['empty file', '', /not JSON/],
    ['truncated JSON', '{\n "active": "volume-', /not JSON/],
    ['JSON array', '["active"]', /expected object/],
    ['JSON null', 'null', /expected object/],
    ['JSON string', '"volume-x"', /expected object/],
    ['no active key', `{"${SNAP}": "${BASE}.${SNAP}"}`, /active/],
    ['active not a string', '{"active": 1}', /active/],
    ['active a path', '{"active": "/etc/passwd"}', /active: .*"\/"/],
    ['active climbing out', '{"active": "../volume-x"}', /"\/"/],
    ['active is ..', '{"active": ".."}', /"\.\." or "\."|"\." or "\.\."/],
    ['active is .', '{"active": "."}', /"\."/],
    ['empty active', '{"active": ""}', /empty/],
    ['NUL in a name', '{"active": "volume-x\\u0000"}', /NUL/],
    ['snapshot mapped to a path', `{"active": "${BASE}", "${SNAP}": "sub/${BASE}"}`, new RegExp(`${SNAP}: .*"/"`)],
    ['snapshot mapped to null', `{"active": "${BASE}", "${SNAP}": null}`, new RegExp(SNAP)],
    ['__proto__ key', `{"active": "${BASE}", "__proto__": "x"}`, /__proto__/],
    ['UTF-8 BOM', `\ufeff{"active": "${BASE}"}`, /not JSON/],
    ['invalid UTF-8', Buffer.from([0x7b, 0x22, 0x61, 0xff, 0x22, 0x7d]), /UTF-8/],
  ];
  it.each(invalid)('rejects %s with ECOW_INFO_INVALID naming the path and the reason', async (_, content, reason) => {
    await fs.writeFile(infoPath(tmp, VOL), content);
    const err = await rejection(readInfo(tmp, VOL));
    expect(err.code).toBe('ECOW_INFO_INVALID');
    expect(err.message).toContain(infoPath(tmp, VOL));
    expect(err.message).toMatch(reason);
  });

  it('reports an unreadable info file (a directory at its name) as ECOW_INFO_INVALID', async () => {
    await fs.mkdir(infoPath(tmp, VOL));
    const err = await rejection(readInfo(tmp, VOL));
    expect(err.code).toBe('ECOW_INFO_INVALID');
    expect(err.message).toMatch(/is not a regular file \(a directory\)/);
  });
});

describe('writeInfo', () => {
  const info1 = { active: `${BASE}.${SNAP}`, [SNAP]: `${BASE}.${SNAP}` };
  const info2 = { active: `${BASE}.${SNAP2}`, [SNAP]: `${BASE}.${SNAP}`, [SNAP2]: `${BASE}.${SNAP2}` };

  it('creates the file with exactly serializeInfo bytes and leaves no temp file', async () => {
    await writeInfo(tmp, VOL, info1);
    expect(await fs.readFile(infoPath(tmp, VOL), 'utf8')).toBe(serializeInfo(info1));
    expect(await readInfo(tmp, VOL)).toEqual(info1);
    expect(await fs.readdir(tmp)).toEqual([`volume-${VOL}.info`]);
  });

  it('replaces an existing file', async () => {
    await writeInfo(tmp, VOL, info1);
    await writeInfo(tmp, VOL, info2);
    expect(await readInfo(tmp, VOL)).toEqual(info2);
    expect(await tempFiles(tmp)).toEqual([]);
  });

  it('writes the same bytes Python/Cinder writes', async () => {
    requirePython();
    const info = { ...info2, 'ünï': 'cødé😀' };
    await writeInfo(tmp, VOL, info);
    const [py] = await pythonDump(tmp, [info]);
    expect((await fs.readFile(infoPath(tmp, VOL))).equals(py)).toBe(true);
  });

  it('fsyncs the temp file before the rename and the directory after it', async () => {
    // atomic-file.ts: open, write, close and rename are synchronous; the fsyncs go to the pool
    const sync = vi.spyOn(fsSync, 'fsync');
    const rename = vi.spyOn(fsSync, 'renameSync');
    const open = vi.spyOn(fsSync, 'openSync');
    await writeInfo(tmp, VOL, info1);
    expect(rename).toHaveBeenCalledTimes(1);
    expect(sync).toHaveBeenCalledTimes(2);
    const [fileSync, dirSync] = sync.mock.invocationCallOrder;
    const [renameAt] = rename.mock.invocationCallOrder;
    expect(fileSync).toBeLessThan(renameAt);
    expect(dirSync).toBeGreaterThan(renameAt);
    // Each sync is on the descriptor opened just before it: the temp file's, then the directory's.
    expect(open.mock.calls.map((c) => c[0])).toEqual([expect.stringContaining(infoTempPrefix(VOL)), tmp]);
    expect(sync.mock.calls.map((c) => c[0])).toEqual(open.mock.results.map((r) => r.value));
  });

  it('leaves the old file untouched and removes the temp file when the rename fails', async () => {
    await writeInfo(tmp, VOL, info1);
    const before = await fs.readFile(infoPath(tmp, VOL));
    vi.spyOn(fsSync, 'renameSync').mockImplementationOnce(() => {
      throw Object.assign(new Error('injected'), { code: 'EIO' });
    });
    const err = await rejection(writeInfo(tmp, VOL, info2));
    expect(err.code).toBe('ECOW_IO');
    expect(err.message).toContain(infoPath(tmp, VOL));
    expect(err.message).toContain('EIO');
    expect((await fs.readFile(infoPath(tmp, VOL))).equals(before)).toBe(true);
    expect(await tempFiles(tmp)).toEqual([]);
  });

  it('leaves the old file untouched and removes the temp file when the fsync fails', async () => {
    await writeInfo(tmp, VOL, info1);
    const before = await fs.readFile(infoPath(tmp, VOL));
    const rename = vi.spyOn(fsSync, 'renameSync');
    vi.spyOn(fsSync, 'fsync').mockImplementationOnce(((_fd: number, callback: (e: NodeJS.ErrnoException | null) => void) => {
      callback(Object.assign(new Error('injected'), { code: 'ENOSPC' }));
    }) as typeof fsSync.fsync);
    const err = await rejection(writeInfo(tmp, VOL, info2));
    expect(err.code).toBe('ECOW_IO');
    expect(err.message).toContain('ENOSPC');
    expect(rename).not.toHaveBeenCalled();
    expect((await fs.readFile(infoPath(tmp, VOL))).equals(before)).toBe(true);
    expect(await fs.readdir(tmp)).toEqual([`volume-${VOL}.info`]);
  });

  it('fails cleanly on a real rename error (a non-empty directory at the info path)', async () => {
    await fs.mkdir(infoPath(tmp, VOL));
    await fs.writeFile(path.join(infoPath(tmp, VOL), 'keep'), 'x');
    const err = await rejection(writeInfo(tmp, VOL, info1));
    expect(err.code).toBe('ECOW_IO');
    expect(await fs.readFile(path.join(infoPath(tmp, VOL), 'keep'), 'utf8')).toBe('x');
    expect(await tempFiles(tmp)).toEqual([]);
  });

  it('validates before touching the disk', async () => {
    const err = await rejection(writeInfo(tmp, VOL, { active: '../escape' }));
    expect(err.code).toBe('ECOW_BAD_ARGUMENT');
    expect(await fs.readdir(tmp)).toEqual([]);
  });

  it('fails with ECOW_IO when the directory does not exist', async () => {
    const err = await rejection(writeInfo(path.join(tmp, 'missing'), VOL, info1));
    expect(err.code).toBe('ECOW_IO');
    expect(err.message).toContain('ENOENT');
  });

  it('concurrent writers never produce a torn file or leave temp files', async () => {
    const infos = Array.from({ length: 20 }, (_, i) => ({ active: `${BASE}.${SNAP}`, [SNAP]: `${BASE}.${SNAP}`, n: `v${i}` }));
    await Promise.all(infos.map((info) => writeInfo(tmp, VOL, info)));
    const final = await fs.readFile(infoPath(tmp, VOL), 'utf8');
    expect(infos.map((i) => serializeInfo(i))).toContain(final);
    expect(await tempFiles(tmp)).toEqual([]);
  });
});
