/**
 * What an operation failed with, as tests compare it: a CowError's stable `code`. One copy for
 * every test file (they used to keep their own).
 */
import { expect } from 'vitest';
import { CowError, type CowErrorCode } from '../../src/errors.js';

/** The code of the CowError `fn` throws: 'no error' if it returns, 'not a CowError: …' for anything else. */
export function codeOf(fn: () => unknown): CowErrorCode | 'no error' | `not a CowError: ${string}` {
  try {
    fn();
  } catch (e) {
    return e instanceof CowError ? e.code : `not a CowError: ${String(e)}`;
  }
  return 'no error';
}

/** The code of the CowError `p` rejects with, or 'ok' if it resolves; anything else is rethrown. */
export async function rejectionCode(p: Promise<unknown>): Promise<CowErrorCode | 'ok'> {
  try {
    await p;
    return 'ok';
  } catch (e) {
    if (!(e instanceof CowError)) throw e;
    return e.code;
  }
}

/** The CowError `p` rejects with (the test fails if it resolves or throws anything else); with `code`, that code. */
export async function rejection(p: Promise<unknown>, code?: CowErrorCode): Promise<CowError> {
  try {
    await p;
  } catch (e) {
    expect(e, String(e)).toBeInstanceOf(CowError);
    if (code !== undefined) expect((e as CowError).code, (e as Error).message).toBe(code);
    return e as CowError;
  }
  throw new Error('expected a rejection');
}
