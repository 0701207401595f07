// Shared by the SDK tests, which run against a live server: TYPECASE_URL and TYPECASE_API_KEY (an admin key)
// come from tests/client/test_typescript_sdk.py, which starts the server.

import assert from "node:assert/strict";
import { createTypecase } from "../index.js";
import type { TypecaseClient, TypecaseOptions } from "../index.js";
import { ModelType } from "../gen/typecase/v1/llm_pb.js";
import type { ChatResponse } from "../gen/typecase/v1/chat_pb.js";

export const baseUrl = process.env.TYPECASE_URL ?? "http://127.0.0.1:8080";
export const apiKey = process.env.TYPECASE_API_KEY ?? "";

/** A client with the admin key; retries back off quickly so failure paths stay fast. */
export function adminClient(options: TypecaseOptions = {}): TypecaseClient {
  return createTypecase({ baseUrl, apiKey, retry: { initialBackoffMs: 20, maxBackoffMs: 100 }, ...options });
}

export function unique(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

export async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of stream) out.push(item);
  return out;
}

type TurnMessage = Pick<ChatResponse, "seq" | "turnId" | "event">;

export function kinds(events: TurnMessage[]): string[] {
  return events.map((e) => e.event?.kind.case ?? "");
}

export function textOf(events: TurnMessage[]): string {
  let text = "";
  for (const e of events) if (e.event?.kind.case === "token") text += e.event.kind.value.text;
  return text;
}

/** The built-in SmolLM2 chat model, found through the API. */
export async function localModelId(tc: TypecaseClient): Promise<string> {
  const { models } = await tc.llm.listModels({ type: ModelType.LLM, pageSize: 100 });
  const model = models.find((m) => m.name.toLowerCase().includes("smollm2"));
  assert.ok(model, `no SmolLM2 model among ${models.map((m) => m.name).join(", ")}`);
  return model.id;
}

/** One whole turn: first `started`, last `ended`, seqs 1, 2, 3... with no gap or repeat. */
export function assertCompleteTurn(events: TurnMessage[]): void {
  const k = kinds(events);
  assert.equal(k[0], "started", `first event: ${k.join(",")}`);
  assert.equal(k[k.length - 1], "ended", `last event: ${k.join(",")}`);
  assert.deepEqual(
    events.map((e) => e.seq),
    events.map((_, i) => BigInt(i + 1)),
  );
  assert.ok(events.every((e) => e.turnId === events[0].turnId && e.turnId !== ""));
}
