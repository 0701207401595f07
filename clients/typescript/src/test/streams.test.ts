// Chat turns streamed by the built-in local model over SSE, NDJSON and WebSocket; stopping a turn; explicit
// replay with streamTurnEvents; cancelling a stream with an AbortSignal.

import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { TypecaseError } from "../index.js";
import { MessageStatus } from "../gen/typecase/v1/chat_pb.js";
import { FinishReason } from "../gen/typecase/v1/common_pb.js";
import { adminClient, assertCompleteTurn, collect, kinds, localModelId, textOf, unique } from "./support.js";

describe("streams", () => {
  const tc = adminClient();
  let modelId = "";

  before(async () => {
    modelId = await localModelId(tc);
  });

  async function newSession(): Promise<string> {
    const { session } = await tc.chat.createSession({ session: { title: unique("stream"), modelId } });
    return session!.id;
  }

  for (const via of ["sse", "ndjson", "websocket"] as const) {
    test(`a chat turn over ${via}`, async () => {
      const sessionId = await newSession();
      const events = await collect(tc.chat.chat({ sessionId, content: "Name a colour.", maxTokens: 8, temperature: 0 }, { via }));
      assertCompleteTurn(events);
      assert.ok(kinds(events).filter((k) => k === "token").length >= 2, `tokens streamed one by one: ${kinds(events)}`);
      const last = events[events.length - 1].event!.kind;
      assert.equal(last.case, "ended");
      const answer = last.value.answer!;
      assert.equal(answer.status, MessageStatus.COMPLETE);
      assert.equal(answer.content, textOf(events));
      assert.ok(answer.content.trim());
      assert.ok(last.value.usage!.completionTokens > 0 && last.value.usage!.completionTokens <= 8);
      const { messages } = await tc.chat.listMessages({ sessionId });
      assert.equal(messages[messages.length - 1].content, answer.content);
    });
  }

  test("stopTurn ends a running turn with CANCELLED and keeps the partial answer", async () => {
    const sessionId = await newSession();
    const events = [];
    let stopped: boolean | undefined;
    for await (const ev of tc.chat.chat({ sessionId, content: "Tell a very long story about a dragon.", maxTokens: 400, temperature: 0 })) {
      events.push(ev);
      if (ev.event?.kind.case === "token" && stopped === undefined) {
        stopped = (await tc.chat.stopTurn({ turnId: ev.turnId })).stopped;
      }
    }
    assert.equal(stopped, true);
    const last = events[events.length - 1].event!.kind;
    assert.equal(last.case, "ended");
    assert.equal(last.value.finishReason, FinishReason.CANCELLED);
    assert.equal(last.value.answer!.status, MessageStatus.STOPPED);
    assert.equal(last.value.answer!.content, textOf(events));
    assert.ok(last.value.usage!.completionTokens < 400);
    assert.equal((await tc.chat.stopTurn({ turnId: events[0].turnId })).stopped, false); // already over
  });

  test("an AbortSignal cancels a stream; the turn goes on and can be replayed from any seq", async () => {
    const sessionId = await newSession();
    const controller = new AbortController();
    const seen = [];
    let error: unknown;
    try {
      for await (const ev of tc.chat.chat({ sessionId, content: "Count from one to ten.", maxTokens: 24, temperature: 0 }, { signal: controller.signal })) {
        seen.push(ev);
        if (ev.event?.kind.case === "token") controller.abort();
      }
    } catch (e) {
      error = e;
    }
    assert.ok(error instanceof TypecaseError, String(error));
    assert.equal(error.code, "CANCELLED");
    assert.deepEqual(kinds(seen), ["started", "token"]);

    // Explicit resume is just the RPC: everything after seq 2, then live events to the end.
    const turnId = seen[0].turnId;
    const rest = await collect(tc.chat.streamTurnEvents({ turnId, afterSeq: 2n }));
    assert.equal(rest[0].seq, 3n);
    const whole = [...seen, ...rest];
    assertCompleteTurn(whole);
    const ended = whole[whole.length - 1].event!.kind;
    assert.equal(ended.case, "ended");
    assert.equal(ended.value.answer!.content, textOf(whole));

    // The whole log again, over NDJSON this time.
    const replay = await collect(tc.chat.streamTurnEvents({ turnId }, { via: "ndjson" }));
    assert.deepEqual(replay.map((e) => e.seq), whole.map((e) => e.seq));
  });

  test("stream errors before the first message are typed errors", async () => {
    const missing = tc.chat.streamTurnEvents({ turnId: "01NOSUCHTURN00000000000000" });
    await assert.rejects(collect(missing), (e: unknown) => e instanceof TypecaseError && e.code === "NOT_FOUND" && e.reason === "TURN_NOT_FOUND");
    const sessionId = await newSession();
    for (const via of ["sse", "ndjson", "websocket"] as const) {
      await assert.rejects(collect(tc.chat.chat({ sessionId, content: "" }, { via })), (e: unknown) => {
        assert.ok(e instanceof TypecaseError, String(e));
        assert.equal(e.code, "INVALID_ARGUMENT", `${via}: ${e.code} ${e.message}`);
        assert.equal(e.metadata.field, "content");
        return true;
      });
    }
  });

  test("a stream's timeoutMs is a deadline for the whole stream", async () => {
    const sessionId = await newSession();
    await assert.rejects(
      // stop_on_disconnect: the server stops generating when the SDK gives up and disconnects.
      collect(tc.chat.chat({ sessionId, content: "Write a poem.", maxTokens: 200, temperature: 0, stopOnDisconnect: true }, { timeoutMs: 300 })),
      (e: unknown) => e instanceof TypecaseError && e.code === "DEADLINE_EXCEEDED",
    );
  });
});
