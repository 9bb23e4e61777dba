// The README's code is code: every ```ts block of README.md is type-checked (strict, against the
// built package through its exports) and run as it stands, each in its own Node process, in a
// scratch project where `cowchain` resolves to this checkout. A block that needs setup it does
// not show fails here. The README also points at nothing that is not published (no src/ paths).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from '../support/bundle.js';
import { consumerProject, explain, runTs, typecheck } from '../support/consumer-code.js';

const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const blocks = [...README.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m, i) => ({ file: `readme-${i + 1}.ts`, code: m[1], line: README.slice(0, m.index).split('\n').length }));
const project = consumerProject('cowchain-readme-');
afterAll(() => project.remove());
for (const b of blocks) fs.writeFileSync(path.join(project.dir, b.file), b.code);

describe('README.md', () => {
  it('leads with the driver: its first block runs the snapshot lifecycle, and one wires Nova', () => {
    expect(blocks.length).toBeGreaterThanOrEqual(4);
    for (const call of ['createVolume', 'createSnapshot', 'deleteSnapshot', 'createVolumeFromSnapshot', 'deleteVolume']) expect(blocks[0].code).toContain(`driver.${call}(`);
    expect(blocks.some((b) => b.code.includes('new NovaHypervisor(') && b.code.includes('startStatusServer('))).toBe(true);
  });

  it('points at nothing under src/ (not in the published package)', () => {
    expect(README.match(/\bsrc\/[\w./-]*/g) ?? []).toEqual([]);
  });

  it('every ts block type-checks against the built package', async () => {
    const r = await typecheck(project, blocks.map((b) => b.file));
    expect(r.status, `${blocks.map((b) => `${b.file}: README.md line ${b.line}`).join('\n')}\n${explain(r)}`).toBe(0);
  });

  for (const b of blocks) {
    it(`the block at README.md line ${b.line} runs`, async () => {
      const r = await runTs(project, b.file);
      expect(r.status, explain(r)).toBe(0);
    });
  }
});
