// The etcd coordination URL (src/volume/etcd-target.ts): etcd://HOST:PORT[,HOST:PORT…][/PREFIX],
// credentials only from the environment, every bad value refused with ECOW_BAD_ARGUMENT naming it.
import { describe, expect, it } from 'vitest';
import { etcdLockKey } from '../../src/volume/etcd-lock.js';
import { parseEtcdUrl } from '../../src/volume/etcd-target.js';
import { codeOf } from '../support/errors.js';
import { VOL } from '../support/volume.js';

describe('etcd coordination URL', () => {
  it('reads hosts, the prefix (default cowchain) and credentials from the environment only', () => {
    expect(parseEtcdUrl('etcd://127.0.0.1:2379', 'x', {})).toEqual({ hosts: ['127.0.0.1:2379'], prefix: 'cowchain', auth: undefined });
    const t = parseEtcdUrl('etcd://a.example:2379,[::1]:2380,b:1/site-1/cinder', 'x', { COWCHAIN_ETCD_USERNAME: 'cinder', COWCHAIN_ETCD_PASSWORD: 's3cret' });
    expect(t).toEqual({ hosts: ['a.example:2379', '[::1]:2380', 'b:1'], prefix: 'site-1/cinder', auth: { username: 'cinder', password: 's3cret' } });
    expect(etcdLockKey(t, VOL)).toBe(`site-1/cinder/volumes/${VOL}/lock`);
  });

  it.each([
    ['http://127.0.0.1:2379', 'etcd://'],
    ['etcd://', 'HOST:PORT'],
    ['etcd://127.0.0.1', 'HOST:PORT'],
    ['etcd://127.0.0.1:0', 'port'],
    ['etcd://127.0.0.1:70000', 'port'],
    ['etcd://127.0.0.1:2379,', 'HOST:PORT'],
    ['etcd://user:pw@127.0.0.1:2379', 'COWCHAIN_ETCD_USERNAME'],
    ['etcd://127.0.0.1:2379/../x', 'prefix'],
    ['etcd://127.0.0.1:2379/a//b', 'prefix'],
  ])('refuses %s', (url, why) => {
    expect(codeOf(() => parseEtcdUrl(url, '--coordination', {}))).toBe('ECOW_BAD_ARGUMENT');
    expect(() => parseEtcdUrl(url, '--coordination', {})).toThrow(why);
    expect(() => parseEtcdUrl(url, '--coordination', {})).toThrow(`--coordination "${url}"`);
  });

  it('an empty user name is refused', () => {
    expect(codeOf(() => parseEtcdUrl('etcd://h:1', 'x', { COWCHAIN_ETCD_USERNAME: '' }))).toBe('ECOW_BAD_ARGUMENT');
  });
});
