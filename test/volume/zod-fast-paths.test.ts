// The checks that let a volume command read and write its small files without zod (info-file.ts,
// format-record.ts, journal.ts, status.ts) and create an image (image/create.ts, the command
// line of `img create` in cli/img-create.ts) against the zod schemas they stand in for: over generated JSON
// they accept exactly what the schema accepts and return what it returns (key order included);
// of anything else they accept nothing the schema refuses.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { volumeInfoSchema, wellFormedInfo } from '../../src/volume/info-file.js';
import { formatRecordSchema, wellFormedRecord } from '../../src/volume/format-record.js';
import { journalSchema, wellFormedJournal } from '../../src/volume/journal.js';
import { VOLUME_STATUSES, checkStatus, volumeStatusSchema } from '../../src/volume/status.js';
import { createOptionsSchema, plainCreateOptions } from '../../src/image/create.js';
import { createCommandSchema, plainCreateCommand } from '../../src/cli/img-create.js';
import { codeOf } from '../support/errors.js';

/** Strings near the edges of what a file name or a key may be. */
const edgy = fc.oneof(
  fc.constantFrom('', '.', '..', '...', 'a/b', '/', 'a\0b', '\0', 'active', '__proto__', 'constructor', 'toString', '0', '10', 'format', 'version', 'raw', 'qcow2', 'RAW'),
  fc.string({ maxLength: 6 }),
  fc.string({ unit: fc.constantFrom('a', '.', '/', '\0', '-', 'é', '\u{1f600}'), maxLength: 4 }),
  fc.uuid().map((u) => `volume-${u}`),
);
const scalar = fc.oneof(edgy, fc.integer(), fc.constantFrom(1, 1.5, 0, -1, true, false, null));
const value = fc.oneof({ weight: 4, arbitrary: scalar }, { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) });

/** JSON text of an object (keys may repeat, `__proto__` included) or of another JSON value, parsed. */
const parsedJson = fc
  .oneof(
    { weight: 6, arbitrary: fc.array(fc.tuple(edgy, value), { maxLength: 6 }).map((pairs) => `{${pairs.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`) },
    { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v)) },
  )
  .map((text) => JSON.parse(text) as unknown);

/** What JSON.parse never returns: the checks leave those to the schema. */
const notJson: unknown[] = [
  Object.assign(Object.create(null), { active: 'a' }),
  new (class Info {
    active = 'a';
  })(),
  Object.assign(Object.create({ inherited: 'b' }), { active: 'a' }),
  Object.defineProperty({ active: 'a' }, 'hidden', { value: 'x/y', enumerable: false }),
  { active: 'a', [Symbol('s')]: 'b' },
  ['a'],
  undefined,
];

describe('wellFormedInfo', () => {
  it('accepts exactly what the info schema accepts of parsed JSON, and returns what it returns', () => {
    const schema = volumeInfoSchema();
    fc.assert(
      fc.property(
        // an object with an acceptable `active`, so that acceptance is not rare
        fc.tuple(parsedJson, fc.boolean(), edgy).map(([v, addActive, active]) => (addActive && typeof v === 'object' && v !== null && !Array.isArray(v) ? { ...v, active } : v)),
        (raw) => {
          const fast = wellFormedInfo(raw);
          const zod = schema.safeParse(raw);
          expect(fast !== undefined, JSON.stringify(raw)).toBe(zod.success);
          if (fast && zod.success) {
            expect(fast).toEqual(zod.data);
            expect(Object.keys(fast)).toEqual(Object.keys(zod.data));
          }
        },
      ),
      { numRuns: 3000, seed: 20261205 },
    );
  });

  it('accepts nothing the schema refuses among other values', () => {
    for (const raw of notJson) {
      const fast = wellFormedInfo(raw);
      if (fast) expect(volumeInfoSchema().parse(raw)).toEqual(fast);
    }
    expect(wellFormedInfo(notJson[0])).toBeUndefined(); // left to the schema
  });
});

describe('wellFormedRecord', () => {
  it('accepts exactly what the format record schema accepts of parsed JSON, with its format', () => {
    const schema = formatRecordSchema();
    const nearRecord = fc
      .tuple(fc.constantFrom(1, 2, '1', true), fc.constantFrom('raw', 'qcow2', 'RAW', 'vmdk', ''), parsedJson, fc.boolean())
      .map(([version, format, extra, plain]) => (plain ? { version, format } : typeof extra === 'object' && extra !== null ? { version, format, ...extra } : extra));
    fc.assert(
      fc.property(fc.oneof(nearRecord, parsedJson), (raw) => {
        const fast = wellFormedRecord(raw);
        const zod = schema.safeParse(raw);
        expect(fast !== undefined, JSON.stringify(raw)).toBe(zod.success);
        if (zod.success) expect(fast).toBe(zod.data.format);
      }),
      { numRuns: 3000, seed: 20261205 },
    );
    for (const raw of notJson) {
      const fast = wellFormedRecord(raw);
      if (fast) expect(schema.parse(raw).format).toBe(fast);
    }
  });
});

describe('wellFormedJournal', () => {
  it('accepts exactly what the journal schema accepts of parsed JSON, and writes the same JSON', () => {
    const schema = journalSchema();
    /** Mostly what the schema accepts, sometimes not: `good` 4 times in 5. */
    const mostly = <T, U>(good: fc.Arbitrary<T>, bad: fc.Arbitrary<U>) => fc.oneof({ weight: 4, arbitrary: good }, { weight: 1, arbitrary: bad });
    const name = mostly(fc.oneof(fc.constantFrom('volume-x', '.volume-x.aaaa'), fc.string({ minLength: 1, maxLength: 4 })), fc.constant(''));
    const optional = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined });
    const fence = optional(mostly(fc.stringMatching(/^[0-9]{1,20}$/), fc.constantFrom('123456789012345678901', '1a', '', ' 1', '1\n')));
    const accepted = optional(mostly(fc.boolean(), fc.constantFrom('true', 0, null)));
    const version = mostly(fc.constant(1), fc.constantFrom(2, '1'));
    const create = fc.record({
      version,
      op: fc.constant('create-snapshot'),
      snapshot: name,
      file: name,
      backing: name,
      phase: mostly(fc.constantFrom('overlay', 'hypervisor'), fc.constant('other')),
      accepted,
      fence,
    });
    const remove = fc.record({
      version,
      op: fc.constant('delete-snapshot'),
      snapshot: name,
      method: mostly(fc.constantFrom('commit', 'hypervisor-commit', 'hypervisor-pull'), fc.constant('pull')),
      file: name,
      base: name,
      higher: fc.oneof(name, fc.constant(null)),
      newBase: fc.oneof(name, fc.constant(null)),
      remap: mostly(fc.array(name, { maxLength: 3 }), fc.constant('x')),
      unlink: name,
      accepted,
      fence,
    });
    /** A journal with a key dropped, a key added, or its op switched; as JSON, parsed. */
    const near = fc
      .tuple(fc.oneof(create, remove), fc.nat(14), edgy, value, fc.constantFrom('keep', 'drop', 'add', 'switch'))
      .map(([j, i, key, v, how]) => {
        const o: Record<string, unknown> = { ...j };
        const keys = Object.keys(o);
        if (how === 'drop') delete o[keys[i % keys.length]];
        if (how === 'add') o[key] = v;
        if (how === 'switch') o.op = o.op === 'create-snapshot' ? 'delete-snapshot' : 'create-snapshot';
        return JSON.parse(JSON.stringify(o)) as unknown;
      });
    fc.assert(
      fc.property(fc.oneof({ weight: 8, arbitrary: near }, { weight: 1, arbitrary: parsedJson }), (raw) => {
        const fast = wellFormedJournal(raw);
        const zod = schema.safeParse(raw);
        expect(fast !== undefined, JSON.stringify(raw)).toBe(zod.success);
        if (fast && zod.success) expect(JSON.stringify(fast, null, 1)).toBe(JSON.stringify(zod.data, null, 1));
      }),
      { numRuns: 4000, seed: 20261205 },
    );
    for (const raw of notJson) {
      const fast = wellFormedJournal(raw);
      if (fast) expect(JSON.stringify(schema.parse(raw))).toBe(JSON.stringify(fast));
    }
  });
});

describe('plainCreateOptions', () => {
  it('accepts exactly what the create options schema accepts of options without encryption, with its defaults', () => {
    const schema = createOptionsSchema();
    const mostly = <T, U>(good: fc.Arbitrary<T>, bad: fc.Arbitrary<U>) => fc.oneof({ weight: 4, arbitrary: good }, { weight: 1, arbitrary: bad });
    const optional = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined, freq: 2 });
    const int = fc.oneof(fc.constantFrom(0, -1, 1.5, 2 ** 53, 2 ** 53 - 1, -0, NaN, Infinity, '1'), fc.integer());
    const options = fc.record(
      {
        format: optional(mostly(fc.constantFrom('raw', 'qcow2'), fc.constantFrom('vmdk', 'QCOW2', 1))),
        size: optional(mostly(fc.nat({ max: 2 ** 40 }), int)),
        backingFile: optional(mostly(fc.string({ minLength: 1, maxLength: 8 }), fc.constantFrom('', 'x'.repeat(1023), 'x'.repeat(1024), 7))),
        backingFormat: optional(mostly(fc.constantFrom('raw', 'qcow2'), fc.constantFrom('vmdk', null))),
        clusterSize: optional(mostly(fc.integer({ min: 9, max: 21 }).map((b) => 2 ** b), fc.oneof(int, fc.constantFrom(256, 4 << 20, 65535, 65536.5)))),
        refcountBits: optional(mostly(fc.constantFrom(1, 2, 4, 8, 16, 32, 64), fc.oneof(int, fc.constantFrom(3, 128, '16')))),
        compat: optional(mostly(fc.constantFrom('0.10', '1.1'), fc.constantFrom('1.0', 1.1, 3))),
        extendedL2: optional(mostly(fc.boolean(), fc.constantFrom(0, 'true', null))),
        compressionType: optional(mostly(fc.constantFrom('zlib', 'zstd'), fc.constantFrom('gzip', 'ZLIB'))),
        unsafe: optional(mostly(fc.boolean(), fc.constantFrom(1, 'false'))),
      },
      { requiredKeys: [] },
    );
    const extra = fc.oneof(fc.constant(undefined), fc.tuple(edgy, value), fc.constant(['encrypt', undefined] as const), fc.constant(['encrypt', { format: 'luks', keySecret: new Uint8Array([1]) }] as const));
    fc.assert(
      fc.property(options, extra, (base, added) => {
        const raw: Record<string, unknown> = { ...base };
        if (added) Object.defineProperty(raw, added[0], { value: added[1], enumerable: true, writable: true, configurable: true });
        const fast = plainCreateOptions(raw);
        const zod = schema.safeParse(raw);
        if (added?.[0] === 'encrypt' && added[1] !== undefined) expect(fast).toBeUndefined(); // left to the schema
        else expect(fast !== undefined, String(Object.entries(raw))).toBe(zod.success);
        if (fast && zod.success) expect(fast).toEqual(zod.data);
      }),
      { numRuns: 4000, seed: 20261205 },
    );
    for (const raw of notJson) expect(plainCreateOptions(raw)).toBeUndefined();
  });
});

describe('plainCreateCommand', () => {
  it('accepts exactly what the img create command line schema accepts, with its rules between options', () => {
    const schema = createCommandSchema();
    const mostly = <T, U>(good: fc.Arbitrary<T>, bad: fc.Arbitrary<U>) => fc.oneof({ weight: 5, arbitrary: good }, { weight: 1, arbitrary: bad });
    const optional = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined, freq: 2 });
    const int = fc.oneof(fc.constantFrom(0, -1, 1.5, 2 ** 53, NaN, '1'), fc.integer());
    const command = fc.record(
      {
        file: mostly(fc.constantFrom('a.qcow2', 'x'), fc.constantFrom('', 1)),
        format: mostly(fc.constantFrom('raw', 'qcow2'), fc.constantFrom('vmdk', undefined)),
        size: optional(mostly(fc.nat({ max: 2 ** 40 }), int)),
        backingFile: optional(mostly(fc.constantFrom('base.raw', 'b'), fc.constantFrom('', 'x'.repeat(1023), 'x'.repeat(1024)))),
        backingFormat: optional(mostly(fc.constantFrom('raw', 'qcow2'), fc.constant('vmdk'))),
        clusterSize: optional(mostly(fc.integer({ min: 9, max: 21 }).map((b) => 2 ** b), fc.oneof(int, fc.constantFrom(256, 4 << 20, 65535)))),
        refcountBits: optional(mostly(fc.constantFrom(1, 2, 4, 8, 16, 32, 64), fc.oneof(int, fc.constantFrom(3, 128)))),
        compat: optional(mostly(fc.constantFrom('0.10', '1.1'), fc.constant('v3'))),
        extendedL2: optional(mostly(fc.boolean(), fc.constant(1))),
        compressionType: optional(mostly(fc.constantFrom('zlib', 'zstd'), fc.constant('gzip'))),
        unsafe: optional(mostly(fc.boolean(), fc.constant('yes'))),
        encryptFormat: optional(mostly(fc.constant('luks'), fc.constant('aes'))),
        encryptKeySecret: optional(mostly(fc.constantFrom('sec0', 'k'), fc.constant(''))),
        encryptIterTime: optional(mostly(fc.integer({ min: 1, max: 600_000 }), fc.oneof(int, fc.constant(600_001)))),
      },
      { requiredKeys: [] },
    );
    const extra = fc.option(fc.tuple(edgy, value), { nil: undefined, freq: 8 });
    /** Half the command lines have their pairs made consistent, so that the rules often pass. */
    const tidy = (c: Record<string, unknown>): Record<string, unknown> => ({
      ...c,
      size: c.size ?? 1 << 20,
      backingFormat: c.backingFile === undefined || c.format === 'raw' ? undefined : (c.backingFormat ?? 'raw'),
      backingFile: c.format === 'raw' ? undefined : c.backingFile,
      encryptKeySecret: c.encryptFormat === undefined ? undefined : (c.encryptKeySecret ?? 'sec0'),
      compat: c.compat === '0.10' ? undefined : c.compat,
      extendedL2: c.extendedL2 && ((c.clusterSize as number | undefined) ?? 65536) >= 16384,
    });
    let accepted = 0;
    fc.assert(
      fc.property(command, fc.boolean(), extra, (generated, tidied, added) => {
        const raw: Record<string, unknown> = tidied ? tidy(generated) : { ...generated };
        if (added) Object.defineProperty(raw, added[0], { value: added[1], enumerable: true, writable: true, configurable: true });
        const fast = plainCreateCommand(raw);
        const zod = schema.safeParse(raw);
        expect(fast !== undefined, String(Object.entries(raw))).toBe(zod.success);
        if (fast && zod.success) {
          accepted++;
          expect(fast).toEqual(zod.data);
        }
      }),
      { numRuns: 4000, seed: 20261205 },
    );
    expect(accepted).toBeGreaterThan(50); // the generator reaches acceptance, not only refusals
  });
});

describe('checkStatus', () => {
  it('refuses as no status exactly what the status schema refuses', () => {
    const schema = volumeStatusSchema();
    const candidates: unknown[] = [...VOLUME_STATUSES, 'In-use', 'available ', '', 'in_use', null, 1, undefined, ['available'], { status: 'available' }];
    for (const status of candidates) {
      const code = codeOf(() => checkStatus('fsck', status, 'v'));
      expect(code === 'ECOW_BAD_ARGUMENT', String(status)).toBe(!schema.safeParse(status).success);
    }
  });
});
