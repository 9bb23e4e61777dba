/**
 * Client for Nova's `os-assisted-volume-snapshots` API, the calls Cinder's remotefs driver
 * makes for an attached volume: create (switch the guest onto a new overlay) and delete
 * (blockRebase/blockCommit). Nova only starts the work and answers; the result arrives later
 * through `os-update_snapshot_status` (see status-endpoint.ts and wait.ts).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { z } from 'zod';
import { CowError } from '../errors.js';
import {
  createInfoSchema,
  createSnapshotResponseSchema,
  deleteInfoSchema,
  deleteSnapshotResponseSchema,
  novaErrorSchema,
  type CreateInfo,
  type CreateSnapshotResponse,
  type DeleteInfo,
} from './schemas.js';

/** A fixed token, or a function asked before every request (so it may refresh). */
export type TokenProvider = string | (() => string | Promise<string>);

export interface NovaClientOptions {
  /** Nova's compute endpoint, e.g. `http://nova:8774/v2.1`. */
  endpoint: string;
  token: TokenProvider;
  /** Sent as `X-OpenStack-Nova-API-Version` and `OpenStack-API-Version: compute …`; default "2.1". */
  microversion?: string;
  /** Per attempt, covering the response body too; default 30 000 ms. */
  timeoutMs?: number;
  /** Extra attempts of a DELETE that could not connect (see `isRetryable`); default 2. */
  deleteRetries?: number;
  /** Pause before each retry; default 500 ms. */
  retryDelayMs?: number;
  /** Defaults to the global `fetch`. */
  fetch?: typeof fetch;
}

/** Connection-phase failures: the request was never sent, so nothing happened in Nova. */
const CONNECT_ERROR_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_CONNECT_TIMEOUT',
]);

/**
 * Errors of requests that were sent and never answered (a time-out, a reset): Nova may have the
 * work. Kept aside rather than as a code of their own, since to the caller it is still Nova being
 * unavailable; see requestUnanswered.
 */
const unanswered = new WeakSet<Error>();

/**
 * Whether `error` is a request that reached (or may have reached) Nova without an answer. Nova
 * casts the work to the compute host before it answers, so such a request may be running.
 */
export function requestUnanswered(error: unknown): boolean {
  return error instanceof Error && unanswered.has(error);
}

/** Longest excerpt of an unparseable error body quoted in a message. */
const MAX_QUOTED_BODY = 200;

interface Attempt {
  method: 'POST' | 'DELETE';
  url: string;
  body?: string;
}

export class NovaClient {
  private readonly endpoint: string;
  private readonly token: TokenProvider;
  private readonly microversion: string;
  private readonly timeoutMs: number;
  private readonly deleteRetries: number;
  private readonly retryDelayMs: number;
  private readonly fetch: typeof fetch;

  constructor(options: NovaClientOptions) {
    let url: URL;
    try {
      url = new URL(options.endpoint);
    } catch (cause) {
      throw new CowError('ECOW_BAD_ARGUMENT', `Nova endpoint ${JSON.stringify(options.endpoint)} is not a URL`, { cause });
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new CowError('ECOW_BAD_ARGUMENT', `Nova endpoint ${JSON.stringify(options.endpoint)} is not http(s)`);
    }
    this.endpoint = url.href.replace(/\/+$/, '');
    this.token = options.token;
    this.microversion = options.microversion ?? '2.1';
    if (!/^(?:\d+\.\d+|latest)$/.test(this.microversion)) {
      throw new CowError('ECOW_BAD_ARGUMENT', `Nova microversion ${JSON.stringify(this.microversion)} is not "X.Y" or "latest"`);
    }
    this.timeoutMs = nonNegative('timeoutMs', options.timeoutMs ?? 30_000);
    this.deleteRetries = nonNegative('deleteRetries', options.deleteRetries ?? 2);
    if (!Number.isInteger(this.deleteRetries)) {
      throw new CowError('ECOW_BAD_ARGUMENT', `deleteRetries must be an integer, got ${this.deleteRetries}`);
    }
    this.retryDelayMs = nonNegative('retryDelayMs', options.retryDelayMs ?? 500);
    this.fetch = options.fetch ?? globalThis.fetch;
  }

  /**
   * `POST /os-assisted-volume-snapshots`: ask Nova to move the guest onto `createInfo.new_file`.
   * Sent exactly once, even when the connection fails: a create is not idempotent (a second
   * one asks libvirt to switch onto a file the guest may already be writing to), and the
   * caller, which removes the new file and fails the snapshot, decides on another attempt.
   * @returns Nova's answer, validated (`snapshot.volumeId` equals `volumeId`).
   */
  async createSnapshot(volumeId: string, createInfo: CreateInfo): Promise<CreateSnapshotResponse> {
    checkId('volume id', volumeId);
    const info = parseInput(createInfoSchema, createInfo, 'create_info');
    const response = await this.send(
      {
        method: 'POST',
        url: `${this.endpoint}/os-assisted-volume-snapshots`,
        body: JSON.stringify({ snapshot: { volume_id: volumeId, create_info: info } }),
      },
      0,
    );
    const text = await this.readBody(response, 'create');
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (cause) {
      throw malformed('create', text, cause);
    }
    const parsed = createSnapshotResponseSchema.safeParse(json);
    if (!parsed.success) throw malformed('create', text, parsed.error);
    if (parsed.data.snapshot.volumeId !== volumeId) {
      throw new CowError(
        'ECOW_NOVA_UNAVAILABLE',
        `Nova answered the snapshot create of volume ${volumeId} for volume ${parsed.data.snapshot.volumeId}`,
      );
    }
    return parsed.data;
  }

  /**
   * `DELETE /os-assisted-volume-snapshots/{snapshotId}?delete_info=<JSON>`: ask Nova to merge
   * the snapshot's file away (blockRebase or blockCommit, see `DeleteInfo`).
   *
   * Retried only when the connection could not be made. A delete is not idempotent once Nova
   * has it: Nova casts the job to the compute host before answering, so after a 5xx, a reset
   * or a time-out the job may be running. A second request would start a second
   * blockCommit/blockRebase on a chain the first has already changed; it fails in libvirt, and
   * Nova then reports `error_deleting` over the first job's success.
   */
  async deleteSnapshot(snapshotId: string, deleteInfo: DeleteInfo): Promise<void> {
    checkId('snapshot id', snapshotId);
    const info = parseInput(deleteInfoSchema, deleteInfo, 'delete_info');
    const query = `delete_info=${encodeURIComponent(JSON.stringify(info))}`;
    const response = await this.send(
      {
        method: 'DELETE',
        url: `${this.endpoint}/os-assisted-volume-snapshots/${encodeURIComponent(snapshotId)}?${query}`,
      },
      this.deleteRetries,
    );
    const text = await this.readBody(response, 'delete');
    const parsed = deleteSnapshotResponseSchema.safeParse(text);
    if (!parsed.success) throw malformed('delete', text, parsed.error);
  }

  /** One request with up to `retries` further attempts after connection failures; 2xx only. */
  private async send(attempt: Attempt, retries: number): Promise<Response> {
    for (let attemptNo = 0; ; attemptNo++) {
      const headers = await this.headers(attempt.body !== undefined);
      let response: Response;
      try {
        response = await this.fetch(attempt.url, {
          method: attempt.method,
          headers,
          body: attempt.body,
          redirect: 'manual',
          signal: AbortSignal.timeout(this.timeoutMs),
        });
      } catch (cause) {
        if (attemptNo < retries && isRetryable(cause)) {
          await sleep(this.retryDelayMs);
          continue;
        }
        throw this.transportError(attempt, cause, attemptNo + 1);
      }
      if (response.ok) return response;
      throw await this.statusError(attempt, response);
    }
  }

  private async headers(withBody: boolean): Promise<Record<string, string>> {
    let token: string;
    try {
      token = typeof this.token === 'string' ? this.token : await this.token();
    } catch (cause) {
      throw new CowError('ECOW_UNAUTHORIZED', 'the token provider failed', { cause });
    }
    return {
      'X-Auth-Token': token,
      'X-OpenStack-Nova-API-Version': this.microversion,
      'OpenStack-API-Version': `compute ${this.microversion}`,
      Accept: 'application/json',
      ...(withBody ? { 'Content-Type': 'application/json' } : {}),
    };
  }

  private async readBody(response: Response, what: string): Promise<string> {
    try {
      return await response.text();
    } catch (cause) {
      throw new CowError('ECOW_NOVA_UNAVAILABLE', `reading Nova's answer to the snapshot ${what} failed`, { cause });
    }
  }

  private transportError(attempt: Attempt, cause: unknown, attempts: number): CowError {
    const what = `${attempt.method} ${attempt.url}`;
    let error: CowError;
    if (cause instanceof Error && cause.name === 'TimeoutError') {
      error = new CowError('ECOW_NOVA_UNAVAILABLE', `${what} timed out after ${this.timeoutMs} ms`, { cause });
    } else {
      const code = errorCode(cause);
      error = new CowError(
        'ECOW_NOVA_UNAVAILABLE',
        `${what} failed${code ? ` (${code})` : ''} after ${attempts} attempt${attempts === 1 ? '' : 's'}`,
        { cause },
      );
    }
    if (!isRetryable(cause)) unanswered.add(error);
    return error;
  }

  /** 4xx: Nova refused (with its own message); anything else not 2xx: Nova failed. */
  private async statusError(attempt: Attempt, response: Response): Promise<CowError> {
    let text = '';
    try {
      text = await response.text();
    } catch {
      // The status alone still says what happened.
    }
    const parsed = text ? novaErrorSchema.safeParse(safeJson(text)) : undefined;
    const detail = parsed?.success
      ? Object.values(parsed.data)[0].message
      : text.slice(0, MAX_QUOTED_BODY) || response.statusText;
    const message = `${attempt.method} ${attempt.url} answered ${response.status}: ${detail}`;
    if (response.status === 401 || response.status === 403) return new CowError('ECOW_UNAUTHORIZED', message);
    if (response.status >= 400 && response.status < 500) return new CowError('ECOW_NOVA_REQUEST', message);
    return new CowError('ECOW_NOVA_UNAVAILABLE', message);
  }
}

/** Whether a failed fetch never reached the server: a connection-phase error code in its causes. */
function isRetryable(error: unknown): boolean {
  const code = errorCode(error);
  return code !== undefined && CONNECT_ERROR_CODES.has(code);
}

/** The first `code` found along an error's `cause` chain (undici wraps socket errors). */
function errorCode(error: unknown): string | undefined {
  for (let e = error, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function parseInput<T extends z.ZodType>(schema: T, value: unknown, what: string): z.infer<T> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    throw new CowError('ECOW_BAD_ARGUMENT', `invalid ${what} ${JSON.stringify(value)}: ${parsed.error.message}`, {
      cause: parsed.error,
    });
  }
  return parsed.data;
}

function checkId(what: string, value: string): void {
  if (typeof value !== 'string' || value.length === 0) {
    throw new CowError('ECOW_BAD_ARGUMENT', `invalid ${what} ${JSON.stringify(value)}`);
  }
}

function nonNegative(name: string, value: number): number {
  if (!Number.isFinite(value) || value < 0) {
    throw new CowError('ECOW_BAD_ARGUMENT', `${name} must be a non-negative number, got ${value}`);
  }
  return value;
}

function malformed(what: string, text: string, cause: unknown): CowError {
  return new CowError(
    'ECOW_NOVA_UNAVAILABLE',
    `Nova's answer to the snapshot ${what} is malformed: ${JSON.stringify(text.slice(0, MAX_QUOTED_BODY))}`,
    { cause },
  );
}
