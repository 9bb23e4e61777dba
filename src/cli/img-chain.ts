// `img commit`, `img rebase`, `img stream`: operations that move data along a chain.
import { commitImage } from '../image/commit.js';
import { rebaseImage, streamImage } from '../image/rebase.js';
import { parseFormatOption, print } from './output.js';
import { withProgress } from './progress.js';

export interface CommitCliOptions {
  f?: string;
  b?: string;
  d?: boolean;
  p?: boolean;
  q?: boolean;
}

/** `img commit`. */
export function imgCommit(top: string, o: CommitCliOptions): void {
  withProgress(!!o.p && !o.q, (onProgress) => commitImage(top, { base: o.b, keepTop: o.d, format: parseFormatOption(o.f), onProgress }));
  if (!o.q) print('Image committed.');
}

export interface RebaseCliOptions {
  b: string;
  F?: string;
  u?: boolean;
  p?: boolean;
  q?: boolean;
}

/** `img rebase`. */
export function imgRebase(file: string, o: RebaseCliOptions): void {
  withProgress(!!o.p && !o.q, (onProgress) => rebaseImage(file, o.b, { unsafe: o.u, backingFormat: parseFormatOption(o.F), onProgress }));
}

export interface StreamCliOptions {
  b?: string;
  p?: boolean;
}

/** `img stream`. */
export function imgStream(file: string, o: StreamCliOptions): void {
  withProgress(!!o.p, (onProgress) => streamImage(file, { base: o.b ?? null, onProgress }));
}
