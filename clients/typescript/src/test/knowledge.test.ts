// Uploading files (multipart, with form fields and progress) into a knowledge base, watching them to a final
// status over a stream, and searching what was indexed.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { TypecaseError } from "../index.js";
import { FileStatus } from "../gen/typecase/v1/knowledge_pb.js";
import { adminClient, collect, unique } from "./support.js";

describe("knowledge uploads", () => {
  const tc = adminClient();

  test("upload a text file, watch it to DONE, find it by search", async () => {
    const { knowledgeBase } = await tc.knowledge.createKnowledgeBase({ knowledgeBase: { name: unique("kb") } });
    const kbId = knowledgeBase!.id;
    const text = "The lighthouse keeper lights the lamp at dusk.\nShips steer by the lighthouse beam at night.\n".repeat(20);
    const file = new File([text], "lighthouse.txt", { type: "text/plain" });
    const progress: [number, number][] = [];
    const { file: stored } = await tc.knowledge.uploadFile(kbId, file, {
      onProgress: (sent, total) => progress.push([sent, total]),
      request: { tags: ["sea", "night"], chunkingRule: { chunkSize: 200 } },
    });
    assert.ok(stored?.id);
    assert.equal(stored.kbId, kbId);
    assert.equal(stored.name, "lighthouse.txt");
    assert.equal(stored.sizeBytes, BigInt(new TextEncoder().encode(text).length));
    assert.deepEqual(stored.tags, ["sea", "night"]);
    assert.equal(stored.chunkingRule?.chunkSize, 200);
    assert.ok(progress.length >= 2);
    assert.deepEqual(progress[progress.length - 1], [file.size, file.size]);
    assert.ok(progress.every(([sent], i) => i === 0 || sent >= progress[i - 1][0]));

    const updates = await collect(tc.knowledge.watchFile({ fileId: stored.id }, { timeoutMs: 30_000 }));
    const last = updates[updates.length - 1];
    assert.equal(last.status, FileStatus.DONE, `statuses: ${updates.map((u) => FileStatus[u.status]).join(",")}`);
    assert.ok(last.chunkCount > 1);
    assert.ok(updates.every((u, i) => i === 0 || u.seq > updates[i - 1].seq));

    const { file: done } = await tc.knowledge.getFile({ fileId: stored.id });
    assert.equal(done?.status, FileStatus.DONE);
    const { hits } = await tc.knowledge.search({ kbIds: [kbId], query: "who lights the lamp", topK: 3 });
    assert.ok(hits.length > 0);
    assert.equal(hits[0].fileId, stored.id);
    assert.match(hits[0].text, /lighthouse/);
  });

  test("a Blob without a name takes its name from the request; rejected files are typed errors", async () => {
    const { knowledgeBase } = await tc.knowledge.createKnowledgeBase({ knowledgeBase: { name: unique("kb") } });
    const kbId = knowledgeBase!.id;
    const { file } = await tc.knowledge.uploadFile(kbId, new Blob(["a small note about tides"]), {
      request: { fileName: "note.md" },
    });
    assert.equal(file?.name, "note.md");

    await assert.rejects(
      tc.knowledge.uploadFile(kbId, new File([new Uint8Array([0x4d, 0x5a, 0x90, 0])], "tool.exe")),
      (e: unknown) => e instanceof TypecaseError && e.code === "INVALID_ARGUMENT" && e.reason === "UNSUPPORTED_FILE_TYPE",
    );
    await assert.rejects(
      tc.knowledge.uploadFile(kbId, new Blob(["a small note about tides"]), { request: { fileName: "again.md" } }),
      (e: unknown) => e instanceof TypecaseError && e.code === "ALREADY_EXISTS" && e.reason === "DUPLICATE_FILE",
    );
    await assert.rejects(
      tc.knowledge.uploadFile("01NOSUCHKB0000000000000000", new Blob(["x"]), { request: { fileName: "x.txt" } }),
      (e: unknown) => e instanceof TypecaseError && e.code === "NOT_FOUND",
    );
  });
});
