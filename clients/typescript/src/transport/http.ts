// HTTP plumbing shared by every call: the client's settings, headers (credential, caller extras), one fetch
// with the failure mapping, and unary calls with the SDK's retry rule: only GET calls (read-only by the
// contract's HTTP mapping) are re-sent, only after UNAVAILABLE, with jittered exponential backoff, as the
// Python SDK does for its idempotent calls. Anything that creates or changes something is sent once.

import type { DescMethod, Message, Registry } from "@bufbuild/protobuf";
import { decode } from "../codec.js";
import { errorFromResponse } from "../errors.js";
import { buildRequest, routeOf } from "../route.js";
import { CallScope, sleep } from "./scope.js";

/** A WebSocket constructor (browsers' and Node 22's global one, or e.g. the `ws` package's). */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocket;

export interface RetryPolicy {
  /** Attempts in all for a GET unary call (and a GET stream before its first message); 1 disables retries. */
  maxAttempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  backoffMultiplier: number;
  /** Reconnects of a resumable stream in a row without receiving a new message. */
  streamReconnects: number;
}

export const DEFAULT_RETRY: RetryPolicy = {
  maxAttempts: 5,
  initialBackoffMs: 200,
  maxBackoffMs: 5000,
  backoffMultiplier: 2,
  streamReconnects: 5,
};

/** Delay before retry number `attempt` (1-based): exponential, capped, with jitter in [50%, 100%]. */
export function backoffMs(policy: RetryPolicy, attempt: number): number {
  const ceiling = Math.min(
    policy.maxBackoffMs,
    policy.initialBackoffMs * policy.backoffMultiplier ** Math.max(0, attempt - 1),
  );
  return ceiling * (0.5 + Math.random() * 0.5);
}

/**
 * The wait before retry `attempt`: the backoff, or the server's RetryInfo delay when it sent one; undefined when
 * the server asks for longer than the policy's longest backoff (the caller, not a hidden sleep, should decide).
 */
export function retryDelay(policy: RetryPolicy, attempt: number, retryAfterMs: number | undefined): number | undefined {
  if (retryAfterMs === undefined) return backoffMs(policy, attempt);
  return retryAfterMs <= policy.maxBackoffMs ? retryAfterMs : undefined;
}

/** Options accepted by every call. */
export interface CallOptions {
  signal?: AbortSignal;
  /** Deadline of the whole call (a stream: until its last message) in ms; also sent as grpc-timeout. */
  timeoutMs?: number;
  headers?: Record<string, string>;
  /** Transport of a server stream (default "sse"). */
  via?: "sse" | "ndjson" | "websocket";
  /** Upload progress: bytes of the file handed to the network so far, and the file's size. */
  onProgress?: (sentBytes: number, totalBytes: number) => void;
}

export interface Transport {
  baseUrl: string;
  fetch: typeof globalThis.fetch;
  credential: () => string | undefined;
  headers: Record<string, string>;
  /** Default deadline of unary calls and uploads (streams only have the one given per call). */
  timeoutMs?: number;
  retry: RetryPolicy;
  registry: Registry;
  WebSocket?: WebSocketConstructor;
  /** Use XMLHttpRequest for uploads (progress events) when the runtime has it. */
  useXhr: boolean;
}

/** The headers of a request: the client's, the credential, then the call's own (which win). */
export function requestHeaders(t: Transport, call: Record<string, string> | undefined): Record<string, string> {
  const headers: Record<string, string> = { ...t.headers };
  const credential = t.credential();
  if (credential) headers["authorization"] = `Bearer ${credential}`;
  for (const [k, v] of Object.entries(call ?? {})) headers[k.toLowerCase()] = v;
  return headers;
}

/** gRPC's timeout header, so the server stops working on a call the client gave up on. */
export function grpcTimeout(ms: number | undefined): Record<string, string> {
  return ms !== undefined && ms > 0 && Number.isFinite(ms) ? { "grpc-timeout": `${Math.ceil(ms)}m` } : {};
}

/** One fetch; a thrown fetch becomes the scope's error (UNAVAILABLE, CANCELLED or DEADLINE_EXCEEDED). */
export async function send(t: Transport, scope: CallScope, url: string, init: RequestInit): Promise<Response> {
  try {
    return await t.fetch(url, init);
  } catch (e) {
    throw scope.fail(e);
  }
}

export async function unary(t: Transport, method: DescMethod, request: Message, options: CallOptions): Promise<Message> {
  const route = routeOf(method);
  const parts = buildRequest(route, request, t.registry);
  const timeoutMs = options.timeoutMs ?? t.timeoutMs;
  const scope = new CallScope(options.signal, timeoutMs);
  const headers: Record<string, string> = {
    ...requestHeaders(t, options.headers),
    ...grpcTimeout(timeoutMs),
    accept: "application/json",
  };
  if (parts.body !== undefined) headers["content-type"] = "application/json";
  const body = parts.body === undefined ? undefined : JSON.stringify(parts.body);
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        const response = await send(t, scope, t.baseUrl + parts.path, {
          method: parts.verb,
          headers,
          body,
          signal: scope.signal,
        });
        if (!response.ok) throw await errorFromResponse(response);
        let json: unknown;
        try {
          json = await response.json();
        } catch (e) {
          throw scope.fail(e); // the body broke off (a malformed body from a proxy reads the same way)
        }
        if (route.responseBody) json = { [route.responseBody]: json };
        return decode(method.output, json);
      } catch (e) {
        const error = scope.fail(e);
        const delay = retryDelay(t.retry, attempt, error.retryAfterMs);
        if (route.verb !== "GET" || error.code !== "UNAVAILABLE" || attempt >= t.retry.maxAttempts || delay === undefined) {
          throw error;
        }
        await sleep(delay, scope);
      }
    }
  } finally {
    scope.close();
  }
}
