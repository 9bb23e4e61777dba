import * as fs from 'node:fs';
import { fullBackingFilename } from './open-chain.js';
import type { Image } from './image.js';

/** `qemu-img info --output=json` for one image, field for field where we know the value. */
export interface QemuStyleInfo {
  'virtual-size': number;
  filename: string;
  format: string;
  'actual-size': number;
  'dirty-flag': boolean;
  /** Present (true) for an encrypted image, as qemu-img prints it. */
  encrypted?: boolean;
  'cluster-size'?: number;
  'format-specific'?: {
    type: 'qcow2';
    data: {
      compat: '0.10' | '1.1';
      'compression-type': 'zlib' | 'zstd';
      'lazy-refcounts'?: boolean;
      'refcount-bits': number;
      corrupt?: boolean;
      'extended-l2'?: boolean;
    };
  };
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
}

/** Bytes the file occupies on disk (allocated blocks), as qemu's actual-size. */
function actualSize(filename: string): number {
  try {
    return fs.statSync(filename).blocks * 512;
  } catch {
    return 0;
  }
}

export function qemuStyleInfo(img: Image): QemuStyleInfo {
  const h = img.headerInfo();
  const out: QemuStyleInfo = {
    'virtual-size': h.virtualSize,
    filename: img.filename,
    format: h.format,
    'actual-size': actualSize(img.filename),
    'dirty-flag': h.dirty ?? false,
  };
  if (h.format !== 'qcow2') return out;
  out['cluster-size'] = h.clusterSize;
  if (h.cryptMethod) out.encrypted = true;
  const v3 = h.version === 3;
  out['format-specific'] = {
    type: 'qcow2',
    data: {
      compat: v3 ? '1.1' : '0.10',
      'compression-type': h.compressionType === 1 ? 'zstd' : 'zlib',
      ...(v3 ? { 'lazy-refcounts': h.lazyRefcounts ?? false } : {}),
      'refcount-bits': h.refcountBits!,
      ...(v3 ? { corrupt: h.corrupt ?? false, 'extended-l2': h.extendedL2 ?? false } : {}),
    },
  };
  if (h.backingFile != null) {
    out['backing-filename'] = h.backingFile;
    out['full-backing-filename'] = fullBackingFilename(img.filename, h.backingFile);
    if (h.backingFormat) out['backing-filename-format'] = h.backingFormat;
  }
  return out;
}
