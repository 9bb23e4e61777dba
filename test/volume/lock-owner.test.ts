// The lock owner record names this host as os.hostname() does (lock-owner.ts reads the kernel's
// copy on Linux instead of loading node:os): a waiter compares it with its own, so the two ways
// must agree, or a dead holder on this host would look like one on another host.
import * as os from 'node:os';
import { describe, expect, it } from 'vitest';
import { currentOwner } from '../../src/volume/lock-owner.js';

describe('currentOwner', () => {
  const owner = currentOwner();
  if (owner !== null) it('names the host as os.hostname() does', () => {
    expect(owner.host).toBe(os.hostname());
  });
  if (process.platform === 'linux') it('is known on Linux (a record a waiter can judge)', () => {
    expect(owner).not.toBeNull();
    expect(owner?.pid).toBe(process.pid);
  });
});
