/**
 * The package's native bindings (native/*.c, built by `npm run build:native` into build/NAME.node),
 * loaded where they can work: Linux under Node. Under Deno, node:fs descriptors are not the
 * kernel's, so a binding handed one would act on another file. null when absent: each caller
 * has its way without (image-lock.ts, file-extents.ts).
 */
import { createRequire } from 'node:module';

export function loadNativeBinding<T>(name: 'ofd-lock' | 'file-extents'): T | null {
  const deno = typeof (globalThis as { Deno?: unknown }).Deno !== 'undefined';
  if (process.platform !== 'linux' || deno) return null;
  try {
    return createRequire(import.meta.url)(`../../build/${name}.node`) as T;
  } catch {
    return null;
  }
}
