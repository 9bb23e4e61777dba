// `qemu-img check [-r leaks|all]`: the engine walks the image (assembly/check.ts) and classifies
// what it finds exactly as qemu 7.2 does; this module opens the image, turns the engine's counters
// into qemu-img's JSON object (same field names, same omissions, same key order) and its exit code.
import { openImage } from './open-chain.js';
import { CowError } from '../errors.js';
import { assertOpen, imageEngine, imageId, type Image } from './image.js';
import type { ImageFormat } from './types.js';

export type RepairMode = 'leaks' | 'all';

/**
 * `qemu-img check --output=json`, field for field. qemu omits every counter that is 0 except
 * check-errors; the keys come in the order qemu's QDict prints them.
 */
export interface QemuCheckResult {
  'image-end-offset'?: number;
  'compressed-clusters'?: number;
  'total-clusters'?: number;
  corruptions?: number;
  'corruptions-fixed'?: number;
  'check-errors': number;
  leaks?: number;
  'leaks-fixed'?: number;
  'allocated-clusters'?: number;
  filename: string;
  format: string;
  'fragmented-clusters'?: number;
}

/** What `checkImage` found and what qemu-img would exit with. */
export interface CheckOutcome {
  /** null when the check itself failed (qemu-img prints no result then). */
  result: QemuCheckResult | null;
  /** 0 clean, 1 check failed (or internal errors), 2 corruptions, 3 leaks only, 63 format without checks. */
  exitCode: 0 | 1 | 2 | 3 | 63;
  /** qemu's diagnostics (what qemu-img prints on stderr: "Leaked cluster …", "ERROR …"). */
  log: string[];
  /** Why the check failed (exit 1 / 63), as qemu-img words it. */
  error?: string;
}

export interface CheckOptions {
  repair?: RepairMode;
  /** Format of the file; probed when absent. */
  format?: ImageFormat;
  /**
   * Take qemu's read locks on the chain (as openImage's `readLocks`): a check then refuses with
   * ECOW_IMAGE_LOCKED, as qemu-img check does, while another process writes the image, whose
   * refcounts are then in flux. The CLI takes them unless -U. A repair always locks for writing.
   */
  readLocks?: boolean;
}

/** The engine's answer (assembly/check.ts resultJson). */
interface EngineCheck {
  ret: number;
  error: string;
  imageEndOffset: number;
  totalClusters: number;
  allocatedClusters: number;
  fragmentedClusters: number;
  compressedClusters: number;
  checkErrors: number;
  corruptions: number;
  leaks: number;
  corruptionsFixed: number;
  leaksFixed: number;
  log: string[];
}

const REPAIR_CODE: Record<RepairMode, number> = { leaks: 1, all: 2 };

/** qemu-img's result object from the engine's counters (qemu's collect_image_check). */
function toQemu(e: EngineCheck, filename: string): QemuCheckResult {
  const out: Partial<QemuCheckResult> = {};
  const opt = (key: keyof QemuCheckResult, v: number) => {
    if (v !== 0) (out as Record<string, unknown>)[key] = v;
  };
  opt('image-end-offset', e.imageEndOffset);
  opt('compressed-clusters', e.compressedClusters);
  opt('total-clusters', e.totalClusters);
  opt('corruptions', e.corruptions);
  opt('corruptions-fixed', e.corruptionsFixed);
  out['check-errors'] = e.checkErrors;
  opt('leaks', e.leaks);
  opt('leaks-fixed', e.leaksFixed);
  opt('allocated-clusters', e.allocatedClusters);
  out.filename = filename;
  out.format = 'qcow2';
  opt('fragmented-clusters', e.fragmentedClusters);
  return out as QemuCheckResult;
}

/**
 * Check an open image (qemu-img check's semantics). Repairing needs an image opened writable for
 * this purpose alone, closed afterwards; `checkImage` does that for you.
 */
export function checkOpenImage(img: Image, repair?: RepairMode, filename = img.filename): CheckOutcome {
  assertOpen(img);
  if (img.format !== 'qcow2') {
    return { result: null, exitCode: 63, log: [], error: 'This image format does not support checks' };
  }
  if (repair && !img.writable) throw new CowError('ECOW_READ_ONLY', `image ${img.filename} must be opened writable to be repaired`);
  const code = repair ? REPAIR_CODE[repair] : 0;
  const engine = imageEngine(img);
  let e: EngineCheck;
  try {
    e = JSON.parse(engine.call((x) => engine.string(x.check(imageId(img), code)))) as EngineCheck;
  } finally {
    engine.collect();
  }
  if (e.ret < 0) return { result: null, exitCode: 1, log: e.log, error: `Check failed: ${e.error}` };
  const result = toQemu(e, filename);
  let exitCode: CheckOutcome['exitCode'] = 0;
  if (e.checkErrors) exitCode = 1;
  else if (e.corruptions) exitCode = 2;
  else if (e.leaks) exitCode = 3;
  return { result, exitCode, log: e.log, ...(exitCode === 1 ? { error: 'Check failed' } : {}) };
}

/**
 * `qemu-img check [-r leaks|all] FILE`: opens FILE and its backing chain (read-only unless
 * repairing; qemu opens the chain too, so a missing backing file is an error), checks the top.
 * An image that cannot be opened throws a CowError.
 */
export function checkImage(file: string, options: CheckOptions = {}): CheckOutcome {
  const img = openImage(file, { format: options.format, writable: options.repair !== undefined, forCheck: true, readLocks: options.readLocks });
  try {
    return checkOpenImage(img, options.repair, file);
  } finally {
    img.close();
  }
}

/** printf("%0.2f") as glibc rounds it (exact ties to even; JavaScript's toFixed rounds them up). */
function percent(x: number): string {
  const t = x * 1000;
  if (Number.isInteger(t) && Math.abs(t % 10) === 5 && t / 1000 === x) {
    let h = Math.floor(t / 10);
    if (h % 2 !== 0) h += 1;
    return (h / 100).toFixed(2);
  }
  return x.toFixed(2);
}

/** qemu-img check's human output (stdout) for an outcome, without a trailing newline. */
export function formatCheckHuman(o: CheckOutcome): string {
  const r = o.result;
  if (!r) return '';
  const lines: string[] = [];
  const leaksFixed = r['leaks-fixed'] ?? 0;
  const corruptionsFixed = r['corruptions-fixed'] ?? 0;
  if (leaksFixed || corruptionsFixed) {
    lines.push(
      'The following inconsistencies were found and repaired:',
      '',
      `    ${leaksFixed} leaked clusters`,
      `    ${corruptionsFixed} corruptions`,
      '',
      'Double checking the fixed image now...',
    );
  }
  const corruptions = r.corruptions ?? 0;
  const leaks = r.leaks ?? 0;
  const errors = r['check-errors'];
  if (!corruptions && !leaks && !errors) {
    lines.push('No errors were found on the image.');
  } else {
    if (corruptions) {
      lines.push('', `${corruptions} errors were found on the image.`, 'Data may be corrupted, or further writes to the image may corrupt it.');
    }
    if (leaks) {
      lines.push('', `${leaks} leaked clusters were found on the image.`, 'This means waste of disk space, but no harm to data.');
    }
    if (errors) lines.push('', `${errors} internal errors have occurred during the check.`);
  }
  const total = r['total-clusters'] ?? 0;
  const allocated = r['allocated-clusters'] ?? 0;
  if (total && allocated) {
    const frag = r['fragmented-clusters'] ?? 0;
    const comp = r['compressed-clusters'] ?? 0;
    lines.push(
      `${allocated}/${total} = ${percent((allocated * 100) / total)}% allocated, ` +
        `${percent((frag * 100) / allocated)}% fragmented, ${percent((comp * 100) / allocated)}% compressed clusters`,
    );
  }
  if (r['image-end-offset']) lines.push(`Image end offset: ${r['image-end-offset']}`);
  return lines.join('\n');
}

/** qemu-img check --output=json's text (4-space indentation, qemu's key order). */
export function formatCheckJson(o: CheckOutcome): string {
  return o.result ? JSON.stringify(o.result, null, 4) : '';
}
