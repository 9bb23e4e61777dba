import type { ImageFormat } from './format.js';

export type { ImageFormat };

/** Header facts the engine reports for one image (qcow2 fields are absent for raw). */
export interface HeaderInfo {
  format: ImageFormat;
  virtualSize: number;
  version?: 2 | 3;
  clusterBits?: number;
  clusterSize?: number;
  backingFile?: string | null;
  backingFormat?: string | null;
  cryptMethod?: number;
  /** LUKS (cryptMethod 2): the LUKS header's place in the file (the crypto header extension). */
  cryptoOffset?: number;
  cryptoLength?: number;
  l1Size?: number;
  l1Offset?: number;
  refcountTableOffset?: number;
  refcountTableClusters?: number;
  nbSnapshots?: number;
  snapshotsOffset?: number;
  incompatibleFeatures?: number;
  compatibleFeatures?: number;
  autoclearFeatures?: number;
  refcountOrder?: number;
  refcountBits?: number;
  headerLength?: number;
  compressionType?: number;
  extendedL2?: boolean;
  dirty?: boolean;
  corrupt?: boolean;
  lazyRefcounts?: boolean;
  extensions?: { magic: number; length: number }[];
}

/** One extent of `map`, as `qemu-img map --output=json` prints it. */
export interface MapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}
