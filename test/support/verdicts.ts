/**
 * A referee's verdict — qemu-img check, compare, map, info — depends on nothing but the names and
 * bytes of the files it reads. Sweeps reach the same files again and again (fault points after
 * which recovery or a re-run leaves the same bytes, crashes that left the template's files): a
 * verdict already given on the very same bytes is not asked for again. Each qemu-img start costs
 * tens of ms of CPU; hashing a few MiB (sha256, in hardware) a few.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Hashes each file once while the files it is asked about do not change (one state judged). */
export type Digests = (file: string) => string;

export class Verdicts {
  private readonly passed = new Set<string>();
  private readonly buffers = new WeakMap<Buffer, string>();

  /** A hasher for one state of the files: make a new one after anything may have written them. */
  state(): Digests {
    const seen = new Map<string, string>();
    return (file) => {
      let h = seen.get(file);
      if (h === undefined) seen.set(file, (h = crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex')));
      return h;
    };
  }

  /** The hash of a buffer (memoized by identity: a recorded content is hashed once). */
  of(b: Buffer): string {
    let h = this.buffers.get(b);
    if (h === undefined) this.buffers.set(b, (h = crypto.createHash('sha256').update(b).digest('hex')));
    return h;
  }

  /**
   * Run `check` (it throws on a bad verdict) unless it passed before on `files` (every file the
   * referee reads, by path) with the same names and bytes. `what` names the check and whatever
   * else it depends on (the content it compares with, a reference file that never changes).
   */
  once(what: string, files: string[], check: () => void, digests: Digests = this.state()): void {
    const key = [what, ...files.map((f) => `${path.basename(f)} ${digests(f)}`)].join('\n');
    if (this.passed.has(key)) return;
    check();
    this.passed.add(key);
  }
}
