/**
 * The part of Cinder's API that Nova calls back: `POST /v3/{project_id}/snapshots/{id}/action`
 * (or, from API 3.67 on, `/v3/snapshots/{id}/action` without the project) with
 * `{"os-update_snapshot_status": {...}}`, applied to a `SnapshotStatusStore` with Cinder's rules
 * and answers (202 on success, OpenStack fault bodies otherwise). A refused report is also passed
 * to the store (the waiting operation fails instead of timing out) and to `onRejected` (a log).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type RequestListener, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CowError, isCowError } from '../errors.js';
import { updateSnapshotStatusSchema } from './schemas.js';
import type { SnapshotStatusStore, StatusRejection } from './status-store.js';

/** Options of `createStatusHandler` (a request listener to mount in your own HTTP server). */
export interface StatusHandlerOptions {
  /** Where the reports go: the same store the `NovaHypervisor` waits on. */
  store: SnapshotStatusStore;
  /** The token Nova must send as `X-Auth-Token`. */
  token: string;
  /** Larger request bodies get 413; default 64 KiB. A real update is well under 100 bytes. */
  maxBodyBytes?: number;
  /** Every refused request, e.g. to log it. */
  onRejected?: (rejection: StatusRejection & { method: string; url: string }) => void;
}

/** Options of `startStatusServer`: the handler's, and where to listen. */
export interface StatusServerOptions extends StatusHandlerOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0 (any free port). */
  port?: number;
}

/** A running status endpoint. */
export interface StatusServer {
  /** Base URL to give Nova as Cinder's endpoint, e.g. `http://127.0.0.1:43121` (no `/v3`). */
  readonly url: string;
  /** Stop listening and close its connections (keep-alive ones too). */
  close(): Promise<void>;
}

const ACTION_PATH = /^\/v3\/(?:([^/]+)\/)?snapshots\/([^/]+)\/action$/;
/** A snapshot id anywhere in a path, to tell a waiter that its report was refused. */
const ANY_SNAPSHOT = /\/snapshots\/([^/]+)/;

/** Cinder's fault names (`cinder/api/openstack/wsgi.py`), used as the key of error bodies. */
const FAULT_NAMES: Readonly<Record<number, string>> = {
  400: 'badRequest',
  401: 'unauthorized',
  404: 'itemNotFound',
  405: 'badMethod',
  413: 'overLimit',
  500: 'computeFault',
};

/**
 * A request listener serving the status action; anything else gets 404. The project id in
 * the path is not checked: snapshots are keyed by id alone, and the token is what authorises.
 */
export function createStatusHandler(options: StatusHandlerOptions): RequestListener {
  const { store } = options;
  const maxBodyBytes = options.maxBodyBytes ?? 64 * 1024;
  if (!Number.isInteger(maxBodyBytes) || maxBodyBytes <= 0) {
    throw new CowError('ECOW_BAD_ARGUMENT', `maxBodyBytes must be a positive integer, got ${maxBodyBytes}`);
  }
  if (options.token.length === 0) {
    throw new CowError('ECOW_BAD_ARGUMENT', 'the status endpoint token must not be empty');
  }
  const expectedToken = digest(options.token);

  return (req, res) => {
    handle(req, res)
      .catch((error: unknown) => {
        if (!res.headersSent) fault(res, 500, `status update failed: ${String(error)}`);
        else res.destroy();
      })
      .finally(() => {
        if (res.statusCode < 400) return;
        const r = { httpStatus: res.statusCode, message: faultMessages.get(res) ?? `HTTP ${res.statusCode}`, snapshotId: snapshotIn(req.url) };
        store.rejected(r);
        options.onRejected?.({ ...r, method: req.method ?? '', url: req.url ?? '' });
      });
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const match = ACTION_PATH.exec(new URL(req.url ?? '/', 'http://localhost').pathname);
    if (match === null) return fault(res, 404, `no route for ${req.method} ${req.url}`);
    if (req.method !== 'POST') {
      res.setHeader('Allow', 'POST');
      return fault(res, 405, `method ${req.method} is not allowed on ${req.url}`);
    }
    const token = req.headers['x-auth-token'];
    if (typeof token !== 'string' || !timingSafeEqual(digest(token), expectedToken)) {
      return fault(res, 401, 'the X-Auth-Token is missing or wrong');
    }
    let snapshotId: string;
    try {
      snapshotId = decodeURIComponent(match[2]);
    } catch {
      return fault(res, 400, `malformed snapshot id ${JSON.stringify(match[2])}`);
    }

    const body = await readBody(req, maxBodyBytes);
    if (body === undefined) return fault(res, 413, `request body larger than ${maxBodyBytes} bytes`);
    let json: unknown;
    try {
      json = JSON.parse(body.toString('utf8'));
    } catch {
      return fault(res, 400, 'request body is not JSON');
    }
    const parsed = updateSnapshotStatusSchema.safeParse(json);
    if (!parsed.success) return fault(res, 400, `invalid os-update_snapshot_status body: ${parsed.error.message}`);

    try {
      store.update(snapshotId, parsed.data['os-update_snapshot_status']);
    } catch (error) {
      if (isCowError(error, 'ECOW_NOT_FOUND')) return fault(res, 404, error.message);
      if (isCowError(error, 'ECOW_BAD_STATUS_UPDATE')) return fault(res, 400, error.message);
      throw error;
    }
    res.writeHead(202, { 'Content-Length': '0' }).end();
  }
}

/** Serve `createStatusHandler` on its own HTTP server. */
export async function startStatusServer(options: StatusServerOptions): Promise<StatusServer> {
  const server = createServer(createStatusHandler(options));
  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        // Keep-alive connections would hold close() open until they time out.
        server.closeAllConnections();
      }),
  };
}

/**
 * The body, or undefined once it exceeds `limit`. The rest is then left unread (not
 * destroyed, so the 413 can still be sent; `fault` closes the connection after it).
 */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  if (Number(req.headers['content-length'] ?? 0) > limit) return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size <= limit) {
        chunks.push(chunk);
        return;
      }
      req.off('data', onData).off('end', onEnd).off('error', reject);
      req.pause();
      resolve(undefined);
    };
    const onEnd = (): void => resolve(Buffer.concat(chunks));
    req.on('data', onData).on('end', onEnd).on('error', reject);
  });
}

/** The message of each fault answered, for the rejection report. */
const faultMessages = new WeakMap<ServerResponse, string>();

/** Answer with an OpenStack fault body; closes the connection when the body was left unread. */
function fault(res: ServerResponse, status: number, message: string): void {
  faultMessages.set(res, message);
  const body = JSON.stringify({ [FAULT_NAMES[status]]: { message, code: status } });
  const headers: Record<string, string> = {
    'Content-Type': 'application/json',
    'Content-Length': String(Buffer.byteLength(body)),
  };
  if (!res.req.readableEnded) headers.Connection = 'close';
  res.writeHead(status, headers).end(body);
}

function snapshotIn(url: string | undefined): string | null {
  const m = ANY_SNAPSHOT.exec(new URL(url ?? '/', 'http://localhost').pathname);
  if (!m) return null;
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return null;
  }
}

/** Fixed-length digests, so `timingSafeEqual` compares tokens of any length. */
function digest(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}
