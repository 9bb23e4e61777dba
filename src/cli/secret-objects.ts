// The `--object secret,id=ID,file=PATH[,format=raw|base64]` arguments (secrets.ts describes the
// forms), checked with zod and read: its own module, so that a command without --object does not
// load zod for it.
import * as fs from 'node:fs';
import * as z from 'zod';
import { CowError } from '../errors.js';
import { parseOptionList } from './args.js';
import type { SecretObjects } from './secrets.js';

const SecretObjectSchema = z
  .object({
    qomType: z.literal('secret', { message: "only --object secret,… is supported" }),
    id: z.string().regex(/^[A-Za-z][A-Za-z0-9_.-]*$/, 'the secret id must start with a letter (letters, digits, _ . -)'),
    file: z.string().min(1, 'file= must name the file holding the secret'),
    format: z.enum(['raw', 'base64']).default('raw'),
  })
  .strict();

/** `--object` arguments → secrets by id, each read from its file now. */
export function parseSecretObjects(specs: readonly string[] | undefined): SecretObjects {
  const out = new Map<string, Uint8Array>();
  for (const spec of specs ?? []) {
    if (/(^|,)data=/.test(spec)) {
      throw new CowError('ECOW_BAD_ARGUMENT', '--object: data= would put the secret on the command line; give it in a file (file=PATH)');
    }
    const first = spec.indexOf(',');
    const qomType = first < 0 ? spec : spec.slice(0, first);
    const opts = first < 0 ? new Map<string, string>() : parseOptionList(spec.slice(first + 1), '--object');
    const r = SecretObjectSchema.safeParse({ qomType, ...Object.fromEntries(opts) });
    if (!r.success) {
      const keys = [...opts.keys()].join(',');
      throw new CowError('ECOW_BAD_ARGUMENT', `--object ${qomType} (${keys}): ${r.error.issues.map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message)).join('; ')}`);
    }
    const o = r.data;
    if (out.has(o.id)) throw new CowError('ECOW_BAD_ARGUMENT', `--object secret: id ${o.id} is given twice`);
    let bytes: Buffer;
    try {
      bytes = fs.readFileSync(o.file);
    } catch (e) {
      throw new CowError('ECOW_BAD_ARGUMENT', `--object secret,id=${o.id}: cannot read ${o.file}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`, { cause: e });
    }
    if (o.format === 'base64') bytes = Buffer.from(bytes.toString('latin1').trim(), 'base64');
    if (bytes.length === 0) throw new CowError('ECOW_BAD_ARGUMENT', `--object secret,id=${o.id}: ${o.file} is empty`);
    out.set(o.id, bytes);
  }
  return out;
}
