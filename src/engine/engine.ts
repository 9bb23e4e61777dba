import * as fs from 'node:fs';
import { instantiateSync } from '@assemblyscript/loader';
import { CowError, ERROR_CODES, type CowErrorCode } from '../errors.js';
import type { Backend } from './backend.js';
import { inflateCluster } from './decompress.js';
import { compressCluster } from './compress.js';
import type { SectorCipher } from './luks.js';

/**
 * The raw wasm exports (numbers only; strings come back as pointers read with __getString).
 * test/engine/boundary.test.ts holds this list against build/cowchain.wasm: names and arities.
 */
interface RawExports {
  /**
   * The linear memory (a WebAssembly.Memory): typed structurally because this interface reaches
   * the published .d.ts, and consumers' type environments need not declare WebAssembly.
   */
  memory: { readonly buffer: ArrayBuffer };
  __getString(ptr: number): string;
  __collect(): void;
  __newString(s: string): number;
  lastErrorCode(): number;
  lastErrorMessage(): number;
  clearError(): void;
  alloc(size: number): number;
  free(ptr: number): void;
  probe(handle: number): number;
  /** flags: 1 writable, 2 opened for a check (see src/image/image.ts OPEN_*). */
  openQcow2(handle: number, flags: number): number;
  openRaw(handle: number, writable: number): number;
  create(handle: number, size: number, clusterBits: number, refcountOrder: number, version: number, extendedL2: number, compressionType: number, cryptoLength: number, backingName: number, backingFormat: number): void;
  setBacking(id: number, backingId: number): void;
  close(id: number): void;
  describe(id: number): number;
  virtualSize(id: number): number;
  read(id: number, off: number, ptr: number, len: number): void;
  write(id: number, off: number, ptr: number, len: number): void;
  writeZeroes(id: number, off: number, len: number, unmap: number): void;
  discard(id: number, off: number, len: number): void;
  flush(id: number): void;
  abandon(id: number): void;
  grow(id: number, size: number): void;
  commitStart(topId: number, baseId: number, layers: number): number;
  rebaseStart(id: number, newBackingId: number): number;
  streamStart(id: number, layers: number): number;
  /** compressed: 1 stores every data cluster compressed (convert -c). */
  convertStart(srcId: number, dstId: number, compressed: number): number;
  jobStep(id: number, budget: number): number;
  jobCursor(id: number): number;
  jobTotal(id: number): number;
  jobDispose(id: number): void;
  setBackingFile(id: number, name: number, format: number): void;
  makeEmpty(id: number): void;
  blockStatus(id: number, off: number, bytes: number): number;
  statusFlags(): number;
  statusOffset(): number;
  /** qemu-img check; repair 0 none, 1 leaks, 2 all; returns a JSON string pointer (assembly/check.ts). */
  check(id: number, repair: number): number;
  checkWindow(clusters: number): void;
  /** Table-cache bytes held by all open images (assembly/tablecache.ts). */
  cacheBytes(): number;
}

export type EngineExports = Omit<RawExports, 'memory' | '__getString' | '__collect' | '__newString'>;

/** collectSoon() collects once per live-handles / COLLECT_SHARE calls. */
const COLLECT_SHARE = 8;

const WASM_URL = new URL('../../build/cowchain.wasm', import.meta.url);

/**
 * The engine as a host may supply it: the wasm bytes, or a compiled `WebAssembly.Module` (typed
 * as `object` so that consumers' type environments need not declare WebAssembly). For bundlers,
 * edge runtimes, Deno without read permission — anywhere the package's own file cannot be read.
 */
export type EngineSource = ArrayBuffer | ArrayBufferView | object;

/** A compiled engine (a WebAssembly.Module, typed opaquely for the same reason as EngineSource). */
export type CompiledEngine = object;

/** The host-supplied engine (setEngineSource), or undefined: the package's build/cowchain.wasm. */
let suppliedModule: CompiledEngine | undefined;

/**
 * A compiled engine module from a host-supplied source. Failures are ECOW_ENGINE_LOAD, never a
 * bare CompileError.
 */
export function compileEngine(source: EngineSource): CompiledEngine {
  if (source instanceof WebAssembly.Module) return source;
  const bytes = ArrayBuffer.isView(source) ? source : source instanceof ArrayBuffer ? source : null;
  if (!bytes) throw new CowError('ECOW_ENGINE_LOAD', `engine source is neither wasm bytes nor a WebAssembly.Module (got ${Object.prototype.toString.call(source)})`);
  try {
    return new WebAssembly.Module(bytes);
  } catch (e) {
    throw new CowError('ECOW_ENGINE_LOAD', `engine wasm (${bytes.byteLength} bytes) does not compile: ${(e as Error).message}`, { cause: e });
  }
}

/**
 * The engine module to run: the host-supplied one, else the package's build/cowchain.wasm,
 * read and compiled here (ECOW_ENGINE_LOAD when it cannot be read or does not compile).
 */
export function engineModule(): CompiledEngine {
  if (suppliedModule) return suppliedModule;
  let bytes: Uint8Array;
  try {
    bytes = fs.readFileSync(WASM_URL);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new CowError('ECOW_ENGINE_LOAD', `cannot read the engine ${WASM_URL.href}: ${err.code ?? err.message} (a host can supply it with setEngineSource)`, { cause: e });
  }
  suppliedModule = compileEngine(bytes);
  return suppliedModule;
}

/**
 * Run the engine from `source` (wasm bytes or a compiled WebAssembly.Module) in this thread, and
 * in engine workers started from now on, instead of reading the package's build/cowchain.wasm.
 * It is compiled and instantiated here, so a bad source fails now (ECOW_ENGINE_LOAD) and changes
 * nothing. Images already open keep the engine they were opened with.
 */
export function setEngineSource(source: EngineSource): void {
  const module = compileEngine(source);
  const engine = new Engine(module);
  suppliedModule = module;
  Engine.replace(engine);
}

/**
 * The loaded engine: one wasm instance per process, a table of numeric handles onto Backends,
 * and the translation of engine traps and host exceptions into CowErrors.
 */
export class Engine {
  private static instance: Engine | undefined;
  private readonly raw: RawExports;
  private readonly backends: (Backend | null)[] = [];
  /** Handles of `backends` that are free (null), reused last-freed first. */
  private readonly freeHandles: number[] = [];
  /** collectSoon() calls since the engine last collected. */
  private deferredCollects = 0;
  /** The unlocked cipher of each encrypted image, by handle (setCipher). */
  private readonly ciphers = new Map<number, SectorCipher>();

  static get(): Engine {
    if (!Engine.instance) Engine.instance = new Engine(engineModule());
    return Engine.instance;
  }

  /** Make `engine` the one new images open on (setEngineSource). */
  static replace(engine: Engine): void {
    Engine.instance = engine;
  }

  /** Instantiate the engine; a module that does not link (wrong imports or exports) is ECOW_ENGINE_LOAD. */
  constructor(wasm: CompiledEngine) {
    const mem = () => this.raw.memory.buffer;
    const backend = (h: number): Backend => {
      const b = this.backends[h];
      if (!b) throw new CowError('ECOW_INTERNAL', `engine used closed handle ${h}`);
      return b;
    };
    const imports = {
      host: {
        read: (h: number, ptr: number, len: number, off: number) => backend(h).read(new Uint8Array(mem(), ptr, len), off),
        write: (h: number, ptr: number, len: number, off: number) => backend(h).write(new Uint8Array(mem(), ptr, len), off),
        size: (h: number) => backend(h).size(),
        extent: (h: number, off: number, len: number) => backend(h).extent?.(off, len) ?? len,
        allocated: (h: number) => backend(h).allocated?.() ?? -1,
        truncate: (h: number, size: number) => backend(h).truncate(size),
        flush: (h: number) => backend(h).flush(),
        decompress: (type: number, src: number, srcLen: number, dst: number, dstLen: number) => {
          const out = inflateCluster(type, new Uint8Array(mem(), src, srcLen).slice(), dstLen);
          if (!out) return -1;
          new Uint8Array(mem(), dst, dstLen).set(out);
          return out.length;
        },
        ecb: (h: number, which: number, ptr: number, len: number) => {
          const cipher = this.ciphers.get(h);
          if (!cipher) throw new CowError('ECOW_KEY_REQUIRED', `${describeBackend(backend(h))} is encrypted (LUKS) and was opened without its key: give encrypt.key-secret`);
          cipher.ecbInPlace(which, new Uint8Array(mem(), ptr, len));
        },
        compress: (type: number, src: number, srcLen: number, dst: number, dstCap: number) => {
          const out = compressCluster(type, new Uint8Array(mem(), src, srcLen), dstCap);
          if (!out) return -1;
          new Uint8Array(mem(), dst, out.length).set(out);
          return out.length;
        },
      },
      env: {
        abort: (msg: number, file: number, line: number, col: number) => {
          const text = msg ? this.raw.__getString(msg) : 'abort';
          const where = file ? this.raw.__getString(file) : '?';
          throw new CowError('ECOW_INTERNAL', `engine abort: ${text} at ${where}:${line}:${col}`);
        },
      },
    };
    let raw: RawExports;
    try {
      raw = instantiateSync<Record<string, unknown>>(wasm as WebAssembly.Module, imports).exports as unknown as RawExports;
    } catch (e) {
      throw new CowError('ECOW_ENGINE_LOAD', `engine wasm does not instantiate: ${(e as Error).message}`, { cause: e });
    }
    for (const name of ['memory', 'openQcow2', 'jobStep', 'check', '__getString'] as const) {
      if (!raw[name]) throw new CowError('ECOW_ENGINE_LOAD', `engine wasm lacks the export ${name}: not a cowchain engine (or another version)`);
    }
    this.raw = raw;
  }

  /** Wasm linear memory, as a fresh view (memory may have grown since the last call). */
  bytes(ptr: number, len: number): Uint8Array {
    return new Uint8Array(this.raw.memory.buffer, ptr, len);
  }

  /** Size of the wasm linear memory in bytes (it only grows); for memory-bound checks. */
  memoryBytes(): number {
    return this.raw.memory.buffer.byteLength;
  }

  /** Bytes of L2 / refcount-block caches held by all open images together. */
  cacheBytes(): number {
    return this.raw.cacheBytes();
  }

  string(ptr: number): string {
    return this.raw.__getString(ptr);
  }

  /** A string in engine memory; valid until the next collect(). */
  newString(s: string): number {
    return this.raw.__newString(s);
  }

  addBackend(b: Backend): number {
    // A free list, not a scan for a null slot: opening a chain of n images registers n handles.
    const free = this.freeHandles.pop();
    if (free !== undefined) {
      this.backends[free] = b;
      return free;
    }
    this.backends.push(b);
    return this.backends.length - 1;
  }

  removeBackend(h: number): void {
    if (this.backends[h] === null || h < 0 || h >= this.backends.length) return;
    this.backends[h] = null;
    this.freeHandles.push(h);
    this.ciphers.delete(h);
  }

  /** Backends registered now: in a deep chain, one per open image. */
  private liveHandles(): number {
    return this.backends.length - this.freeHandles.length;
  }

  /** The cipher whose AES-ECB the engine's ecb import uses for an encrypted image's data on handle `h`. */
  setCipher(h: number, cipher: SectorCipher): void {
    this.ciphers.set(h, cipher);
  }

  /**
   * Run engine calls. An engine error traps (WebAssembly.RuntimeError) after recording its code and
   * message; a host exception (fs error) unwinds through the wasm frames. Both become CowErrors.
   */
  call<T>(fn: (e: EngineExports) => T): T {
    try {
      return fn(this.raw);
    } catch (e) {
      throw this.translate(e);
    }
  }

  /** Reclaim engine garbage; only valid between calls (the minimal runtime does not scan the stack). */
  collect(): void {
    this.deferredCollects = 0;
    this.raw.__collect();
  }

  /**
   * collect(), amortised, for the calls made once per image of a chain (open, header, close),
   * whose garbage is a few small objects. A collection marks everything live, and in a deep
   * chain that is mostly the open images: collecting after each of them made opening and closing
   * a chain of n images cost n² (a 999-deep chain: 2.5 s of CPU in __collect/__visit_members).
   * Collecting once per COLLECT_SHARE-th of the live handles' count of such calls keeps each
   * call's share of the marking constant, and the garbage held back at most that share of a
   * chain's per-image garbage; with up to COLLECT_SHARE images open it collects every time.
   */
  collectSoon(): void {
    if (++this.deferredCollects * COLLECT_SHARE < this.liveHandles()) return;
    this.collect();
  }

  private translate(e: unknown): Error {
    if (e instanceof CowError) return e;
    if (e instanceof WebAssembly.RuntimeError) {
      const code = this.raw.__getString(this.raw.lastErrorCode());
      const message = this.raw.__getString(this.raw.lastErrorMessage());
      this.raw.clearError();
      if (code && code in ERROR_CODES) return new CowError(code as CowErrorCode, message, { cause: e });
      return new CowError('ECOW_INTERNAL', `engine trapped: ${e.message}`, { cause: e });
    }
    const err = e as NodeJS.ErrnoException;
    return new CowError('ECOW_IO', `host I/O failed: ${err?.message ?? String(e)}`, { cause: e });
  }
}

/** Size of the engine's linear memory (it only grows): the engine's whole heap, caches included. */
export function engineMemoryBytes(): number {
  return Engine.get().memoryBytes();
}

/** A backend's name for messages: its path when it has one. */
function describeBackend(b: Backend): string {
  const p = (b as { path?: unknown }).path;
  return typeof p === 'string' ? `image ${p}` : 'the image';
}
