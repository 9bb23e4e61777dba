// FileBackend's background write-backs: past 128 MiB written it opens a second descriptor of the
// same file and starts fdatasyncs there without waiting. Data, flush and close must be exactly as
// without them, and no descriptor may outlive the backend once the event loop has run.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FileBackend } from '../../src/engine/backend.js';

const dir = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'cowchain-fb-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const MiB = 1 << 20;
/** The descriptor count comes from /proc/self/fd: these cases are Linux's. */
const LINUX = process.platform === 'linux';
const openDescriptors = () => fs.readdirSync('/proc/self/fd').length;
const turn = () => new Promise((r) => setTimeout(r, 50));

describe('FileBackend write-backs', () => {
  if (LINUX) it('300 MiB written in 1 MiB pieces read back exactly; after close and a turn of the event loop no descriptor is left', async () => {
    const file = path.join(dir, 'big');
    const before = openDescriptors();
    const b = new FileBackend(file, true, true);
    const chunk = new Uint8Array(MiB);
    for (let i = 0; i < 300; i++) {
      chunk.fill(i & 0xff);
      b.write(chunk, i * MiB);
    }
    // A write-back holds a second descriptor of the file while it runs.
    const during = fs.readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return fs.readlinkSync(`/proc/self/fd/${fd}`) === file;
      } catch {
        return false;
      }
    }).length;
    expect(during).toBe(2);
    b.flush();
    b.close();
    await turn();
    expect(openDescriptors()).toBe(before);
    const got = fs.readFileSync(file);
    expect(got.length).toBe(300 * MiB);
    for (let i = 0; i < 300; i++) expect(got[i * MiB] === (i & 0xff) && got[i * MiB + MiB - 1] === (i & 0xff), `MiB ${i}`).toBe(true);
  });

  if (LINUX) it('a file renamed away before the first write-back gets none (only the final flush), and still reads back', async () => {
    const file = path.join(dir, 'moved');
    const before = openDescriptors();
    const b = new FileBackend(file, true, true);
    fs.renameSync(file, `${file}.2`);
    fs.writeFileSync(file, 'someone else'); // the path now names another file: never synced for us
    const chunk = new Uint8Array(MiB).fill(7);
    for (let i = 0; i < 200; i++) b.write(chunk, i * MiB);
    expect(openDescriptors()).toBe(before + 1);
    b.flush();
    b.close();
    await turn();
    expect(openDescriptors()).toBe(before);
    expect(fs.statSync(`${file}.2`).size).toBe(200 * MiB);
    expect(fs.readFileSync(file, 'utf8')).toBe('someone else');
  });
});
