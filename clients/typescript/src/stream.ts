// Server streams as AsyncIterables of response messages, reconnecting after a dropped connection as
// resume.ts plans it: each message is delivered once and in seq order, reconnects back off like unary retries
// and give up after `retry.streamReconnects` failures in a row without a new message. Only UNAVAILABLE (the
// network, a cut-off body, a server going away) leads to a reconnect; every other error is the caller's.

import { clone, create } from "@bufbuild/protobuf";
import type { DescMethod, Message } from "@bufbuild/protobuf";
import { decode } from "./codec.js";
import { TypecaseError, networkError } from "./errors.js";
import { resumePlan } from "./resume.js";
import { routeOf } from "./route.js";
import { retryDelay } from "./transport/http.js";
import type { CallOptions, Transport } from "./transport/http.js";
import { CallScope, sleep } from "./transport/scope.js";
import { openStream } from "./transport/streams.js";

type Fields = Record<string, unknown>;

/** A random idempotency key (crypto.randomUUID needs a secure context; getRandomValues does not). */
export function randomId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export async function* serverStream(
  t: Transport,
  method: DescMethod,
  request: Message,
  options: CallOptions,
): AsyncGenerator<Message, void, undefined> {
  const plan = resumePlan(method);
  const via = options.via ?? "sse";
  if (plan?.requestId && !(request as unknown as Fields)[plan.requestId.localName]) {
    request = clone(method.input, request); // never change the caller's message
    (request as unknown as Fields)[plan.requestId.localName] = randomId();
  }
  let lastSeq = 0n;
  if (plan && plan.target === method) lastSeq = BigInt((request as unknown as Fields)[plan.afterSeq.localName] as bigint);
  let streamId = "";
  let current: { method: DescMethod; request: Message } = { method, request };
  let failures = 0;
  let received = false;
  let paused = false; // the last message was a pause: a clean end here is the stream's end
  const scope = new CallScope(options.signal, options.timeoutMs);
  try {
    for (;;) {
      let failure: TypecaseError;
      try {
        const lastEventId = plan && via === "sse" && lastSeq > 0n ? String(lastSeq) : undefined;
        const messages = openStream(t, current.method, current.request, scope, { via, headers: options.headers, lastEventId });
        for await (const json of messages) {
          // Always the caller's response type: an events RPC's messages have the same fields (and wire format).
          const message = decode(method.output, json);
          let terminal = false;
          if (plan) {
            const fields = message as unknown as Fields;
            const seq = BigInt(fields[plan.seq.localName] as bigint);
            if (seq <= lastSeq) continue; // seen before the reconnect
            lastSeq = seq;
            failures = 0;
            if (plan.responseId && !streamId) streamId = String(fields[plan.responseId.localName] ?? "");
            terminal = plan.isTerminal?.(fields) ?? false;
            paused = plan.isPause?.(fields) ?? false;
          }
          received = true;
          yield message;
          if (terminal) return;
        }
        if (!plan?.isTerminal || paused) return;
        failure = networkError(undefined, "the stream ended before its last message");
      } catch (e) {
        failure = scope.fail(e);
        if (failure.code !== "UNAVAILABLE" || scope.aborted) throw failure;
      }
      failures++;
      if (plan) {
        const canReopen = plan.target === method || streamId !== "" || plan.requestId !== undefined;
        if (!canReopen || failures > t.retry.streamReconnects) throw failure;
      } else if (received || routeOf(method).verb !== "GET" || failures >= t.retry.maxAttempts) {
        throw failure; // a plain GET stream is only sent again while it has not delivered anything
      }
      const delay = retryDelay(t.retry, failures, failure.retryAfterMs);
      if (delay === undefined) throw failure;
      await sleep(delay, scope);
      if (plan && plan.target !== method && streamId !== "") {
        current = {
          method: plan.target,
          request: create(plan.target.input, {
            [plan.targetId!.localName]: streamId,
            [plan.afterSeq.localName]: lastSeq,
          } as never),
        };
      } else if (plan && plan.target === method) {
        const next = clone(method.input, request);
        const fields = next as unknown as Fields;
        fields[plan.afterSeq.localName] = typeof fields[plan.afterSeq.localName] === "bigint" ? lastSeq : Number(lastSeq);
        current = { method, request: next };
      }
    }
  } finally {
    scope.close();
  }
}
