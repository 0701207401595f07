// One connection of a server stream, yielding each message's JSON: over SSE (`Accept: text/event-stream`,
// `event: error` carries the failure), NDJSON (`{"result": ...}` lines, `{"error": ...}` last) or WebSocket
// (the request JSON as the first frame, a frame per message, `{"error": ...}` then close on failure,
// `{"cancel": true}` to stop). Reconnecting and decoding are the caller's (stream.ts).

import type { DescMethod, Message } from "@bufbuild/protobuf";
import { toJsonObject } from "../codec.js";
import { TypecaseError, errorFromResponse, networkError } from "../errors.js";
import { buildRequest, routeOf } from "../route.js";
import { bodyLines } from "./lines.js";
import { requestHeaders, send } from "./http.js";
import type { Transport } from "./http.js";
import type { CallScope } from "./scope.js";
import { sseEvents } from "./sse.js";

// WebSocket.readyState values (a custom constructor need not have the static constants).
const CONNECTING = 0;
const OPEN = 1;

export type Via = "sse" | "ndjson" | "websocket";
export type MessageJson = Record<string, unknown>;

export interface Connect {
  via: Via;
  headers?: Record<string, string>;
  /** Sent as Last-Event-ID (SSE), so the server resumes after it even if the request does not say so. */
  lastEventId?: string;
}

export function openStream(
  t: Transport,
  method: DescMethod,
  request: Message,
  scope: CallScope,
  connect: Connect,
): AsyncGenerator<MessageJson, void, undefined> {
  return connect.via === "websocket"
    ? webSocketStream(t, method, request, scope)
    : httpStream(t, method, request, scope, connect);
}

function parseJson(text: string): unknown {
  return JSON.parse(text); // a SyntaxError here is a line cut off in transit: mapped to UNAVAILABLE by the scope
}

async function* httpStream(
  t: Transport,
  method: DescMethod,
  request: Message,
  scope: CallScope,
  connect: Connect,
): AsyncGenerator<MessageJson, void, undefined> {
  const parts = buildRequest(routeOf(method), request, t.registry);
  const attempt = scope.attempt();
  const sse = connect.via === "sse";
  const headers = requestHeaders(t, connect.headers);
  headers["accept"] = sse ? "text/event-stream" : "application/x-ndjson";
  if (parts.body !== undefined) headers["content-type"] = "application/json";
  if (connect.lastEventId !== undefined) headers["last-event-id"] = connect.lastEventId;
  try {
    const response = await send(t, scope, t.baseUrl + parts.path, {
      method: parts.verb,
      headers,
      body: parts.body === undefined ? undefined : JSON.stringify(parts.body),
      signal: attempt.signal,
      cache: "no-store",
    });
    const traceId = response.headers.get("x-trace-id") ?? undefined;
    if (!response.ok) throw await errorFromResponse(response);
    if (response.body === null) return;
    if (sse) {
      for await (const event of sseEvents(response.body)) {
        if (event.event === "error") throw TypecaseError.fromStatus(parseJson(event.data), { traceId });
        yield parseJson(event.data) as MessageJson;
      }
    } else {
      for await (const line of bodyLines(response.body)) {
        if (!line.trim()) continue;
        const item = parseJson(line) as Record<string, unknown>;
        if (item.error !== undefined) throw TypecaseError.fromStatus(item.error, { traceId });
        yield item.result as MessageJson;
      }
    }
  } catch (e) {
    throw scope.fail(e);
  } finally {
    attempt.abort(); // no-op after a complete body; stops the request when the consumer left early
  }
}

/** ws(s):// URL of a path: from the base URL, or the page's origin when the base URL is "". */
function webSocketUrl(baseUrl: string, path: string): string {
  let origin = baseUrl;
  if (!origin) {
    const location = (globalThis as { location?: { protocol: string; host: string } }).location;
    if (location === undefined) throw new TypecaseError("INVALID_ARGUMENT", "baseUrl is required outside a browser");
    origin = `${location.protocol}//${location.host}`;
  }
  return origin.replace(/^http/i, "ws") + path;
}

async function* webSocketStream(
  t: Transport,
  method: DescMethod,
  request: Message,
  scope: CallScope,
): AsyncGenerator<MessageJson, void, undefined> {
  const WS = t.WebSocket ?? (globalThis as { WebSocket?: typeof WebSocket }).WebSocket;
  if (WS === undefined) {
    throw new TypecaseError(
      "UNIMPLEMENTED",
      "this runtime has no WebSocket: pass createTypecase({ WebSocket }) or use via: \"sse\"",
      { httpStatus: 0 },
    );
  }
  scope.check();
  const path = buildRequest(routeOf(method), request, t.registry).path.split("?")[0];
  const credential = t.credential();
  // Browsers cannot set headers on a WebSocket: the credential travels as the subprotocol pair "bearer, <token>".
  const ws = credential ? new WS(webSocketUrl(t.baseUrl, path), ["bearer", credential]) : new WS(webSocketUrl(t.baseUrl, path));
  ws.binaryType = "arraybuffer";
  const queue: MessageJson[] = [];
  let failure: TypecaseError | undefined;
  let closed = false;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  ws.onopen = () => ws.send(JSON.stringify(toJsonObject(method.input, request)));
  ws.onmessage = (event: MessageEvent) => {
    try {
      const text = typeof event.data === "string" ? event.data : new TextDecoder().decode(event.data as ArrayBuffer);
      const frame = JSON.parse(text) as Record<string, unknown>;
      // A failure frame is {"error": status} alone; messages carry every field of their type.
      const keys = Object.keys(frame);
      if (keys.length === 1 && keys[0] === "error") failure ??= TypecaseError.fromStatus(frame.error);
      else queue.push(frame);
    } catch (e) {
      failure ??= networkError(e, "unreadable WebSocket frame");
    }
    notify();
  };
  ws.onerror = () => {
    failure ??= networkError(undefined, "the WebSocket connection failed");
    notify();
  };
  ws.onclose = (event: CloseEvent) => {
    closed = true;
    if (event.code !== 1000 && failure === undefined) {
      failure = networkError(undefined, `the WebSocket closed with code ${event.code}${event.reason ? ` (${event.reason})` : ""}`);
    }
    notify();
  };
  const onAbort = () => notify();
  scope.signal.addEventListener("abort", onAbort);
  try {
    for (;;) {
      if (queue.length > 0) {
        yield queue.shift() as MessageJson;
        continue;
      }
      if (scope.aborted) throw scope.fail(undefined);
      if (failure !== undefined) throw scope.fail(failure);
      if (closed) return;
      await new Promise<void>((resolve) => (wake = resolve));
    }
  } finally {
    scope.signal.removeEventListener("abort", onAbort);
    if (ws.readyState === OPEN) {
      try {
        ws.send(JSON.stringify({ cancel: true })); // the server stops the call now rather than at the close
      } catch {
        // closing anyway
      }
    }
    if (ws.readyState === CONNECTING || ws.readyState === OPEN) ws.close(1000);
  }
}
