import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NovaClient, type CreateInfo, type DeleteInfo, type NovaClientOptions } from '../../src/nova/index.js';
import { closedPort, startFakeNova, type FakeNova } from './fake-nova.js';
import { rejection } from '../support/errors.js';

const VOLUME = '521752a6-acf6-4b2d-bc7a-119f9148cd8c';
const SNAP = '421752a6-acf6-4b2d-bc7a-119f9148cd8c';
const CREATE_INFO: CreateInfo = { type: 'qcow2', new_file: `volume-${VOLUME}.${SNAP}`, snapshot_id: SNAP };
const COMMIT_INFO: DeleteInfo = {
  type: 'qcow2',
  file_to_merge: `volume-${VOLUME}.${SNAP}`,
  merge_target_file: `volume-${VOLUME}`,
  volume_id: VOLUME,
};
const CREATED = { status: 200, body: { snapshot: { id: null, volumeId: VOLUME } } };

let nova: FakeNova;
beforeEach(async () => {
  nova = await startFakeNova();
});
afterEach(async () => {
  await nova.close();
});

function client(options: Partial<NovaClientOptions> = {}): NovaClient {
  return new NovaClient({ endpoint: `${nova.url}/v2.1/`, token: 'tok-1', retryDelayMs: 10, ...options });
}

/** `fetch` that counts attempts but still does real networking. */
function countingFetch(): { fetch: typeof fetch; calls: () => number } {
  let calls = 0;
  return {
    fetch: (input, init) => {
      calls++;
      return fetch(input, init);
    },
    calls: () => calls,
  };
}

describe('createSnapshot', () => {
  it('POSTs exactly the Nova request shape and returns the validated answer', async () => {
    nova.reply(CREATED);
    const answer = await client().createSnapshot(VOLUME, CREATE_INFO);

    expect(answer).toEqual({ snapshot: { id: null, volumeId: VOLUME } });
    expect(nova.requests).toHaveLength(1);
    const [req] = nova.requests;
    expect(req.method).toBe('POST');
    expect(req.url).toBe('/v2.1/os-assisted-volume-snapshots');
    expect(req.headers['x-auth-token']).toBe('tok-1');
    expect(req.headers['x-openstack-nova-api-version']).toBe('2.1');
    expect(req.headers['openstack-api-version']).toBe('compute 2.1');
    expect(req.headers['content-type']).toBe('application/json');
    expect(JSON.parse(req.body)).toEqual({
      snapshot: {
        volume_id: VOLUME,
        create_info: { type: 'qcow2', new_file: `volume-${VOLUME}.${SNAP}`, snapshot_id: SNAP },
      },
    });
  });

  it('asks an async token provider before each request and sends the configured microversion', async () => {
    const tokens = ['first', 'second'];
    nova.reply(CREATED);
    const c = client({ token: async () => tokens.shift()!, microversion: '2.75' });
    await c.createSnapshot(VOLUME, CREATE_INFO);
    await c.createSnapshot(VOLUME, CREATE_INFO);
    expect(nova.requests.map((r) => r.headers['x-auth-token'])).toEqual(['first', 'second']);
    expect(nova.requests[0].headers['x-openstack-nova-api-version']).toBe('2.75');
    expect(nova.requests[0].headers['openstack-api-version']).toBe('compute 2.75');
  });

  it.each([
    ['an unknown key', { ...CREATE_INFO, id: 'x' }],
    ['a type other than qcow2', { ...CREATE_INFO, type: 'raw' }],
    ['a missing snapshot_id', { type: 'qcow2', new_file: 'volume-x.y' }],
    ['an empty new_file', { ...CREATE_INFO, new_file: '' }],
  ])('rejects create_info with %s before sending', async (_, info) => {
    await rejection(client().createSnapshot(VOLUME, info as CreateInfo), 'ECOW_BAD_ARGUMENT');
    expect(nova.requests).toHaveLength(0);
  });

  it('rejects an empty volume id before sending', async () => {
    await rejection(client().createSnapshot('', CREATE_INFO), 'ECOW_BAD_ARGUMENT');
    expect(nova.requests).toHaveLength(0);
  });

  it("maps 400 to ECOW_NOVA_REQUEST carrying Nova's message", async () => {
    nova.reply({ status: 400, body: { badRequest: { message: 'No volume Block Device Mapping with id x.', code: 400 } } });
    const error = await rejection(client().createSnapshot(VOLUME, CREATE_INFO), 'ECOW_NOVA_REQUEST');
    expect(error.message).toContain('400');
    expect(error.message).toContain('No volume Block Device Mapping with id x.');
  });

  it('quotes a non-JSON error body', async () => {
    nova.reply({ status: 400, body: 'plain failure text' });
    const error = await rejection(client().createSnapshot(VOLUME, CREATE_INFO), 'ECOW_NOVA_REQUEST');
    expect(error.message).toContain('plain failure text');
  });

  it.each([401, 403])('maps %i to ECOW_UNAUTHORIZED', async (status) => {
    nova.reply({ status, body: { forbidden: { message: 'Policy does not allow it.', code: status } } });
    const error = await rejection(client().createSnapshot(VOLUME, CREATE_INFO), 'ECOW_UNAUTHORIZED');
    expect(error.message).toContain('Policy does not allow it.');
  });

  it.each([500, 502, 503])('maps %i to ECOW_NOVA_UNAVAILABLE and never retries a create', async (status) => {
    nova.reply({ status, body: { computeFault: { message: 'boom', code: status } } });
    const error = await rejection(client().createSnapshot(VOLUME, CREATE_INFO), 'ECOW_NOVA_UNAVAILABLE');
    expect(error.message).toContain('boom');
    expect(nova.requests).toHaveLength(1);
  });

  it('does not retry a create that could not connect', async () => {
    const counter = countingFetch();
    const c = new NovaClient({ endpoint: `http://127.0.0.1:${await closedPort()}`, token: 't', fetch: counter.fetch });
    const error = await rejection(c.createSnapshot(VOLUME, CREATE_INFO), 'ECOW_NOVA_UNAVAILABLE');
    expect(error.message).toContain('ECONNREFUSED');
    expect(counter.calls()).toBe(1);
  });

  it('times out a hanging Nova', async () => {
    nova.reply('hang');
    const started = Date.now();
    const error = await rejection(client({ timeoutMs: 150 }).createSnapshot(VOLUME, CREATE_INFO), 'ECOW_NOVA_UNAVAILABLE');
    expect(error.message).toContain('timed out after 150 ms');
    // Without the time-out the request would hang for good; the bound only has to be finite.
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(nova.requests).toHaveLength(1);
  });

  it.each([
    ['not JSON', '<html>ok</html>'],
    ['missing volumeId', { snapshot: { id: null } }],
    ['an extra key', { snapshot: { id: null, volumeId: VOLUME, extra: 1 } }],
    ['a numeric id', { snapshot: { id: 7, volumeId: VOLUME } }],
    ['no snapshot wrapper', { id: null, volumeId: VOLUME }],
  ])('rejects a malformed success answer (%s)', async (_, body) => {
    nova.reply({ status: 200, body });
    const error = await rejection(client().createSnapshot(VOLUME, CREATE_INFO), 'ECOW_NOVA_UNAVAILABLE');
    expect(error.message).toContain('malformed');
  });

  it('rejects an answer for another volume', async () => {
    nova.reply({ status: 200, body: { snapshot: { id: null, volumeId: 'other-volume' } } });
    const error = await rejection(client().createSnapshot(VOLUME, CREATE_INFO), 'ECOW_NOVA_UNAVAILABLE');
    expect(error.message).toContain('other-volume');
  });

  it('does not follow redirects', async () => {
    nova.reply({ status: 302, headers: { Location: `${nova.url}/elsewhere` } }, CREATED);
    await rejection(client().createSnapshot(VOLUME, CREATE_INFO), 'ECOW_NOVA_UNAVAILABLE');
    expect(nova.requests.map((r) => r.url)).toEqual(['/v2.1/os-assisted-volume-snapshots']);
  });

  it('wraps a failing token provider and sends nothing', async () => {
    const c = client({
      token: () => {
        throw new Error('keystone down');
      },
    });
    const error = await rejection(c.createSnapshot(VOLUME, CREATE_INFO), 'ECOW_UNAUTHORIZED');
    expect((error.cause as Error).message).toBe('keystone down');
    expect(nova.requests).toHaveLength(0);
  });
});

describe('deleteSnapshot', () => {
  it('sends DELETE with delete_info as a URL-encoded JSON query parameter and no body', async () => {
    nova.reply({ status: 204 });
    await client().deleteSnapshot(SNAP, COMMIT_INFO);

    expect(nova.requests).toHaveLength(1);
    const [req] = nova.requests;
    expect(req.method).toBe('DELETE');
    expect(req.pathname).toBe(`/v2.1/os-assisted-volume-snapshots/${SNAP}`);
    expect(req.rawQuery).toBe(`delete_info=${encodeURIComponent(JSON.stringify(COMMIT_INFO))}`);
    const decoded = new URLSearchParams(req.rawQuery).get('delete_info')!;
    expect(JSON.parse(decoded)).toEqual(COMMIT_INFO);
    expect(req.body).toBe('');
    expect(req.headers['x-auth-token']).toBe('tok-1');
    expect(req.headers['x-openstack-nova-api-version']).toBe('2.1');
    expect(req.headers['content-type']).toBeUndefined();
  });

  it('keeps nulls of a blockRebase delete_info and encodes the snapshot id in the path', async () => {
    nova.reply({ status: 202 });
    const pull: DeleteInfo = { type: 'qcow2', file_to_merge: null, merge_target_file: null, volume_id: VOLUME };
    await client().deleteSnapshot('snap/with space', pull);
    const [req] = nova.requests;
    expect(req.pathname).toBe('/v2.1/os-assisted-volume-snapshots/snap%2Fwith%20space');
    expect(JSON.parse(new URLSearchParams(req.rawQuery).get('delete_info')!)).toEqual({
      type: 'qcow2',
      file_to_merge: null,
      merge_target_file: null,
      volume_id: VOLUME,
    });
  });

  it.each([
    ['a missing volume_id', { type: 'qcow2', file_to_merge: null, merge_target_file: null }],
    ['an unknown key', { ...COMMIT_INFO, extra: true }],
    ['a type other than qcow2', { ...COMMIT_INFO, type: 'raw' }],
    ['an undefined file_to_merge', { type: 'qcow2', merge_target_file: null, volume_id: VOLUME }],
  ])('rejects delete_info with %s before sending', async (_, info) => {
    await rejection(client().deleteSnapshot(SNAP, info as DeleteInfo), 'ECOW_BAD_ARGUMENT');
    expect(nova.requests).toHaveLength(0);
  });

  it("maps 404 to ECOW_NOVA_REQUEST with Nova's message", async () => {
    nova.reply({ status: 404, body: { itemNotFound: { message: 'Volume x could not be found.', code: 404 } } });
    const error = await rejection(client().deleteSnapshot(SNAP, COMMIT_INFO), 'ECOW_NOVA_REQUEST');
    expect(error.message).toContain('Volume x could not be found.');
  });

  it.each([500, 503])('does not retry a %i: Nova may have started the job', async (status) => {
    nova.reply({ status, body: 'down' }, { status: 204 });
    await rejection(client().deleteSnapshot(SNAP, COMMIT_INFO), 'ECOW_NOVA_UNAVAILABLE');
    expect(nova.requests).toHaveLength(1);
  });

  it('does not retry after the connection was reset mid-request', async () => {
    nova.reply('reset', { status: 204 });
    await rejection(client().deleteSnapshot(SNAP, COMMIT_INFO), 'ECOW_NOVA_UNAVAILABLE');
    expect(nova.requests).toHaveLength(1);
  });

  it('does not retry after a time-out', async () => {
    nova.reply('hang', { status: 204 });
    const error = await rejection(client({ timeoutMs: 100 }).deleteSnapshot(SNAP, COMMIT_INFO), 'ECOW_NOVA_UNAVAILABLE');
    expect(error.message).toContain('timed out');
    expect(nova.requests).toHaveLength(1);
  });

  it('retries a refused connection a bounded number of times', async () => {
    const counter = countingFetch();
    const endpoint = `http://127.0.0.1:${await closedPort()}`;
    const c = new NovaClient({ endpoint, token: 't', deleteRetries: 3, retryDelayMs: 5, fetch: counter.fetch });
    const error = await rejection(c.deleteSnapshot(SNAP, COMMIT_INFO), 'ECOW_NOVA_UNAVAILABLE');
    expect(counter.calls()).toBe(4);
    expect(error.message).toContain('ECONNREFUSED');
    expect(error.message).toContain('after 4 attempts');
  });

  it('succeeds when Nova comes up during the retries', async () => {
    const port = await closedPort();
    let late: FakeNova | undefined;
    const fetchThenStart: typeof fetch = async (input, init) => {
      try {
        return await fetch(input, init);
      } catch (e) {
        // Nova starts listening while the client waits to retry.
        late ??= await startFakeNova(port);
        late.reply({ status: 204 });
        throw e;
      }
    };
    const c = new NovaClient({ endpoint: `http://127.0.0.1:${port}`, token: 't', retryDelayMs: 5, fetch: fetchThenStart });
    try {
      await c.deleteSnapshot(SNAP, COMMIT_INFO);
      expect(late?.requests.map((r) => r.method)).toEqual(['DELETE']);
    } finally {
      await late?.close();
    }
  });

  it('rejects a delete answer with a body', async () => {
    nova.reply({ status: 200, body: { snapshot: {} } });
    await rejection(client().deleteSnapshot(SNAP, COMMIT_INFO), 'ECOW_NOVA_UNAVAILABLE');
  });
});

describe('construction', () => {
  it.each([
    [{ endpoint: 'not a url' }],
    [{ endpoint: 'ftp://nova/v2.1' }],
    [{ microversion: '2' }],
    [{ timeoutMs: -1 }],
    [{ deleteRetries: 1.5 }],
  ])('rejects invalid options %j', (options) => {
    expect(() => new NovaClient({ endpoint: 'http://nova:8774/v2.1', token: 't', ...options })).toThrow(
      expect.objectContaining({ code: 'ECOW_BAD_ARGUMENT' }),
    );
  });
});
