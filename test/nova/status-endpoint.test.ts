import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  createStatusHandler,
  NovaClient,
  SnapshotStatusStore,
  startStatusServer,
  waitForProgress,
  type StatusServer,
} from '../../src/nova/index.js';
import { startFakeNova } from './fake-nova.js';

const TOKEN = 'cinder-secret';
let store: SnapshotStatusStore;
let server: StatusServer;

beforeEach(async () => {
  store = new SnapshotStatusStore();
  server = await startStatusServer({ store, token: TOKEN });
});
afterEach(async () => {
  await server.close();
});

function actionUrl(snapshotId: string, base = server.url): string {
  return `${base}/v3/project-1/snapshots/${snapshotId}/action`;
}

/** `token: null` sends no X-Auth-Token at all. */
async function post(url: string, body: unknown, token: string | null = TOKEN) {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...(token === null ? {} : { 'X-Auth-Token': token }) },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, text, json: text ? (JSON.parse(text) as Record<string, { message: string; code: number }>) : undefined };
}

/** Raw request with control over framing (fetch would not send a lying or chunked body). */
function rawPost(
  path: string,
  chunks: Buffer[],
  headers: Record<string, string>,
): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(server.url);
  return new Promise((resolve, reject) => {
    const req = request({ host: hostname, port, path, method: 'POST', headers }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts).toString() }));
    });
    req.on('error', reject);
    for (const chunk of chunks) req.write(chunk);
    req.end();
  });
}

const update = (status: string, progress?: string) => ({
  'os-update_snapshot_status': progress === undefined ? { status } : { status, progress },
});

describe('status endpoint', () => {
  it('applies a valid update and answers 202 with no body', async () => {
    store.set('snap-1', 'creating', '0%');
    const res = await post(actionUrl('snap-1'), update('creating', '90%'));
    expect(res.status).toBe(202);
    expect(res.text).toBe('');
    expect(store.get('snap-1')).toEqual({ status: 'creating', progress: '90%' });
  });

  it('accepts an update without progress', async () => {
    store.set('snap-1', 'deleting', '5%');
    expect((await post(actionUrl('snap-1'), update('error_deleting'))).status).toBe(202);
    expect(store.get('snap-1')).toEqual({ status: 'error_deleting', progress: '5%' });
  });

  it.each([
    ['a wrong token', 'nope'],
    ['a token with the right prefix', `${TOKEN}x`],
    ['no token', null],
  ])('answers 401 to %s and changes nothing', async (_, token) => {
    store.set('snap-1', 'creating');
    const res = await post(actionUrl('snap-1'), update('error', '90%'), token);
    expect(res.status).toBe(401);
    expect(res.json?.unauthorized.code).toBe(401);
    expect(store.get('snap-1')).toEqual({ status: 'creating', progress: null });
  });

  it.each([
    ['invalid JSON', '{"os-update_snapshot_status": '],
    ['a missing status', { 'os-update_snapshot_status': { progress: '90%' } }],
    ['an unknown inner key', { 'os-update_snapshot_status': { status: 'creating', extra: 1 } }],
    ['an unknown outer key', { ...update('creating'), other: {} }],
    ['a numeric status', { 'os-update_snapshot_status': { status: 1 } }],
    ['progress without %', update('creating', '90')],
    ['progress over 100%', update('creating', '101%')],
    ['a JSON array', '[]'],
  ])('answers 400 to %s', async (_, body) => {
    store.set('snap-1', 'creating', '0%');
    const res = await post(actionUrl('snap-1'), body);
    expect(res.status).toBe(400);
    expect(res.json?.badRequest.code).toBe(400);
    expect(store.get('snap-1')).toEqual({ status: 'creating', progress: '0%' });
  });

  it('answers 400 to a transition Cinder refuses, naming both statuses', async () => {
    store.set('snap-1', 'deleting');
    const res = await post(actionUrl('snap-1'), update('available', '90%'));
    expect(res.status).toBe(400);
    expect(res.json?.badRequest.message).toContain('"available"');
    expect(res.json?.badRequest.message).toContain('"deleting"');
    expect(store.get('snap-1')).toEqual({ status: 'deleting', progress: null });
  });

  it('answers 400 to any update of a snapshot that is neither creating nor deleting', async () => {
    store.set('snap-1', 'available');
    expect((await post(actionUrl('snap-1'), update('available'))).status).toBe(400);
  });

  it('answers 404 for an unknown snapshot', async () => {
    const res = await post(actionUrl('unknown-snap'), update('creating', '90%'));
    expect(res.status).toBe(404);
    expect(res.json?.itemNotFound.message).toContain('unknown-snap');
  });

  it.each(['/v3/p/snapshots/snap-1', '/v2/p/snapshots/snap-1/action', '/v3/p/volumes/snap-1/action', '/'])(
    'answers 404 for the route %s',
    async (path) => {
      store.set('snap-1', 'creating');
      expect((await post(`${server.url}${path}`, update('creating', '90%'))).status).toBe(404);
      expect(store.get('snap-1')?.progress).toBeNull();
    },
  );

  it('answers 405 to another method on the action route', async () => {
    const res = await fetch(actionUrl('snap-1'), { headers: { 'X-Auth-Token': TOKEN } });
    expect(res.status).toBe(405);
    expect(res.headers.get('allow')).toBe('POST');
  });

  it('answers 413 to a declared body over 64 KiB', async () => {
    store.set('snap-1', 'creating');
    const big = Buffer.alloc(64 * 1024 + 1, 0x20);
    const res = await rawPost('/v3/p/snapshots/snap-1/action', [big], {
      'X-Auth-Token': TOKEN,
      'Content-Type': 'application/json',
      'Content-Length': String(big.length),
    });
    expect(res.status).toBe(413);
    expect(JSON.parse(res.body).overLimit.code).toBe(413);
    expect(store.get('snap-1')?.progress).toBeNull();
  });

  it('answers 413 on the declared length alone, before the body arrives', async () => {
    const { hostname, port } = new URL(server.url);
    const status = await new Promise<number | undefined>((resolve, reject) => {
      const req = request({
        host: hostname,
        port,
        path: '/v3/p/snapshots/snap-1/action',
        method: 'POST',
        headers: { 'X-Auth-Token': TOKEN, 'Content-Length': String(10 * 1024 * 1024) },
      });
      req.on('response', (res) => {
        resolve(res.statusCode);
        req.destroy();
      });
      req.on('error', reject);
      req.flushHeaders();
    });
    expect(status).toBe(413);
  });

  it('answers 413 to a chunked body that grows over the limit', async () => {
    store.set('snap-1', 'creating');
    const chunk = Buffer.alloc(16 * 1024, 0x20);
    const res = await rawPost('/v3/p/snapshots/snap-1/action', [chunk, chunk, chunk, chunk, chunk], {
      'X-Auth-Token': TOKEN,
      'Transfer-Encoding': 'chunked',
    });
    expect(res.status).toBe(413);
  });

  it('accepts a body exactly at a configured limit and refuses one byte more', async () => {
    const small = await startStatusServer({ store, token: TOKEN, maxBodyBytes: 80 });
    try {
      store.set('snap-1', 'creating');
      const body = JSON.stringify(update('creating', '90%'));
      const padded = body.padEnd(80, ' ');
      expect((await post(actionUrl('snap-1', small.url), padded)).status).toBe(202);
      expect((await post(actionUrl('snap-1', small.url), `${padded} `)).status).toBe(413);
    } finally {
      await small.close();
    }
  });

  it('can be mounted on a host server', async () => {
    const host = createServer(createStatusHandler({ store, token: TOKEN }));
    await new Promise<void>((resolve) => host.listen(0, '127.0.0.1', resolve));
    try {
      store.set('snap-2', 'deleting');
      const url = `http://127.0.0.1:${(host.address() as AddressInfo).port}`;
      expect((await post(actionUrl('snap-2', url), update('deleting', '90%'))).status).toBe(202);
      expect(store.get('snap-2')).toEqual({ status: 'deleting', progress: '90%' });
    } finally {
      await new Promise((resolve) => host.close(resolve));
    }
  });

  it('rejects an empty token at construction', () => {
    expect(() => createStatusHandler({ store, token: '' })).toThrow(expect.objectContaining({ code: 'ECOW_BAD_ARGUMENT' }));
  });
});

describe('the Nova path end to end (fake Nova calling back over HTTP)', () => {
  it('create: Nova accepts, later reports creating 90%, the waiter returns', async () => {
    const nova = await startFakeNova();
    try {
      nova.reply((req) => {
        const { snapshot } = JSON.parse(req.body) as { snapshot: { volume_id: string; create_info: { snapshot_id: string } } };
        // As Nova does: answer first, report through Cinder once libvirt is done.
        setTimeout(() => void post(actionUrl(snapshot.create_info.snapshot_id), update('creating', '90%')), 30);
        return { status: 200, body: { snapshot: { id: null, volumeId: snapshot.volume_id } } };
      });
      const client = new NovaClient({ endpoint: nova.url, token: 'nova-token' });
      store.set('snap-9', 'creating', '0%');
      await client.createSnapshot('vol-1', { type: 'qcow2', new_file: 'volume-vol-1.snap-9', snapshot_id: 'snap-9' });
      const record = await waitForProgress(store, 'snap-9', { phase: 'create' });
      expect(record).toEqual({ status: 'creating', progress: '90%' });
    } finally {
      await nova.close();
    }
  });

  it('delete: Nova reports error_deleting, the waiter fails', async () => {
    const nova = await startFakeNova();
    try {
      nova.reply((req) => {
        const id = decodeURIComponent(req.pathname.split('/').pop()!);
        setTimeout(() => void post(actionUrl(id), update('error_deleting', '90%')), 30);
        return { status: 204 };
      });
      const client = new NovaClient({ endpoint: nova.url, token: 'nova-token' });
      store.set('snap-9', 'deleting');
      await client.deleteSnapshot('snap-9', { type: 'qcow2', file_to_merge: null, merge_target_file: null, volume_id: 'vol-1' });
      await expect(waitForProgress(store, 'snap-9', { phase: 'delete' })).rejects.toMatchObject({ code: 'ECOW_NOVA_STATUS' });
    } finally {
      await nova.close();
    }
  });
});
