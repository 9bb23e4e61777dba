import { describe, expect, it } from 'vitest';
import {
  CINDER_BACKOFF,
  SnapshotStatusStore,
  waitForProgress,
  type Clock,
  type SnapshotStatus,
} from '../../src/nova/index.js';
import { rejection } from '../support/errors.js';

/** A clock whose sleeps only advance `now`; `onSleep` runs after each one (Nova acting meanwhile). */
function fakeClock(onSleep: (count: number, now: number) => void = () => {}): { clock: Clock; sleeps: number[] } {
  let now = 1_000_000;
  const start = now;
  const sleeps: number[] = [];
  return {
    sleeps,
    clock: {
      now: () => now,
      sleep: async (ms) => {
        sleeps.push(ms);
        now += ms;
        onSleep(sleeps.length, now - start);
      },
    },
  };
}

/** Cinder's loop from remotefs.py, transliterated: the sleeps it makes before timing out. */
function cinderSleeps(timeoutSeconds: number): number[] {
  const sleeps: number[] = [];
  let elapsed = 0;
  let increment = 1;
  for (;;) {
    sleeps.push(increment * 1000);
    elapsed += increment;
    if (10 < elapsed && elapsed <= 20) increment = 2;
    else if (20 < elapsed && elapsed <= 60) increment = 5;
    else if (60 < elapsed) increment = 10;
    if (elapsed > timeoutSeconds) return sleeps;
  }
}

function storeWith(status: SnapshotStatus, progress: string | null = null): SnapshotStatusStore {
  const store = new SnapshotStatusStore();
  store.set('s1', status, progress);
  return store;
}

describe('waitForProgress, phase create', () => {
  it('returns at once when Nova already reported creating 90%', async () => {
    const { clock, sleeps } = fakeClock();
    const record = await waitForProgress(storeWith('creating', '90%'), 's1', { phase: 'create', clock });
    expect(record).toEqual({ status: 'creating', progress: '90%' });
    expect(sleeps).toEqual([]);
  });

  it('polls each second until Nova reports 90%', async () => {
    const store = storeWith('creating');
    const { clock, sleeps } = fakeClock((n) => {
      if (n === 2) store.update('s1', { status: 'creating', progress: '50%' });
      if (n === 4) store.update('s1', { status: 'creating', progress: '90%' });
    });
    await expect(waitForProgress(store, 's1', { phase: 'create', clock })).resolves.toEqual({
      status: 'creating',
      progress: '90%',
    });
    expect(sleeps).toEqual([1000, 1000, 1000, 1000]);
  });

  it('fails with ECOW_NOVA_STATUS when Nova reports error', async () => {
    const store = storeWith('creating');
    const { clock, sleeps } = fakeClock((n) => {
      if (n === 3) store.update('s1', { status: 'error', progress: '90%' });
    });
    const error = await rejection(waitForProgress(store, 's1', { phase: 'create', clock }), 'ECOW_NOVA_STATUS');
    expect(error.message).toContain('s1');
    expect(sleeps).toHaveLength(3);
  });

  it.each<SnapshotStatus>(['deleting', 'error_deleting'])(
    'fails with ECOW_CONCURRENT_REQUEST when the snapshot turns %s',
    async (status) => {
      const store = storeWith('creating');
      const { clock } = fakeClock((n) => {
        if (n === 2) store.set('s1', status, '90%');
      });
      await rejection(waitForProgress(store, 's1', { phase: 'create', clock }), 'ECOW_CONCURRENT_REQUEST');
    },
  );

  it('does not take available for success (Cinder waits for creating 90%) and times out', async () => {
    const store = storeWith('creating');
    const { clock } = fakeClock((n) => {
      if (n === 1) store.update('s1', { status: 'available', progress: '100%' });
    });
    await rejection(waitForProgress(store, 's1', { phase: 'create', clock, timeoutMs: 5_000 }), 'ECOW_NOVA_TIMEOUT');
  });

  it("times out after Cinder's 600 s with exactly Cinder's sleeps", async () => {
    const { clock, sleeps } = fakeClock();
    const error = await rejection(waitForProgress(storeWith('creating', '0%'), 's1', { phase: 'create', clock }), 'ECOW_NOVA_TIMEOUT');
    expect(sleeps).toEqual(cinderSleeps(600));
    expect(sleeps.reduce((a, b) => a + b, 0)).toBe(601_000);
    expect(error.message).toContain('601000 ms');
  });

  it('spaces polls 1 s, then 2 s after 10 s, 5 s after 20 s, 10 s after 60 s', async () => {
    const { clock, sleeps } = fakeClock();
    await rejection(waitForProgress(storeWith('creating'), 's1', { phase: 'create', clock, timeoutMs: 100_000 }), 'ECOW_NOVA_TIMEOUT');
    expect(sleeps).toEqual([
      ...Array(11).fill(1000), // checks at 0..10 s
      ...Array(5).fill(2000), // 11 → 21 s
      ...Array(8).fill(5000), // 21 → 61 s
      ...Array(4).fill(10_000), // 61 → 101 s > 100 s
    ]);
  });
});

describe('waitForProgress, phase delete', () => {
  it('succeeds on deleting 90%', async () => {
    const store = storeWith('deleting');
    const { clock, sleeps } = fakeClock((n) => {
      if (n === 12) store.update('s1', { status: 'deleting', progress: '90%' });
    });
    await expect(waitForProgress(store, 's1', { phase: 'delete', clock })).resolves.toEqual({
      status: 'deleting',
      progress: '90%',
    });
    expect(sleeps).toEqual([...Array(11).fill(1000), 2000]);
  });

  it('does not take creating 90% for a finished delete', async () => {
    const { clock } = fakeClock();
    await rejection(waitForProgress(storeWith('creating', '90%'), 's1', { phase: 'delete', clock }), 'ECOW_NOVA_STATUS');
  });

  it.each<SnapshotStatus>(['error_deleting', 'available', 'error'])('fails with ECOW_NOVA_STATUS on %s', async (status) => {
    const store = storeWith('deleting');
    const { clock } = fakeClock((n) => {
      if (n === 1) store.set('s1', status, '90%');
    });
    const error = await rejection(waitForProgress(store, 's1', { phase: 'delete', clock }), 'ECOW_NOVA_STATUS');
    expect(error.message).toContain(status);
  });

  it("times out after Cinder's 7200 s with exactly Cinder's sleeps", async () => {
    const { clock, sleeps } = fakeClock();
    await rejection(waitForProgress(storeWith('deleting', '100%'), 's1', { phase: 'delete', clock }), 'ECOW_NOVA_TIMEOUT');
    expect(sleeps).toEqual(cinderSleeps(7200));
    expect(sleeps.reduce((a, b) => a + b, 0)).toBe(7_201_000);
  });
});

describe('waitForProgress, general', () => {
  it('fails with ECOW_NOT_FOUND for an untracked snapshot, or one removed while waiting', async () => {
    await rejection(waitForProgress(new SnapshotStatusStore(), 'nope', { phase: 'create', clock: fakeClock().clock }), 'ECOW_NOT_FOUND');
    const store = storeWith('deleting');
    const { clock } = fakeClock(() => store.delete('s1'));
    await rejection(waitForProgress(store, 's1', { phase: 'delete', clock }), 'ECOW_NOT_FOUND');
  });

  it('follows a custom schedule', async () => {
    const { clock, sleeps } = fakeClock();
    const intervals = [
      { afterMs: 0, everyMs: 10 },
      { afterMs: 30, everyMs: 25 },
    ];
    await rejection(waitForProgress(storeWith('creating'), 's1', { phase: 'create', clock, intervals, timeoutMs: 100 }), 'ECOW_NOVA_TIMEOUT');
    expect(sleeps).toEqual([10, 10, 10, 10, 25, 25, 25]);
  });

  it('times out only once more than timeoutMs elapsed, after one last check', async () => {
    const store = storeWith('creating');
    const { clock, sleeps } = fakeClock((n) => {
      if (n === 3) store.update('s1', { status: 'creating', progress: '90%' });
    });
    const intervals = [{ afterMs: 0, everyMs: 10 }];
    // At exactly 30 ms the check still runs and succeeds, as Cinder's `elapsed > timeout`.
    await expect(waitForProgress(store, 's1', { phase: 'create', clock, intervals, timeoutMs: 30 })).resolves.toMatchObject({
      progress: '90%',
    });
    const late = fakeClock();
    await rejection(waitForProgress(storeWith('creating'), 's1', { phase: 'create', clock: late.clock, intervals, timeoutMs: 30 }), 'ECOW_NOVA_TIMEOUT');
    expect(late.sleeps).toEqual([10, 10, 10, 10]);
    expect(sleeps).toEqual([10, 10, 10]);
  });

  it('wakes early on a store update with the real clock', async () => {
    const store = storeWith('deleting');
    setTimeout(() => store.update('s1', { status: 'deleting', progress: '90%' }), 20);
    const started = performance.now();
    await waitForProgress(store, 's1', { phase: 'delete', intervals: [{ afterMs: 0, everyMs: 60_000 }] });
    // Not the 60 s poll: half of it is far beyond what a loaded machine adds.
    expect(performance.now() - started).toBeLessThan(30_000);
  });

  it('stops listening to the store once done', async () => {
    const store = storeWith('creating', '90%');
    const { clock } = fakeClock();
    let listening = 0;
    const subscribe = store.subscribe.bind(store);
    store.subscribe = (id, listener) => {
      listening++;
      const stop = subscribe(id, listener);
      return () => {
        listening--;
        stop();
      };
    };
    await waitForProgress(store, 's1', { phase: 'create', clock });
    await rejection(waitForProgress(store, 's1', { phase: 'delete', clock }), 'ECOW_NOVA_STATUS');
    expect(listening).toBe(0);
  });

  it.each([
    [{ intervals: [] }],
    [{ intervals: [{ afterMs: 0, everyMs: 0 }] }],
    [{ intervals: [{ afterMs: 10, everyMs: 1 }, { afterMs: 5, everyMs: 1 }] }],
    [{ timeoutMs: Number.NaN }],
  ])('rejects an invalid schedule %j', async (options) => {
    await rejection(waitForProgress(storeWith('creating'), 's1', { phase: 'create', ...options }), 'ECOW_BAD_ARGUMENT');
  });

  it('exports the Cinder schedule', () => {
    expect(CINDER_BACKOFF).toEqual([
      { afterMs: 0, everyMs: 1000 },
      { afterMs: 10_000, everyMs: 2000 },
      { afterMs: 20_000, everyMs: 5000 },
      { afterMs: 60_000, everyMs: 10_000 },
    ]);
  });
});
