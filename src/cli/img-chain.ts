// `img commit`, `img rebase`, `img stream`: operations that move data along a chain.
import { commitImage } from '../image/commit.js';
import { rebaseImage, streamImage } from '../image/rebase.js';
import { parseFormatOption, print } from './output.js';
import { progressBar } from './progress.js';

export interface CommitCliOptions {
  b?: string;
  d?: boolean;
  p?: boolean;
  q?: boolean;
}

/** `img commit`. */
export function imgCommit(top: string, o: CommitCliOptions): void {
  const bar = progressBar(!!o.p && !o.q, 'commit');
  try {
    commitImage(top, { base: o.b, keepTop: o.d, onProgress: bar.onProgress });
  } finally {
    bar.stop();
  }
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
  const bar = progressBar(!!o.p && !o.q, 'rebase');
  try {
    rebaseImage(file, o.b, { unsafe: o.u, backingFormat: parseFormatOption(o.F), onProgress: bar.onProgress });
  } finally {
    bar.stop();
  }
}

export interface StreamCliOptions {
  b?: string;
  p?: boolean;
}

/** `img stream`. */
export function imgStream(file: string, o: StreamCliOptions): void {
  const bar = progressBar(!!o.p, 'stream');
  try {
    streamImage(file, { base: o.b ?? null, onProgress: bar.onProgress });
  } finally {
    bar.stop();
  }
}
