// Unary calls through the generic HTTP mapping: path variables, bodies ("*" and a field), query parameters,
// update masks, paging, typed errors, authentication and the GET-only retry rule.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import { createTypecase, routeOf, TypecaseError } from "../index.js";
import { ErrorInfoSchema, RetryInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../gen/google/rpc/status_pb.js";
import { ChatService, MessageCategory } from "../gen/typecase/v1/chat_pb.js";
import { UserRole } from "../gen/typecase/v1/auth_pb.js";
import { ModelType } from "../gen/typecase/v1/llm_pb.js";
import { adminClient, apiKey, baseUrl, unique } from "./support.js";

async function rejects(promise: Promise<unknown>): Promise<TypecaseError> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof TypecaseError, `expected a TypecaseError, got ${String(e)}`);
    return e;
  }
  assert.fail("the call succeeded");
}

describe("unary calls", () => {
  const tc = adminClient();

  test("routes come from the google.api.http options", () => {
    const update = routeOf(ChatService.method.updateSession);
    assert.equal(update.verb, "PATCH");
    assert.equal(update.template, "/v1/sessions/{session.id}");
    assert.equal(update.body, "session");
    assert.equal(routeOf(ChatService.method.chat).template, "/v1/sessions/{session_id}:chat");
  });

  test("session CRUD: create, get, patch with update_mask, list with paging, delete", async () => {
    const tag = unique("crud");
    const created = [];
    for (let i = 0; i < 3; i++) {
      const { session } = await tc.chat.createSession({ session: { title: `${tag} ${i}`, systemPrompt: "be brief" } });
      assert.ok(session?.id);
      created.push(session);
    }
    const { session: got } = await tc.chat.getSession({ sessionId: created[0].id });
    assert.equal(got?.title, `${tag} 0`);
    assert.equal(got?.systemPrompt, "be brief");
    assert.ok(got?.createTime && got.createTime.seconds > 0n);

    // Only the masked field changes (update_mask travels as a query parameter next to the `session` body).
    const { session: renamed } = await tc.chat.updateSession({
      session: { id: created[0].id, title: `${tag} renamed`, systemPrompt: "ignored" },
      updateMask: { paths: ["title"] },
    });
    assert.equal(renamed?.title, `${tag} renamed`);
    assert.equal(renamed?.systemPrompt, "be brief");

    // Paging with query parameters (keyword, page_size, page_token).
    const first = await tc.chat.listSessions({ keyword: tag, pageSize: 2 });
    assert.equal(first.sessions.length, 2);
    assert.ok(first.nextPageToken);
    const second = await tc.chat.listSessions({ keyword: tag, pageSize: 2, pageToken: first.nextPageToken });
    assert.equal(second.sessions.length, 1);
    assert.equal(second.nextPageToken, "");
    const ids = [...first.sessions, ...second.sessions].map((s) => s.id).sort();
    assert.deepEqual(ids, created.map((s) => s.id).sort());

    await tc.chat.deleteSession({ sessionId: created[1].id });
    const gone = await rejects(tc.chat.getSession({ sessionId: created[1].id }));
    assert.equal(gone.code, "NOT_FOUND");
    assert.equal(gone.httpStatus, 404);
    assert.equal(gone.reason, "SESSION_DELETED");
    assert.equal(gone.metadata.session_id, created[1].id);
    const after = await tc.chat.listSessions({ keyword: tag });
    assert.deepEqual(after.sessions.map((s) => s.id).sort(), [created[0].id, created[2].id].sort());
  });

  test("query parameters of GETs: enum filter, booleans, body '*' on POST", async () => {
    const { models } = await tc.llm.listModels({ type: ModelType.EMBEDDING });
    assert.ok(models.length > 0);
    assert.ok(models.every((m) => m.type === ModelType.EMBEDDING));

    const { session } = await tc.chat.createSession({ session: { title: unique("pairs") } });
    const added = await tc.chat.addMessages({
      sessionId: session!.id,
      pairs: [
        { question: "q1", answer: "a1" },
        { question: "q2", answer: "a2" },
      ],
    });
    assert.equal(added.messages.length, 4);
    const oldest = await tc.chat.listMessages({ sessionId: session!.id, pageSize: 1 });
    assert.equal(oldest.messages[0].content, "q1");
    assert.equal(oldest.messages[0].category, MessageCategory.QUESTION);
    const newest = await tc.chat.listMessages({ sessionId: session!.id, pageSize: 1, newestFirst: true });
    assert.equal(newest.messages[0].content, "a2");
    assert.equal(newest.messages[0].category, MessageCategory.ANSWER);
  });

  test("typed errors: NOT_FOUND with its reason, INVALID_ARGUMENT naming the field", async () => {
    const missing = await rejects(tc.chat.getSession({ sessionId: "01NOSUCHSESSION00000000000" }));
    assert.equal(missing.code, "NOT_FOUND");
    assert.equal(missing.reason, "NOT_FOUND");
    assert.equal(missing.metadata.id, "01NOSUCHSESSION00000000000");
    assert.ok(missing.traceId);
    assert.ok(missing.details.length >= 1);

    const invalid = await rejects(tc.chat.listSessions({ pageSize: -1 }));
    assert.equal(invalid.code, "INVALID_ARGUMENT");
    assert.equal(invalid.httpStatus, 400);
    assert.equal(invalid.reason, "INVALID_ARGUMENT");
    assert.equal(invalid.metadata.field, "page_size");
    assert.match(invalid.message, /page_size/);
  });

  test("TypecaseError.fromStatus reads a Status message (a turn's in-band error event)", () => {
    const status = create(StatusSchema, {
      code: 14,
      message: "the model is busy",
      details: [
        anyPack(ErrorInfoSchema, create(ErrorInfoSchema, { reason: "UPSTREAM_UNAVAILABLE", metadata: { model_id: "m1" } })),
        anyPack(RetryInfoSchema, create(RetryInfoSchema, { retryDelay: { seconds: 2n, nanos: 500_000_000 } })),
      ],
    });
    const error = TypecaseError.fromStatus(status);
    assert.equal(error.code, "UNAVAILABLE");
    assert.equal(error.httpStatus, 503);
    assert.equal(error.message, "the model is busy");
    assert.equal(error.reason, "UPSTREAM_UNAVAILABLE");
    assert.deepEqual(error.metadata, { model_id: "m1" });
    assert.equal(error.retryAfterMs, 2500);
    assert.equal(error.details.length, 2);
  });

  test("a wrong key is UNAUTHENTICATED", async () => {
    const stranger = createTypecase({ baseUrl, apiKey: "tc-not-a-real-key" });
    const error = await rejects(stranger.auth.getMe());
    assert.equal(error.code, "UNAUTHENTICATED");
    assert.equal(error.httpStatus, 401);
  });

  test("login with a user made with the admin key; the token function is read on every call", async () => {
    const username = unique("ts-user");
    const password = "correct horse battery staple";
    const { user } = await tc.auth.createUser({ user: { username, password, role: UserRole.USER } });
    assert.equal(user?.username, username);

    let token: string | undefined;
    const alice = createTypecase({ baseUrl, token: () => token });
    assert.equal((await rejects(alice.auth.getMe())).code, "UNAUTHENTICATED");
    const login = await alice.auth.login({ username, password });
    assert.ok(login.accessToken);
    assert.equal(login.user?.username, username);
    token = login.accessToken;
    const me = await alice.auth.getMe();
    assert.equal(me.user?.username, username);
    assert.equal(me.user?.role, UserRole.USER);
    // Not an admin: creating users is refused.
    const denied = await rejects(alice.auth.createUser({ user: { username: unique("x"), password } }));
    assert.equal(denied.code, "PERMISSION_DENIED");

    const wrong = await rejects(alice.auth.login({ username, password: "wrong password" }));
    assert.equal(wrong.code, "UNAUTHENTICATED");
    assert.equal(wrong.reason, "INVALID_CREDENTIALS");
  });

  test("GET calls are retried after a network failure, other methods are not", async () => {
    const calls: string[] = [];
    let failuresLeft = 0;
    const flaky: typeof fetch = async (input, init) => {
      calls.push(init?.method ?? "GET");
      if (failuresLeft > 0) {
        failuresLeft--;
        throw new TypeError("fetch failed (simulated)");
      }
      return fetch(input, init);
    };
    const tc2 = createTypecase({ baseUrl, apiKey, fetch: flaky, retry: { initialBackoffMs: 5, maxBackoffMs: 20 } });

    failuresLeft = 2;
    const { models } = await tc2.llm.listModels();
    assert.ok(models.length > 0);
    assert.deepEqual(calls, ["GET", "GET", "GET"]);

    calls.length = 0;
    failuresLeft = 1;
    const error = await rejects(tc2.chat.createSession({ session: { title: unique("once") } }));
    assert.equal(error.code, "UNAVAILABLE");
    assert.deepEqual(calls, ["POST"]);

    calls.length = 0;
    failuresLeft = 10;
    assert.equal((await rejects(tc2.llm.listModels())).code, "UNAVAILABLE");
    assert.equal(calls.length, 5); // DEFAULT_RETRY.maxAttempts
  });

  test("aborted and timed-out unary calls", async () => {
    const controller = new AbortController();
    controller.abort();
    const cancelled = await rejects(tc.llm.listModels({}, { signal: controller.signal }));
    assert.equal(cancelled.code, "CANCELLED");

    // A fetch that never answers: only the timeout ends the call.
    const hanging: typeof fetch = (_input, init) =>
      new Promise((_resolve, reject) => init?.signal?.addEventListener("abort", () => reject(init.signal?.reason)));
    const slow = createTypecase({ baseUrl, apiKey, fetch: hanging, retry: { maxAttempts: 1 } });
    const started = Date.now();
    const late = await rejects(slow.llm.listModels({}, { timeoutMs: 150 }));
    assert.equal(late.code, "DEADLINE_EXCEEDED");
    assert.ok(Date.now() - started < 2000);
  });
});
