// Every CLI example of the README runs: each line of a ```sh block that starts with `cowchain `,
// in order, as the built bin (what the `cowchain` bin runs) in one empty directory, exits 0 with
// no error line. An example that drifts from the code fails here.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { splitWords } from '../../src/cli/args.js';
import { ROOT } from '../support/bundle.js';
import { cliProcess } from '../support/cli.js';
import { expectClean, requireQemu, tmpDir } from '../support/qemu.js';
import { Verdicts } from '../support/verdicts.js';

requireQemu();

/** The `cowchain …` lines of the README's ```sh blocks, in order. */
function readmeExamples(): string[] {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const lines: string[] = [];
  for (const block of readme.matchAll(/^```sh\n([\s\S]*?)^```$/gm)) {
    for (const line of block[1].split('\n')) if (line.startsWith('cowchain ')) lines.push(line.trim());
  }
  return lines;
}

describe('the README', () => {
  const dir = tmpDir('cowchain-readme-');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const verdicts = new Verdicts();

  it('has CLI examples, and each of them runs', () => {
    const examples = readmeExamples();
    expect(examples.length, 'no `cowchain …` line in a ```sh block of README.md').toBeGreaterThan(5);
    for (const example of examples) {
      const r = cliProcess(splitWords(example).slice(1), dir);
      expect(r.status, `${example}\n${r.stderr}`).toBe(0);
      expect(r.stderr, example).not.toMatch(/^cowchain: (ECOW_|warning)/m);
      // what the example wrote is an image qemu-img calls clean (asked once per file and bytes:
      // most examples leave the images before them as they were)
      for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.qcow2'))) verdicts.once('check', [path.join(dir, f)], () => expectClean(path.join(dir, f)));
    }
  });
});
