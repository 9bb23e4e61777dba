/**
 * What the processes of the snapshot race (test/hardening/concurrency.test.ts and its child
 * test/hardening/fixtures/race-child.ts) agree on: volume ids, snapshot ids, each child's region
 * of the volume and the pattern it writes there before its k-th snapshot, and the events a child
 * reports on stdout (one JSON object per line).
 */
export const RACE_VOLUME_SIZE = 1 << 20;
/** Each slot (child) owns one region of every volume; nobody else ever writes it. */
export const RACE_REGION = 64 << 10;
export const RACE_SLOTS = RACE_VOLUME_SIZE / RACE_REGION;

export function raceVolumeId(i: number): string {
  const h = (i + 1).toString(16).padStart(8, '0');
  return `${h}-0000-4000-8000-${h}${'0'.repeat(4)}`;
}

/** Snapshot id for incarnation `gen` of slot `slot`, its k-th snapshot. */
export function raceSnapshotId(slot: number, gen: number, k: number): string {
  return `${slot.toString(16).padStart(8, '0')}-${gen.toString(16).padStart(4, '0')}-4${(k >> 12).toString(16).padStart(3, '0')}-8${(k & 0xfff).toString(16).padStart(3, '0')}-${'a'.repeat(12)}`;
}

/** The bytes slot `slot`, incarnation `gen`, writes into its region before its k-th snapshot. */
export function racePattern(slot: number, gen: number, k: number): Buffer {
  const b = Buffer.alloc(RACE_REGION);
  let x = (Math.imul(slot + 1, 0x9e3779b1) ^ Math.imul(gen + 1, 0x85ebca6b) ^ Math.imul(k + 1, 0xc2b2ae35)) >>> 0 || 1;
  for (let i = 0; i < b.length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeUInt32LE(x >>> 0, i);
  }
  return b;
}

export type RaceEvent =
  | { e: 'ready'; pid: number }
  /** The region now holds pattern k (written under the volume lock). */
  | { e: 'wrote'; vol: string; k: number }
  | { e: 'intent'; op: 'create' | 'delete' | 'verify'; vol: string; snap: string; k: number }
  | { e: 'created'; vol: string; snap: string; k: number }
  | { e: 'deleted'; vol: string; snap: string }
  | { e: 'verified'; vol: string; snap: string; k: number }
  /** The operation failed; `exists`: whether the snapshot is in the info file afterwards. */
  | { e: 'failed'; op: 'create' | 'delete' | 'verify'; vol: string; snap: string; code: string; message: string; exists: boolean }
  /** Paused inside an operation, holding the lock (the parent may SIGKILL it now). */
  | { e: 'hold'; vol: string; step: string }
  | { e: 'done'; ops: number };
