/**
 * A tiny Nova on 127.0.0.1 for tests: records every request and answers with what the test
 * queued (or with a handler's answer).
 */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  method: string;
  /** Raw request target: path plus raw query string. */
  url: string;
  pathname: string;
  /** The raw (still percent-encoded) query string, without `?`. */
  rawQuery: string;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface Reply {
  status: number;
  body?: string | object;
  headers?: Record<string, string>;
}

/** `reply` answers; `hang` never answers; `reset` destroys the socket after reading the request. */
export type Action = Reply | 'hang' | 'reset' | ((req: RecordedRequest) => Reply | Promise<Reply>);

export interface FakeNova {
  readonly url: string;
  readonly port: number;
  readonly requests: RecordedRequest[];
  /** Answers for the next requests, in order; the last one repeats. */
  reply(...actions: Action[]): void;
  close(): Promise<void>;
}

export async function startFakeNova(port = 0): Promise<FakeNova> {
  const requests: RecordedRequest[] = [];
  let actions: Action[] = [{ status: 500, body: 'no reply configured' }];
  const hung: ServerResponse[] = [];

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const url = req.url ?? '/';
      const q = url.indexOf('?');
      const recorded: RecordedRequest = {
        method: req.method ?? '',
        url,
        pathname: q < 0 ? url : url.slice(0, q),
        rawQuery: q < 0 ? '' : url.slice(q + 1),
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      };
      requests.push(recorded);
      const action = actions.length > 1 ? actions.shift()! : actions[0];
      if (action === 'hang') {
        hung.push(res);
        return;
      }
      if (action === 'reset') {
        req.socket.destroy();
        return;
      }
      const reply = typeof action === 'function' ? await action(recorded) : action;
      const body =
        reply.body === undefined ? '' : typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body);
      res.writeHead(reply.status, {
        ...(typeof reply.body === 'object' ? { 'Content-Type': 'application/json' } : {}),
        ...reply.headers,
      });
      res.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const actualPort = (server.address() as AddressInfo).port;

  return {
    url: `http://127.0.0.1:${actualPort}`,
    port: actualPort,
    requests,
    reply: (...next) => {
      actions = next;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const res of hung) res.destroy();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** A port on 127.0.0.1 that nothing listens on (bound, then released). */
export async function closedPort(): Promise<number> {
  const nova = await startFakeNova();
  await nova.close();
  return nova.port;
}
