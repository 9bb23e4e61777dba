import { describe, expect, it } from 'vitest';
import { SnapshotStatusStore, type SnapshotStatus, type SnapshotStatusRecord } from '../../src/nova/index.js';

function storeWith(status: SnapshotStatus, progress: string | null = null): SnapshotStatusStore {
  const store = new SnapshotStatusStore();
  store.set('s1', status, progress);
  return store;
}

describe('SnapshotStatusStore transitions (Cinder os-update_snapshot_status)', () => {
  it.each<[SnapshotStatus, SnapshotStatus]>([
    ['creating', 'creating'],
    ['creating', 'available'],
    ['creating', 'error'],
    ['deleting', 'deleting'],
    ['deleting', 'error_deleting'],
  ])('allows %s → %s', (from, to) => {
    const store = storeWith(from, '0%');
    expect(store.update('s1', { status: to, progress: '90%' })).toEqual({ status: to, progress: '90%' });
    expect(store.get('s1')).toEqual({ status: to, progress: '90%' });
  });

  it.each<[SnapshotStatus, string]>([
    ['creating', 'deleting'],
    ['creating', 'error_deleting'],
    ['creating', 'deleted'],
    ['creating', 'Creating'],
    ['creating', 'bogus'],
    ['deleting', 'creating'],
    ['deleting', 'available'],
    ['deleting', 'error'],
    ['deleting', 'deleted'],
    ['available', 'available'],
    ['available', 'creating'],
    ['available', 'deleting'],
    ['error', 'creating'],
    ['error', 'error'],
    ['error_deleting', 'deleting'],
    ['error_deleting', 'error_deleting'],
    ['deleted', 'deleting'],
    ['backing-up', 'available'],
    ['restoring', 'available'],
  ])('refuses %s → %s and leaves the record untouched', (from, to) => {
    const store = storeWith(from, '10%');
    const seen: unknown[] = [];
    store.subscribe('s1', (r) => seen.push(r));
    expect(() => store.update('s1', { status: to, progress: '90%' })).toThrow(
      expect.objectContaining({ code: 'ECOW_BAD_STATUS_UPDATE', message: expect.stringContaining(from) }),
    );
    expect(store.get('s1')).toEqual({ status: from, progress: '10%' });
    expect(seen).toEqual([]);
  });

  it('reports an unknown snapshot as ECOW_NOT_FOUND', () => {
    const store = new SnapshotStatusStore();
    expect(() => store.update('nope', { status: 'creating' })).toThrow(
      expect.objectContaining({ code: 'ECOW_NOT_FOUND', message: expect.stringContaining('nope') }),
    );
  });

  it.each(['abc', '90', '101%', '-1%', '9 0%', '1000%'])('refuses progress %j', (progress) => {
    const store = storeWith('creating', '0%');
    expect(() => store.update('s1', { status: 'creating', progress })).toThrow(
      expect.objectContaining({ code: 'ECOW_BAD_STATUS_UPDATE' }),
    );
    expect(store.get('s1')).toEqual({ status: 'creating', progress: '0%' });
  });

  it('keeps the progress when an update has none or an empty one, as Cinder does', () => {
    const store = storeWith('creating', '40%');
    expect(store.update('s1', { status: 'creating' })).toEqual({ status: 'creating', progress: '40%' });
    expect(store.update('s1', { status: 'creating', progress: '' })).toEqual({ status: 'creating', progress: '40%' });
    expect(store.update('s1', { status: 'available', progress: '100%' })).toEqual({ status: 'available', progress: '100%' });
  });

  it("lets the driver's set() override any status and reset the progress", () => {
    const store = storeWith('error_deleting', '90%');
    expect(store.set('s1', 'deleting')).toEqual({ status: 'deleting', progress: null });
    expect(store.get('s1')).toEqual({ status: 'deleting', progress: null });
  });

  it('notifies listeners of its own snapshot until they unsubscribe', () => {
    const store = storeWith('creating');
    const seen: (SnapshotStatusRecord | undefined)[] = [];
    const other: unknown[] = [];
    const stop = store.subscribe('s1', (r) => seen.push(r));
    store.subscribe('s2', (r) => other.push(r));

    store.update('s1', { status: 'creating', progress: '50%' });
    store.set('s1', 'deleting');
    store.delete('s1');
    stop();
    store.set('s1', 'creating');

    expect(seen).toEqual([{ status: 'creating', progress: '50%' }, { status: 'deleting', progress: null }, undefined]);
    expect(other).toEqual([]);
  });

  it('forgets a snapshot on delete()', () => {
    const store = storeWith('available');
    expect(store.delete('s1')).toBe(true);
    expect(store.delete('s1')).toBe(false);
    expect(store.get('s1')).toBeUndefined();
  });
});
