// The engine's exported surface. Images are numbered; the host owns the file handles behind them.
// Every function that can fail traps after recording lastErrorCode/lastErrorMessage.
import { lastCode, lastMessage, fail, E_BAD_ARGUMENT, E_RANGE } from "./errors";
export { clearError } from "./errors";
import { Image, lastStatus } from "./image";
import { Qcow2Image } from "./qcow2";
import { RawImage } from "./raw";
import { QCOW_MAGIC } from "./header";
import { getU32 } from "./be";
import { readZeroFill } from "./io";
import { describeImage } from "./describe";
import { createQcow2 } from "./create";
import { Job } from "./job";
import { CommitJob, emptyImage } from "./commit";
import { RebaseJob, StreamJob, setBackingFile as setBackingHeader } from "./rebase";
import { ConvertJob } from "./convert";
import { engineCacheBytes } from "./tablecache";

const images = new Array<Image | null>();
/** Ids of closed images, reused last-closed first: opening a chain of n images registers n. */
const freeIds = new Array<i32>();

function image(id: i32): Image {
  if (id < 0 || id >= images.length) fail(E_BAD_ARGUMENT, "no open image #" + id.toString());
  const img = unchecked(images[id]);
  if (img == null) fail(E_BAD_ARGUMENT, "image #" + id.toString() + " is closed");
  return img!;
}

function register(img: Image): i32 {
  if (freeIds.length > 0) {
    const i = freeIds.pop();
    unchecked(images[i] = img);
    return i;
  }
  images.push(img);
  return images.length - 1;
}

function unregister(id: i32): void {
  unchecked(images[id] = null);
  freeIds.push(id);
}

export function lastErrorCode(): string { return lastCode; }
export function lastErrorMessage(): string { return lastMessage; }

/** Scratch memory for the host's buffers (outside the garbage collector). */
export function alloc(size: usize): usize { return heap.alloc(size); }
export function free(ptr: usize): void { heap.free(ptr); }

/** 1 when the file starts with the qcow2 magic, else 0 (raw). */
export function probe(handle: i32): i32 {
  const buf = heap.alloc(4);
  readZeroFill(handle, buf, 4, 0);
  const r = getU32(buf) == QCOW_MAGIC ? 1 : 0;
  heap.free(buf);
  return r;
}

/** Open a qcow2 image; `flags`: 1 writable, 2 opened for a check (qemu's BDRV_O_CHECK). */
export function openQcow2(handle: i32, flags: i32): i32 {
  return register(new Qcow2Image(handle, flags));
}

/** Lay out a new, empty qcow2 image on `handle` (existing content is discarded). */
export function create(
  handle: i32, size: f64, clusterBits: i32, refcountOrder: i32, version: i32, extendedL2: bool,
  compressionType: i32, cryptoLength: f64, backingName: string, backingFormat: string,
): void {
  createQcow2(handle, <u64>size, <u32>clusterBits, <u32>refcountOrder, <u32>version, extendedL2, <u8>compressionType, <u64>cryptoLength, backingName, backingFormat);
}

export function openRaw(handle: i32, writable: bool): i32 {
  return register(new RawImage(handle, writable));
}

/** Link an image to the image that backs it (the host resolved and validated the name). */
export function setBacking(id: i32, backingId: i32): void {
  image(id).backing = backingId < 0 ? null : image(backingId);
}

/** Flush everything and forget the image. */
export function close(id: i32): void {
  const img = image(id);
  if (img.writable) img.flush();
  img.close();
  unregister(id);
}

/** Forget an image without flushing (after an error left it in an unknown state). */
export function abandon(id: i32): void {
  const img = image(id);
  img.close();
  unregister(id);
}

function checkRange(img: Image, off: f64, len: f64, what: string): void {
  const o = <u64>off;
  if (off < 0 || len < 0 || o + <u64>len > img.virtualSize()) {
    fail(E_RANGE, what + " of " + (<u64>len).toString() + " bytes at " + o.toString() + " outside virtual size " + img.virtualSize().toString());
  }
}

/** Guest write of len bytes from wasm memory at ptr. */
export function write(id: i32, off: f64, ptr: usize, len: i32): void {
  const img = image(id);
  checkRange(img, off, <f64>len, "write");
  img.write(<u64>off, ptr, <u64>len);
}

/** Make a guest range read as zeros. */
export function writeZeroes(id: i32, off: f64, len: f64, unmap: bool): void {
  const img = image(id);
  checkRange(img, off, len, "write-zeroes");
  img.zero(<u64>off, <u64>len, unmap);
}

/** qemu-io's discard: whole clusters are dropped (v3: read as zeros, v2: read the backing file). */
export function discard(id: i32, off: f64, len: f64): void {
  const img = image(id);
  checkRange(img, off, len, "discard");
  img.discard(<u64>off, <u64>len);
}

/** Grow the virtual size (a qcow2 L1 table is enlarged as needed; never shrinks). */
export function grow(id: i32, size: f64): void {
  image(id).grow(<u64>size);
}

/** Make every write so far durable (metadata in crash-safe order). */
export function flush(id: i32): void {
  image(id).flush();
}

export function describe(id: i32): string { return describeImage(image(id)); }

export function virtualSize(id: i32): f64 { return <f64>image(id).virtualSize(); }

/** Guest read of [off, off+len) through the chain into wasm memory at ptr. */
export function read(id: i32, off: f64, ptr: usize, len: i32): void {
  const img = image(id);
  checkRange(img, off, <f64>len, "read");
  img.read(<u64>off, ptr, <u64>len);
}

/** One layer's block status for [off, off+bytes); returns the run length, see statusFlags/Offset. */
export function blockStatus(id: i32, off: f64, bytes: f64): f64 {
  const img = image(id);
  const o = <u64>off;
  const size = img.virtualSize();
  if (off < 0 || bytes <= 0 || o >= size) fail(E_RANGE, "block status at " + o.toString() + " outside virtual size " + size.toString());
  let b = <u64>bytes;
  if (b > size - o) b = size - o;
  return <f64>img.status(o, b);
}
export function statusFlags(): i32 { return lastStatus.flags; }

// --- long operations, driven in steps by the host ---
const jobs = new Array<Job | null>();

function job(id: i32): Job {
  if (id < 0 || id >= jobs.length || unchecked(jobs[id]) == null) fail(E_BAD_ARGUMENT, "no job #" + id.toString());
  return unchecked(jobs[id])!;
}

function registerJob(j: Job): i32 {
  for (let i = 0; i < jobs.length; i++) {
    if (unchecked(jobs[i]) == null) { unchecked(jobs[i] = j); return i; }
  }
  jobs.push(j);
  return jobs.length - 1;
}

/** Commit the `layers` images from `topId` down into `baseId` (writes only the base). */
export function commitStart(topId: i32, baseId: i32, layers: i32): i32 {
  return registerJob(new CommitJob(image(topId), image(baseId), layers));
}

/** Safe rebase of `id` onto `newBackingId` (-1: no backing, i.e. flatten). */
export function rebaseStart(id: i32, newBackingId: i32): i32 {
  return registerJob(new RebaseJob(image(id), newBackingId < 0 ? null : image(newBackingId)));
}

/** Pull into `id` what its `layers` backing images allocate. */
export function streamStart(id: i32, layers: i32): i32 {
  return registerJob(new StreamJob(image(id), layers));
}

/** Copy the guest view of `srcId`'s chain into the fresh image `dstId` (compressed clusters when `compressed`). */
export function convertStart(srcId: i32, dstId: i32, compressed: bool): i32 {
  return registerJob(new ConvertJob(image(srcId), image(dstId), compressed));
}

/** Advance a job by about `budget` guest bytes; 1 when it has finished (and flushed). */
export function jobStep(id: i32, budget: f64): i32 {
  return job(id).step(<u64>budget) ? 1 : 0;
}
export function jobCursor(id: i32): f64 { return <f64>job(id).cursor; }
export function jobTotal(id: i32): f64 { return <f64>job(id).total; }

export function jobDispose(id: i32): void {
  job(id).dispose();
  unchecked(jobs[id] = null);
}

/** Unsafe rebase: rewrite the backing name/format in the header (after flushing all else). */
export function setBackingFile(id: i32, name: string, format: string): void {
  setBackingHeader(image(id), name, format);
}

/** Drop every cluster of a qcow2 image (after a commit), crash-safely. */
export function makeEmpty(id: i32): void {
  const img = image(id);
  if (!(img instanceof Qcow2Image)) fail(E_BAD_ARGUMENT, "only a qcow2 image can be emptied");
  emptyImage(changetype<Qcow2Image>(img));
}
export function statusOffset(): f64 { return <f64>lastStatus.offset; }

// ---------------------------------------------------------------------------------------------
// check / repair (assembly/check.ts): qemu-img check semantics. Appended block; keep it last.
import { checkQcow2, setWindowMax, FIX_LEAKS, FIX_ERRORS } from "./check";

/**
 * qemu-img check on image `id`; `repair` 0 = none, 1 = -r leaks, 2 = -r all. Returns the JSON
 * described at checkQcow2. Repairing needs an image opened writable; open a handle just for the
 * repair and close it afterwards (a writer's cached refcounts would not see the repair).
 */
export function check(id: i32, repair: i32): string {
  const img = image(id);
  if (!(img instanceof Qcow2Image)) fail(E_BAD_ARGUMENT, "This image format does not support checks");
  if (repair < 0 || repair > 2) fail(E_BAD_ARGUMENT, "repair mode must be 0 (none), 1 (leaks) or 2 (all)");
  const q = changetype<Qcow2Image>(img);
  if (repair != 0) {
    if (!q.writable) fail(E_BAD_ARGUMENT, "repairing needs the image opened writable");
  }
  if (q.writable) q.flush();
  return checkQcow2(q, repair == 0 ? 0 : (repair == 1 ? FIX_LEAKS : FIX_LEAKS | FIX_ERRORS));
}

/** Test hook: clusters per reference-counting window of `check` (default 8 Mi). */
export function checkWindow(clusters: f64): void {
  setWindowMax(<u64>clusters);
}

/** Table-cache memory held by all open images together (bounded by ENGINE_CACHE_BUDGET past each cache's minimum). */
export function cacheBytes(): f64 {
  return <f64>engineCacheBytes();
}
