// An HTTP service that embeds the volume driver, as a control plane would: one VolumeDriver for
// one share, its engine jobs in worker threads (the event loop stays free for requests), Nova for
// attached volumes, and ONE long-lived status endpoint where Nova reports progress, shared by
// every operation (the CLI starts one per command instead).
//
//   VOLUME_DIR=/mnt/share LISTEN=127.0.0.1:8080 STATUS_LISTEN=0.0.0.0:8776 \
//   NOVA_ENDPOINT=http://nova:8774/v2.1 NOVA_TOKEN=… STATUS_TOKEN=… \
//   node --experimental-strip-types examples/http-service.ts        (or compile it with tsc)
//
// Nova's [cinder] endpoint must reach STATUS_LISTEN, and send STATUS_TOKEN as X-Auth-Token.
// Routes (JSON in and out; ids are uuids):
//   PUT    /volumes/:vol                      {"size": "10G", "format": "qcow2"}  create
//   GET    /volumes/:vol                                                          describe
//   DELETE /volumes/:vol                                                          delete
//   PUT    /volumes/:vol/snapshots/:snap      {"status": "available" | "in-use"} snapshot
//   DELETE /volumes/:vol/snapshots/:snap      {"status": "available" | "in-use"} delete snapshot
// A CowError answers with its code: 400 for bad input, 404 not found, 409 conflicts, else 500.
// Prints `listening on http://HOST:PORT` once ready; SIGTERM or SIGINT stops it cleanly.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as z from 'zod';
import { VolumeDriver, defaultEnginePool, isCowError, isUuid, parseSize, type CowErrorCode } from 'cowchain';
import { NovaClient, NovaHypervisor, SnapshotStatusStore, startStatusServer } from 'cowchain/nova';

const Env = z.object({
  VOLUME_DIR: z.string().min(1),
  LISTEN: z.string().regex(/^[^:]+:\d+$/).default('127.0.0.1:8080'),
  STATUS_LISTEN: z.string().regex(/^[^:]+:\d+$/).default('127.0.0.1:8776'),
  NOVA_ENDPOINT: z.url().optional(),
  NOVA_TOKEN: z.string().min(1).optional(),
  STATUS_TOKEN: z.string().min(1).optional(),
});
const env = Env.parse(process.env);
const hostPort = (s: string) => ({ host: s.slice(0, s.lastIndexOf(':')), port: Number(s.slice(s.lastIndexOf(':') + 1)) });

// Nova is optional: without it, attached volumes fail with ECOW_HYPERVISOR_UNAVAILABLE.
const store = new SnapshotStatusStore();
const nova = env.NOVA_ENDPOINT && env.NOVA_TOKEN && env.STATUS_TOKEN ? { endpoint: env.NOVA_ENDPOINT, token: env.NOVA_TOKEN, statusToken: env.STATUS_TOKEN } : null;
const status = nova
  ? await startStatusServer({ store, token: nova.statusToken, ...hostPort(env.STATUS_LISTEN), onRejected: (r) => console.error(`status report refused: ${r.method} ${r.url}: ${r.message}`) })
  : null;
const driver = new VolumeDriver({
  dir: env.VOLUME_DIR,
  jobs: defaultEnginePool(),
  hypervisor: nova ? new NovaHypervisor({ client: new NovaClient({ endpoint: nova.endpoint, token: nova.token }), store }) : undefined,
  onWarning: (message) => console.error(`warning: ${message}`),
});

const CreateBody = z.strictObject({ size: z.string().min(1), format: z.enum(['raw', 'qcow2']).default('raw') });
const SnapshotBody = z.strictObject({ status: z.enum(['available', 'in-use']) });

class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

async function body<T>(req: IncomingMessage, schema: z.ZodType<T>): Promise<T> {
  let text = '';
  for await (const chunk of req) {
    text += chunk;
    if (text.length > 64 * 1024) throw new HttpError(413, 'request body over 64 KiB');
  }
  let json: unknown;
  try {
    json = text === '' ? {} : JSON.parse(text);
  } catch {
    throw new HttpError(400, 'the body is not JSON');
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) throw new HttpError(400, parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '));
  return parsed.data;
}

function uuid(value: string, what: string): string {
  if (!isUuid(value)) throw new HttpError(400, `${what} ${JSON.stringify(value)} is not a uuid`);
  return value;
}

const CONFLICTS: CowErrorCode[] = ['ECOW_EXISTS', 'ECOW_LOCKED', 'ECOW_IMAGE_LOCKED', 'ECOW_INVALID_STATE', 'ECOW_NEEDS_FSCK', 'ECOW_CHAIN_TOO_DEEP', 'ECOW_FORMAT_CONFLICT'];
function httpStatusOf(code: CowErrorCode): number {
  if (code === 'ECOW_NOT_FOUND') return 404;
  if (code === 'ECOW_BAD_ARGUMENT' || code === 'ECOW_BAD_SIZE') return 400;
  return CONFLICTS.includes(code) ? 409 : 500;
}

async function route(req: IncomingMessage): Promise<[number, unknown]> {
  const url = new URL(req.url ?? '/', 'http://service');
  const parts = url.pathname.split('/').filter(Boolean);
  if (parts[0] !== 'volumes' || parts.length < 2) throw new HttpError(404, `no route ${url.pathname}`);
  const volume = uuid(parts[1], 'volume id');
  if (parts.length === 2) {
    if (req.method === 'PUT') {
      const b = await body(req, CreateBody);
      return [201, await driver.createVolume(volume, parseSize(b.size), { format: b.format })];
    }
    if (req.method === 'GET') return [200, await driver.volumeInfo(volume)];
    if (req.method === 'DELETE') return [200, await driver.deleteVolume(volume)];
  }
  if (parts.length === 4 && parts[2] === 'snapshots') {
    const snapshot = uuid(parts[3], 'snapshot id');
    const { status: volumeStatus } = await body(req, SnapshotBody);
    if (req.method === 'PUT') return [201, await driver.createSnapshot(volume, snapshot, { status: volumeStatus })];
    if (req.method === 'DELETE') return [200, await driver.deleteSnapshot(volume, snapshot, { status: volumeStatus })];
  }
  throw new HttpError(405, `${req.method} ${url.pathname} is not supported`);
}

function reply(res: ServerResponse, code: number, value: unknown): void {
  res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(value));
}

const server = createServer((req, res) => {
  route(req).then(
    ([code, value]) => reply(res, code, value),
    (e: unknown) => {
      if (e instanceof HttpError) reply(res, e.status, { error: e.message });
      else if (isCowError(e)) reply(res, httpStatusOf(e.code), { error: e.message, code: e.code });
      else {
        console.error(e);
        reply(res, 500, { error: 'internal error' });
      }
    },
  );
});
const listen = hostPort(env.LISTEN);
await new Promise<void>((resolve) => server.listen(listen.port, listen.host, resolve));
const address = server.address() as AddressInfo;
console.log(`listening on http://${address.address}:${address.port}${status ? `; Nova reports to ${status.url}` : ''}`);

async function stop(): Promise<void> {
  // Finish the requests in flight (a snapshot delete may take a while), then stop.
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await status?.close();
  console.log('stopped');
}
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => void stop());
