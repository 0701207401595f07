// Automatic resume of chat streams after the connection drops. The drop is made at the transport level: a
// fetch that passes the real response through and cuts its body after N events, either with an error (a reset
// connection) or with a clean end (a proxy closing early). The SDK must reconnect on streamTurnEvents from the
// last seq it saw and deliver the whole turn once, in order, exactly as the server stored it.

import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { createTypecase, TypecaseError } from "../index.js";
import type { TypecaseClient } from "../index.js";
import { AdminService } from "../gen/typecase/v1/admin_pb.js";
import { ChatService } from "../gen/typecase/v1/chat_pb.js";
import { FlowService, NodeType } from "../gen/typecase/v1/flow_pb.js";
import { KnowledgeService } from "../gen/typecase/v1/knowledge_pb.js";
import { resumePlan } from "../resume.js";
import { apiKey, adminClient, assertCompleteTurn, baseUrl, collect, localModelId, textOf, unique } from "./support.js";

interface Sent {
  url: string;
  method: string;
  headers: Headers;
  body?: string;
}

type Cut = { after: number; how: "error" | "close" };

/** A fetch that records every request and cuts the body of the responses `plan` picks. */
function cuttingFetch(plan: (url: string, method: string) => Cut | undefined): { fetch: typeof fetch; sent: Sent[] } {
  const sent: Sent[] = [];
  const wrapped: typeof fetch = async (input, init) => {
    const url = String(input);
    const method = init?.method ?? "GET";
    sent.push({ url, method, headers: new Headers(init?.headers), body: typeof init?.body === "string" ? init.body : undefined });
    const response = await fetch(input, init);
    const cut = response.ok ? plan(url, method) : undefined;
    if (cut === undefined || response.body === null) return response;
    const sse = (response.headers.get("content-type") ?? "").includes("event-stream");
    return new Response(cutBody(response.body, sse ? "\n\n" : "\n", cut), {
      status: response.status,
      headers: response.headers,
    });
  };
  return { fetch: wrapped, sent };
}

/** The body up to its `after`-th record (SSE event or NDJSON line; keep-alive comments do not count), then the cut. */
function cutBody(body: ReadableStream<Uint8Array>, separator: string, cut: Cut): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();
  let buffer = "";
  let records = 0;
  let cutNow = cut.after === 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (cutNow) {
        // On the pull after the last record: erroring a stream drops what is still queued in it.
        await reader.cancel();
        if (cut.how === "error") controller.error(new TypeError("terminated (connection cut by the test)"));
        else controller.close();
        return;
      }
      for (;;) {
        const { done, value } = await reader.read();
        if (done) {
          controller.close();
          return;
        }
        buffer += decoder.decode(value, { stream: true });
        let out = "";
        let at: number;
        while (!cutNow && (at = buffer.indexOf(separator)) >= 0) {
          const record = buffer.slice(0, at + separator.length);
          buffer = buffer.slice(at + separator.length);
          out += record;
          if (!record.startsWith(":")) records++;
          if (records >= cut.after) cutNow = true;
        }
        if (out) {
          controller.enqueue(encoder.encode(out));
          return;
        }
      }
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}

describe("automatic resume", () => {
  const admin = adminClient();
  let modelId = "";

  before(async () => {
    modelId = await localModelId(admin);
  });

  function client(f: typeof fetch): TypecaseClient {
    return createTypecase({ baseUrl, apiKey, fetch: f, retry: { initialBackoffMs: 20, maxBackoffMs: 100 } });
  }

  async function newSession(): Promise<string> {
    const { session } = await admin.chat.createSession({ session: { title: unique("resume"), modelId } });
    return session!.id;
  }

  async function storedAnswer(sessionId: string): Promise<string> {
    const { messages } = await admin.chat.listMessages({ sessionId, newestFirst: true, pageSize: 1 });
    return messages[0].content;
  }

  const question = { content: "List five fruits, one per line.", maxTokens: 32, temperature: 0 };

  test("resume plans follow the descriptors", () => {
    assert.equal(resumePlan(ChatService.method.chat)?.target, ChatService.method.streamTurnEvents);
    assert.equal(resumePlan(ChatService.method.chat)?.requestId?.name, "request_id");
    assert.equal(resumePlan(ChatService.method.streamTurnEvents)?.target, ChatService.method.streamTurnEvents);
    assert.equal(resumePlan(FlowService.method.runFlow)?.target, FlowService.method.streamRunEvents);
    assert.equal(resumePlan(FlowService.method.runFlow)?.requestId, undefined);
    assert.equal(resumePlan(FlowService.method.resumeRun)?.target, FlowService.method.streamRunEvents);
    assert.equal(resumePlan(AdminService.method.streamLogs)?.isTerminal, undefined); // follows forever
    assert.equal(resumePlan(FlowService.method.compareFlow), undefined); // several runs in one stream
    assert.equal(resumePlan(KnowledgeService.method.watchFile), undefined); // its seq counts this stream only
    assert.equal(resumePlan(ChatService.method.getSession), undefined);
  });

  test("SSE cut by a connection error: continues on streamTurnEvents with Last-Event-ID", async () => {
    const sessionId = await newSession();
    const { fetch: f, sent } = cuttingFetch((url) => (url.includes(":chat") ? { after: 3, how: "error" } : undefined));
    const events = await collect(client(f).chat.chat({ sessionId, ...question }, { via: "sse" }));
    assertCompleteTurn(events);
    assert.equal(textOf(events), await storedAnswer(sessionId));

    const posts = sent.filter((r) => r.method === "POST");
    assert.equal(posts.length, 1);
    const resumed = sent.filter((r) => r.url.includes(`/v1/turns/${events[0].turnId}/events`));
    assert.ok(resumed.length >= 1, `requests: ${sent.map((r) => `${r.method} ${r.url}`).join(", ")}`);
    assert.match(resumed[0].url, /[?&]after_seq=3(&|$)/);
    assert.equal(resumed[0].headers.get("last-event-id"), "3");
    assert.equal(resumed[0].headers.get("accept"), "text/event-stream");
  });

  test("NDJSON ended early without an error: the missing end is noticed and the rest fetched", async () => {
    const sessionId = await newSession();
    const { fetch: f, sent } = cuttingFetch((url) => (url.includes(":chat") ? { after: 4, how: "close" } : undefined));
    const events = await collect(client(f).chat.chat({ sessionId, ...question }, { via: "ndjson" }));
    assertCompleteTurn(events);
    const ended = events[events.length - 1].event!.kind;
    assert.equal(ended.case, "ended");
    assert.equal(ended.value.answer!.content, textOf(events));
    assert.equal(textOf(events), await storedAnswer(sessionId));
    const resumed = sent.filter((r) => r.url.includes("/events"));
    assert.ok(resumed.length >= 1);
    assert.match(resumed[0].url, /[?&]after_seq=4(&|$)/);
  });

  test("lost before the first event: the POST is sent again with the same request_id and re-attaches", async () => {
    const sessionId = await newSession();
    const { fetch: f, sent } = cuttingFetch((url, method) =>
      method === "POST" && url.includes(":chat") && sent.filter((r) => r.method === "POST").length === 1
        ? { after: 0, how: "error" }
        : undefined,
    );
    const events = await collect(client(f).chat.chat({ sessionId, ...question }));
    assertCompleteTurn(events);
    const posts = sent.filter((r) => r.method === "POST");
    assert.equal(posts.length, 2);
    const ids = posts.map((p) => JSON.parse(p.body ?? "{}").request_id as string);
    assert.ok(ids[0] && ids[0].length >= 16, `request_id ${ids[0]}`);
    assert.equal(ids[1], ids[0]);
    // One turn only: the question and its answer.
    const { messages } = await admin.chat.listMessages({ sessionId });
    assert.equal(messages.length, 2);
    assert.equal(messages[1].content, textOf(events));
  });

  test("streamTurnEvents resumes itself after a cut, from the last seq seen", async () => {
    const sessionId = await newSession();
    const head = [];
    for await (const ev of admin.chat.chat({ sessionId, ...question })) {
      head.push(ev);
      if (head.length === 2) break; // leaves the turn running on the server
    }
    const turnId = head[0].turnId;
    const { fetch: f, sent } = cuttingFetch((url) =>
      url.includes("/events") && sent.length === 1 ? { after: 2, how: "error" } : undefined,
    );
    const rest = await collect(client(f).chat.streamTurnEvents({ turnId, afterSeq: 2n }));
    const whole = [...head, ...rest];
    assertCompleteTurn(whole);
    assert.equal(textOf(whole), await storedAnswer(sessionId));
    assert.equal(sent.length, 2);
    assert.match(sent[1].url, /[?&]after_seq=4(&|$)/);
    assert.equal(sent[1].headers.get("last-event-id"), "4");
  });

  test("runFlow continues on streamRunEvents once the run id is known", async () => {
    const { flow } = await admin.flow.createFlow({
      flow: {
        name: unique("ts-flow"),
        graph: {
          nodes: [
            { id: "start", name: "start", type: NodeType.START, params: { variables: [{ name: "who", default: "world" }] } },
            { id: "p", name: "p", type: NodeType.PROMPT, params: { template: "Hello {{who}}" } },
            { id: "end", name: "end", type: NodeType.END, params: { outputs: { text: "{{p.text}}" } } },
          ],
          edges: [
            { id: "e1", source: "start", target: "p" },
            { id: "e2", source: "p", target: "end" },
          ],
        },
      },
    });
    const { fetch: f, sent } = cuttingFetch((url) => (url.includes(":run") ? { after: 3, how: "error" } : undefined));
    const events = await collect(client(f).flow.runFlow({ flowId: flow!.id, inputs: { who: "resume" } }));
    assert.deepEqual(
      events.map((e) => e.seq),
      events.map((_, i) => BigInt(i + 1)),
    );
    const last = events[events.length - 1].event!.kind;
    assert.equal(events[0].event?.kind.case, "runStarted");
    assert.equal(last.case, "runFinished");
    assert.deepEqual(last.value.outputs, { text: "Hello resume" });
    const runId = events[0].runId;
    assert.ok(events.every((e) => e.runId === runId));
    const resumed = sent.filter((r) => r.url.includes(`/v1/runs/${runId}/events`));
    assert.equal(resumed.length, 1);
    assert.match(resumed[0].url, /[?&]after_seq=3(&|$)/);
  });

  test("a run's events replay past an answered pause; a waiting run's stream ends at its pause", async () => {
    const { flow } = await admin.flow.createFlow({
      flow: {
        name: unique("ts-pause"),
        graph: {
          nodes: [
            { id: "start", name: "start", type: NodeType.START },
            { id: "ask", name: "ask", type: NodeType.INPUT, params: { mode: "form", prompt: "Age?", fields: [{ name: "age", type: "number", required: true }] } },
            { id: "end", name: "end", type: NodeType.END, params: { outputs: { age: "{{ask.age}}" } } },
          ],
          edges: [
            { id: "e1", source: "start", target: "ask" },
            { id: "e2", source: "ask", target: "end" },
          ],
        },
      },
    });
    const { fetch: f, sent } = cuttingFetch(() => undefined);
    const tc = client(f);
    const paused = await collect(tc.flow.runFlow({ flowId: flow!.id }));
    assert.equal(paused[paused.length - 1].event?.kind.case, "inputRequired");
    const runId = paused[0].runId;
    const waiting = await collect(tc.flow.streamRunEvents({ runId, afterSeq: 0n }));
    assert.deepEqual(waiting.map((e) => e.seq), paused.map((e) => e.seq));
    const rest = await collect(tc.flow.resumeRun({ runId, nodeId: "ask", input: { age: 36 } }));
    assert.equal(rest[rest.length - 1].event?.kind.case, "runFinished");
    const replay = await collect(tc.flow.streamRunEvents({ runId, afterSeq: 0n }));
    assert.deepEqual(replay.map((e) => e.seq), [...paused, ...rest].map((_, i) => BigInt(i + 1)));
    assert.deepEqual(replay.map((e) => e.event?.kind.case), [...paused, ...rest].map((e) => e.event?.kind.case));
    assert.equal(sent.length, 4, "no reconnect after a pause: " + sent.map((r) => r.url).join(", "));
  });

  test("gives up after retry.streamReconnects reconnects without progress", async () => {
    const sessionId = await newSession();
    const { fetch: f, sent } = cuttingFetch((url) =>
      url.includes(":chat") ? { after: 1, how: "error" } : { after: 0, how: "error" },
    );
    const tc = createTypecase({
      baseUrl,
      apiKey,
      fetch: f,
      retry: { initialBackoffMs: 5, maxBackoffMs: 10, streamReconnects: 2 },
    });
    const seen: { turnId: string }[] = [];
    await assert.rejects(
      (async () => {
        for await (const ev of tc.chat.chat({ sessionId, ...question })) seen.push(ev);
      })(),
      (e: unknown) => e instanceof TypecaseError && e.code === "UNAVAILABLE",
    );
    assert.equal(seen.length, 1);
    assert.deepEqual(
      sent.map((r) => r.method),
      ["POST", "GET", "GET"],
    );
    // Let the abandoned turn finish so it does not hold the model for the next tests.
    await collect(admin.chat.streamTurnEvents({ turnId: seen[0].turnId, afterSeq: 1n }));
  });
});
