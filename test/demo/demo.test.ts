// `npm start` must keep working: the demo replays the seed and exits 0 only if every check passed.
import * as path from 'node:path';
import { expect, it } from 'vitest';
import { runProcess } from '../support/child.js';

it('the demo (npm start) runs the seed lifecycle detached and attached and passes every check', async () => {
  const r = await runProcess(process.execPath, [path.resolve('dist/demo/main.js')], { timeoutMs: 600_000 });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/verdict: all \d+ checks passed/);
  // Both of the seed's paths are shown: the detached commit-down and Nova's live merge.
  expect(r.stdout).toContain('info:  { "active": "volume-1234.bbbb", "bbbb": "volume-1234.bbbb" }');
  expect(r.stdout).toContain("info file is { 'active': 'volume-1234.bbbb' }, as the seed draws it");
  expect(r.stdout).not.toContain('FAIL');
});
