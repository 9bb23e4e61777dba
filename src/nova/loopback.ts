/**
 * A loopback Nova for tests and the demo: a real HTTP server on 127.0.0.1 serving
 * `os-assisted-volume-snapshots`, playing libvirt with our own engine on a simulated guest that
 * keeps writing while the live operations run, and reporting back to Cinder's status endpoint.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import * as z from 'zod';
import { openImage, openImageOn } from '../image/open-chain.js';
import { FileBackend } from '../engine/backend.js';
import { closeLayer, type Image } from '../image/image.js';
import { commitLive, dropCommitted, streamLive } from '../image/live.js';
import { readInfo } from '../volume/info-file.js';
import { CowError } from '../errors.js';
import { createInfoSchema, deleteInfoSchema } from './schemas.js';

/** Switches that make the loopback Nova misbehave, for the failure tests. */
export interface LoopbackFaults {
  /** Answer 500 to snapshot creation. */
  createFails?: boolean;
  /** Report `error_deleting` halfway through a delete. */
  deleteErrors?: boolean;
  /** Do the work but never report progress. */
  neverReport?: boolean;
  /** Answer 401 to every request. */
  rejectToken?: boolean;
  /** Accept create and delete requests (2xx), then neither act nor report: a silent Nova. */
  acceptOnly?: boolean;
  /** The guest does not write right after a switch (the new overlay stays empty). */
  quietGuest?: boolean;
  /**
   * Act on create and delete requests and report as usual, but never answer them: the answer
   * is lost on the way, and the client's request times out.
   */
  loseAnswers?: boolean;
}

export interface LoopbackNovaOptions {
  /** The token cowchain's Nova client must send. */
  token: string;
  /** Cinder's endpoint for status reports, e.g. `http://127.0.0.1:1234/v3/<project>`. */
  statusUrl: string;
  /** The token the status endpoint expects from Nova. */
  statusToken: string;
  faults?: LoopbackFaults;
  /** Guest bytes per engine step of a live merge; the guest writes once between steps. */
  stepBytes?: number;
}

/** One write the guest made: the test checks the last write of every slot is still there. */
export interface GuestWrite {
  offset: number;
  length: number;
  pattern: number;
}

/**
 * A running VM's disk: the open chain of the volume's active file, written to now and then. Its
 * writes go to whatever file is active at that moment, as a guest's would.
 */
export class SimulatedGuest {
  readonly writes: GuestWrite[] = [];
  private counter = 0;

  constructor(
    readonly volumeId: string,
    readonly dir: string,
    public image: Image,
    private readonly slot = 64 * 1024,
    /** The disk's LUKS secret (libvirt's secret for an encrypted volume): opens the overlays Cinder creates. */
    readonly keySecret?: Uint8Array,
  ) {}

  /** One guest write of a fresh pattern into one of a handful of slots at the front of the disk. */
  write(): void {
    const slots = Math.max(1, Math.min(16, Math.floor(this.image.virtualSize / this.slot)));
    const n = this.counter++;
    const offset = (n % slots) * this.slot;
    const pattern = (n % 250) + 1;
    this.image.write(offset, new Uint8Array(this.slot).fill(pattern));
    this.writes.push({ offset, length: this.slot, pattern });
  }

  /** The last pattern written to each slot: what the disk must still show. */
  expected(): GuestWrite[] {
    const last = new Map<number, GuestWrite>();
    for (const w of this.writes) last.set(w.offset, w);
    return [...last.values()];
  }

  activeName(): string {
    return path.basename(this.image.filename);
  }

  /** Files of the chain, active first (bare names). */
  chainNames(): string[] {
    return this.image.chain().map((i) => path.basename(i.filename));
  }

  shutdown(): void {
    this.image.close();
  }
}

const createBodySchema = z.strictObject({
  snapshot: z.strictObject({ volume_id: z.string().min(1), create_info: createInfoSchema }),
});

export class LoopbackNova {
  readonly faults: LoopbackFaults;
  private readonly guests = new Map<string, SimulatedGuest>();
  private readonly pending = new Set<Promise<void>>();
  /** Requests left unanswered (loseAnswers), cut when the server stops. */
  private readonly unanswered = new Set<ServerResponse>();
  private server = createServer((req, res) => void this.handle(req, res));
  private base = '';

  constructor(private readonly options: LoopbackNovaOptions) {
    this.faults = options.faults ?? {};
  }

  /** Start listening on 127.0.0.1; returns the endpoint to give the Nova client. */
  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    const { port } = this.server.address() as AddressInfo;
    this.base = `http://127.0.0.1:${port}/v2.1`;
    return this.base;
  }

  /**
   * Boot a guest on the volume's active file (from its info file, else the base file). An
   * encrypted volume needs its `keySecret`, as Nova fetches it from the key manager at attach.
   */
  async attach(volumeId: string, dir: string, options: { keySecret?: Uint8Array } = {}): Promise<SimulatedGuest> {
    const info = await readInfo(dir, volumeId);
    const active = info?.active ?? `volume-${volumeId}`;
    const secret = options.keySecret;
    const keySecrets = secret && (() => secret);
    // A hypervisor may write to any file of the chain during a live merge.
    const probe = openImage(path.join(dir, active));
    const depth = probe.chain().length;
    probe.close();
    const image = openImage(path.join(dir, active), { writable: true, writableDepths: Array.from({ length: depth }, (_, i) => i + 1), keySecrets });
    const guest = new SimulatedGuest(volumeId, dir, image, undefined, secret);
    this.guests.set(volumeId, guest);
    return guest;
  }

  guest(volumeId: string): SimulatedGuest {
    const g = this.guests.get(volumeId);
    if (!g) throw new CowError('ECOW_NOT_FOUND', `no guest is attached to volume ${volumeId}`);
    return g;
  }

  /** Shut the guest down (its chain is flushed and closed). Waits for live work first. */
  async detach(volumeId: string): Promise<void> {
    await this.idle();
    this.guest(volumeId).shutdown();
    this.guests.delete(volumeId);
  }

  /** Resolves when no live operation is running. */
  async idle(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
  }

  async stop(): Promise<void> {
    await this.idle();
    for (const g of this.guests.values()) g.shutdown();
    this.guests.clear();
    for (const res of this.unanswered) res.destroy();
    this.unanswered.clear();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    // A connection whose request was left unanswered and then abandoned by the client (it timed
    // out) would hold close() open for seconds, until the client's keep-alive gave it up.
    this.server.closeAllConnections();
    await closed;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      if (this.faults.rejectToken || req.headers['x-auth-token'] !== this.options.token) return reply(res, 401, { unauthorized: { code: 401, message: 'Authentication required' } });
      const url = new URL(req.url ?? '/', 'http://loopback');
      const prefix = '/v2.1/os-assisted-volume-snapshots';
      if (req.method === 'POST' && url.pathname === prefix) return await this.create(req, res);
      if (req.method === 'DELETE' && url.pathname.startsWith(prefix + '/')) return this.delete(decodeURIComponent(url.pathname.slice(prefix.length + 1)), url, res);
      reply(res, 404, { itemNotFound: { code: 404, message: `no route for ${req.method} ${url.pathname}` } });
    } catch (e) {
      reply(res, 400, { badRequest: { code: 400, message: (e as Error).message } });
    }
  }

  private async create(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = createBodySchema.safeParse(JSON.parse(await readBody(req)));
    if (!body.success) return reply(res, 400, { badRequest: { code: 400, message: `Invalid input for field/attribute snapshot: ${body.error.message}` } });
    if (this.faults.createFails) return reply(res, 500, { computeFault: { code: 500, message: 'Unexpected API Error (fault switch)' } });
    const { volume_id: volumeId, create_info: info } = body.data.snapshot;
    const guest = this.guests.get(volumeId);
    if (!guest) return reply(res, 400, { badRequest: { code: 400, message: `volume ${volumeId} is not attached to any instance` } });
    this.accept(res, 200, { snapshot: { id: null, volumeId } });
    if (this.faults.acceptOnly) return;
    // Like Nova's compute manager: the switch happens after the API answered (an RPC cast).
    this.background(async () => {
      try {
        const file = path.join(guest.dir, info.new_file);
        const expectedBacking = guest.activeName();
        // libvirt's external snapshot flushes the disk first: the old active file becomes read-only history.
        guest.image.flush();
        const overlay = openImageOn(new FileBackend(file, true), { name: file, format: 'qcow2', writable: true, backing: guest.image, keySecret: guest.keySecret });
        if (overlay.headerInfo().backingFile !== expectedBacking) {
          closeLayer(overlay);
          throw new Error(`${info.new_file} is not backed by the active file ${expectedBacking}`);
        }
        guest.image = overlay;
        if (!this.faults.quietGuest) guest.write();
        await this.report(info.snapshot_id, 'creating', '90%');
      } catch {
        await this.report(info.snapshot_id, 'error', null);
      }
    });
  }

  /** Answer an accepted request — unless its answer is to be lost (loseAnswers). */
  private accept(res: ServerResponse, status: number, body?: unknown): void {
    if (this.faults.loseAnswers) {
      this.unanswered.add(res);
      return;
    }
    if (body === undefined) res.writeHead(status).end();
    else reply(res, status, body);
  }

  private delete(snapshotId: string, url: URL, res: ServerResponse): void {
    const raw = url.searchParams.get('delete_info');
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw ?? '');
    } catch {
      return reply(res, 400, { badRequest: { code: 400, message: 'delete_info is not JSON' } });
    }
    const info = deleteInfoSchema.safeParse(parsed);
    if (!info.success) return reply(res, 400, { badRequest: { code: 400, message: `Invalid delete_info: ${info.error.message}` } });
    const guest = this.guests.get(info.data.volume_id);
    if (!guest) return reply(res, 400, { badRequest: { code: 400, message: `volume ${info.data.volume_id} is not attached` } });
    this.accept(res, 204);
    if (this.faults.acceptOnly) return;
    this.background(async () => {
      try {
        this.merge(guest, info.data.file_to_merge, info.data.merge_target_file);
        await this.report(snapshotId, 'deleting', '90%');
      } catch {
        await this.report(snapshotId, 'error_deleting', null);
      }
    });
  }

  /** libvirt's blockRebase (pull into the active file) or blockCommit (merge a lower file down). */
  private merge(guest: SimulatedGuest, fileToMerge: string | null, mergeTarget: string | null): void {
    const names = guest.chainNames();
    const chain = guest.image.chain();
    const stepBytes = this.options.stepBytes ?? 1 << 20;
    let steps = 0;
    const onProgress = () => {
      // The guest keeps running: one write between job steps.
      guest.write();
      if (this.faults.deleteErrors && ++steps >= 2) throw new CowError('ECOW_IO', 'simulated block job failure (fault switch)');
    };
    if (mergeTarget === null) {
      const depth = fileToMerge === null ? chain.length : names.indexOf(fileToMerge);
      if (depth < 1) throw new Error(`${fileToMerge} is not below the active file`);
      streamLive(guest.image, depth, { onProgress, stepBytes });
      if (this.faults.deleteErrors) throw new CowError('ECOW_IO', 'simulated block job failure (fault switch)');
      return;
    }
    const at = names.indexOf(fileToMerge ?? '');
    if (at < 1 || names[at + 1] !== mergeTarget) throw new Error(`${fileToMerge} is not a non-active file backed by ${mergeTarget}`);
    commitLive(chain[at], 1, { onProgress, stepBytes });
    if (this.faults.deleteErrors) throw new CowError('ECOW_IO', 'simulated block job failure (fault switch)');
    dropCommitted(chain[at - 1]);
  }

  private async report(snapshotId: string, status: string, progress: string | null): Promise<void> {
    if (this.faults.neverReport) return;
    await fetch(`${this.options.statusUrl}/snapshots/${encodeURIComponent(snapshotId)}/action`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-auth-token': this.options.statusToken },
      body: JSON.stringify({ 'os-update_snapshot_status': progress === null ? { status } : { status, progress } }),
    }).catch(() => undefined);
  }

  private background(work: () => Promise<void>): void {
    const p = new Promise<void>((resolve) => setImmediate(resolve)).then(work).finally(() => this.pending.delete(p));
    this.pending.add(p);
  }
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > 1 << 20) throw new Error('request body too large');
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}
