// Fresh clusters at the end of the file are written in 4 KiB blocks, all-zero blocks left as
// holes. With clusters under 4 KiB (qcow2 allows 512 B) the last block ends at the clusters' end:
// a whole 4 KiB block read past the engine's buffer and wrote the engine's heap (strings, other
// images' data) into the file, past the last cluster the image references. qemu-img check did
// not mind (nothing references those bytes); the file's length and bytes show it.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { commitImage } from '../../src/index.js';
import { qemuCheck, qemuImg, qemuIo, requireQemu, tmpDir } from '../support/qemu.js';

requireQemu();

describe('fresh clusters at the end of the file', () => {
  for (const cluster of [512, 1024, 2048, 4096]) {
    it(`${cluster}-byte clusters: a commit writes nothing past the base's last cluster, and the guest is the top's`, () => {
      const dir = tmpDir('cowchain-tail-', { memory: true });
      const base = path.join(dir, 'base.qcow2');
      const top = path.join(dir, 'top.qcow2');
      qemuImg(['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${cluster}`, base, '1M']);
      qemuImg(['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${cluster}`, '-b', base, '-F', 'qcow2', top]);
      // Data clusters, a zero-filled one and one more of data last, so that the file ends in data.
      qemuIo(top, ['write -P 0x11 8k 512', 'write -P 0 20k 512', `write -P 0x22 30k ${cluster}`], 'qcow2');
      commitImage(top, { keepTop: true });
      const { status, result } = qemuCheck(base);
      expect({ status, leaks: result['leaks'] ?? 0, corruptions: result['corruptions'] ?? 0 }).toEqual({ status: 0, leaks: 0, corruptions: 0 });
      // The file ends where its last cluster does (the end qemu-img check computes from the refcounts).
      expect(fs.statSync(base).size).toBe(result['image-end-offset']);
      expect(qemuImg(['compare', base, top], { ok: [0, 1] }).status).toBe(0);
    });
  }
});
