// `img commit`, `img rebase`, `img stream`: operations that move data along a chain.
import { commitImage } from '../image/commit.js';
import { rebaseImage, streamImage } from '../image/rebase.js';
import { parseFormatOption, print } from './output.js';
import { withProgress } from './progress.js';
import { imageArgument } from './secrets.js';

/** `--object` and `--image-opts`, which every command here takes (secrets.ts). */
interface KeyOptions {
  object?: string[];
  imageOpts?: boolean;
}

export interface CommitCliOptions {
  f?: string;
  b?: string;
  d?: boolean;
  p?: boolean;
  q?: boolean;
}

/** `img commit`. */
export async function imgCommit(arg: string, o: CommitCliOptions & KeyOptions): Promise<void> {
  const { file: top, format, keySecrets } = await imageArgument(arg, o);
  withProgress(!!o.p && !o.q, (onProgress) => commitImage(top, { base: o.b, keepTop: o.d, format, keySecrets, onProgress }));
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
export async function imgRebase(arg: string, o: RebaseCliOptions & KeyOptions): Promise<void> {
  const { file, keySecrets } = await imageArgument(arg, o);
  withProgress(!!o.p && !o.q, (onProgress) => rebaseImage(file, o.b, { unsafe: o.u, backingFormat: parseFormatOption(o.F), keySecrets, onProgress }));
}

export interface StreamCliOptions {
  b?: string;
  p?: boolean;
}

/** `img stream`. */
export async function imgStream(arg: string, o: StreamCliOptions & KeyOptions): Promise<void> {
  const { file, keySecrets } = await imageArgument(arg, o);
  withProgress(!!o.p, (onProgress) => streamImage(file, { base: o.b ?? null, keySecrets, onProgress }));
}
