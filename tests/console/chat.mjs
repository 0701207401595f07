// Sign in with the admin key, chat with the local model (tokens stream in), reload mid-answer (the answer keeps
// streaming and ends with no duplicated text), and stop an answer.
import { ADMIN_KEY, BASE_URL, assert, run, shot, sleep } from "./harness.mjs";

// Records the newest answer's status and text every 25 ms, in the page (survives nothing: re-install after reload).
async function record(page) {
  await page.evaluate(() => {
    window.__samples = [];
    window.__recorder = setInterval(() => {
      const answers = document.querySelectorAll("[data-testid=answer]");
      const a = answers[answers.length - 1];
      if (a) {
        const text = a.querySelector("[data-testid=answer-text]")?.dataset.source ?? "";
        window.__samples.push({ id: a.dataset.messageId, status: a.dataset.status, text });
      }
    }, 25);
  });
}
const samples = (page) => page.evaluate(() => window.__samples);

const lastAnswer = (page) =>
  page.evaluate(() => {
    const a = [...document.querySelectorAll("[data-testid=answer]")].pop();
    return a ? { id: a.dataset.messageId, status: a.dataset.status, text: a.querySelector("[data-testid=answer-text]")?.dataset.source ?? "" } : null;
  });

async function waitForAnswer(page, predicate, timeout = 30_000) {
  const start = Date.now();
  for (;;) {
    const a = await lastAnswer(page);
    if (a && predicate(a)) return a;
    if (Date.now() - start > timeout) throw new Error(`timed out waiting for the answer; last: ${JSON.stringify(a)}`);
    await sleep(20);
  }
}

async function ask(page, question, maxTokens) {
  await page.fill("input[name=max-tokens]", String(maxTokens));
  const before = await page.locator("[data-testid=answer]").count();
  await page.fill("textarea[name=question]", question);
  await page.getByRole("button", { name: "Send" }).click();
  await page.waitForFunction((n) => document.querySelectorAll("[data-testid=answer]").length > n, before);
}

run("chat", async (page, result) => {
  const t0 = Date.now();
  const lap = (name) => ((result.timings ??= {})[name] = Date.now() - t0);
  // The sign-in page says where the admin key is, and refuses a wrong key with the server's reason.
  await page.goto(BASE_URL + "/");
  await page.getByRole("tab", { name: "API key" }).waitFor();
  assert((await page.textContent("body")).includes(".typecase/admin_api_key"), "sign-in page tells where the key is");
  await page.fill("input[name=api-key]", "tc-wrong-key-000000000000");
  await page.getByRole("button", { name: "Sign in" }).click();
  const refusal = await page.getByRole("alert").textContent();
  assert(/not accepted/i.test(refusal), `wrong key refused: ${refusal}`);
  result.refusal = refusal;
  await shot(page, "01-signin-refused");
  await page.fill("input[name=api-key]", ADMIN_KEY);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByTestId("whoami").waitFor();
  assert(new URL(page.url()).pathname === "/chat", `lands on /chat, not ${page.url()}`);
  await shot(page, "02-chat-empty");
  lap("signedIn");

  // A new chat with the default target: the first online LLM (the built-in local model).
  await page.getByRole("button", { name: "New chat" }).click();
  await page.waitForURL(/\/chat\/[^/]+$/);
  result.sessionId = new URL(page.url()).pathname.split("/").pop();
  result.target = await page.$eval("select[name=target]", (s) => s.selectedOptions[0]?.textContent);

  // 1. Tokens stream in.
  await record(page);
  await ask(page, "Hello! Tell me about the sea in three sentences.", 24);
  await waitForAnswer(page, (a) => (a.status === "streaming" && a.text.length > 0) || a.status !== "streaming");
  await shot(page, "03-chat-streaming");
  const done = await waitForAnswer(page, (a) => a.status !== "streaming");
  const seen = (await samples(page)).filter((s) => s.id === done.id && s.status === "streaming" && s.text);
  result.streamed = { answerId: done.id, status: done.status, text: done.text, distinctPartials: new Set(seen.map((s) => s.text)).size };
  assert(done.text.length > 0, "the answer has text");
  assert(result.streamed.distinctPartials >= 2, `text grew while streaming (${result.streamed.distinctPartials} partial texts)`);
  await shot(page, "04-chat-answered");
  lap("streamed");

  // 2. Reload mid-answer: the page re-attaches from the saved seq and the answer completes without duplication.
  const eventRequests = [];
  page.on("request", (req) => {
    if (/\/v1\/turns\/[^/]+\/events/.test(req.url())) eventRequests.push({ url: req.url(), lastEventId: req.headers()["last-event-id"] ?? null });
  });
  for (let attempt = 1; ; attempt++) {
    eventRequests.length = 0;
    await ask(page, "Write a long, detailed story about an old lighthouse keeper, his cat and a great storm at sea.", 160);
    const partial = await waitForAnswer(page, (a) => a.status === "streaming" && a.text.length >= 20);
    await page.reload();
    await page.getByTestId("messages").waitFor();
    await record(page);
    await shot(page, "05-chat-after-reload");
    const final = await waitForAnswer(page, (a) => a.id === partial.id && a.status !== "streaming", 60_000);
    const after = (await samples(page)).filter((s) => s.id === partial.id);
    const streamingAfter = after.filter((s) => s.status === "streaming");
    if (streamingAfter.length === 0 && attempt < 3) continue; // the answer ended before the page was back: again
    const notPrefix = after.filter((s) => !final.text.startsWith(s.text));
    result.reload = {
      attempt,
      answerId: partial.id,
      before: partial.text,
      final: final.text,
      status: final.status,
      samplesAfterReload: after.length,
      streamingSamplesAfterReload: streamingAfter.length,
      eventRequests: [...eventRequests],
    };
    assert(streamingAfter.length > 0, "the answer was still streaming after the reload, and the page followed it");
    assert(notPrefix.length === 0, `every text shown after the reload is a prefix of the final answer: ${JSON.stringify(notPrefix.slice(0, 2))}`);
    assert(final.text.startsWith(partial.text), "the final answer continues the text shown before the reload");
    assert(final.text.length > partial.text.length, "more text arrived after the reload");
    await shot(page, "06-chat-reload-completed");
    lap("reloaded");
    break;
  }

  // 3. Stop: the answer ends early, marked as stopped. (In a new chat: a short history is a short prompt.)
  await page.getByRole("button", { name: "New chat" }).click();
  await page.waitForURL((url) => url.pathname !== `/chat/${result.sessionId}`);
  result.stopSessionId = new URL(page.url()).pathname.split("/").pop();
  await page.getByText("Ask something").waitFor();
  // The local model may end its answer on its own at any moment, also between the check and the click: then the
  // answer is complete, nothing was stopped, and the scenario asks again.
  let stopped;
  for (let attempt = 1; ; attempt++) {
    // (A counting prompt gets a 20-character answer from this model: the stop raced its natural end.)
    await ask(page, "Write a long, detailed story about a sailor, her dog and a voyage across the ocean.", 400);
    const a = await waitForAnswer(page, (a) => (a.status === "streaming" && a.text.length >= 15) || a.status !== "streaming");
    if (a.status === "streaming") {
      lap("stop clicked");
      await page.getByTestId("stop").click();
      stopped = await waitForAnswer(page, (a) => a.status !== "streaming", 20_000);
      if (stopped.status === "stopped") break;
    }
    result.stopAttempts = attempt + 1;
    assert(attempt < 4, `the model kept ending its answers before the stop reached them (last: ${stopped?.status ?? a.status})`);
    await page.getByRole("button", { name: "Send" }).waitFor(); // the answer ended by itself: ask again
  }
  await page.getByText("Stopped", { exact: true }).waitFor();
  await page.getByRole("button", { name: "Send" }).waitFor();
  result.stop = { answerId: stopped.id, text: stopped.text, status: stopped.status };
  await shot(page, "07-chat-stopped");
  lap("stopped");

  // 4. Delete a chat: a new, empty one goes away from the list; the others stay.
  const items = page.getByTestId("session-list").locator("li");
  const listed = await items.count();
  await page.getByRole("button", { name: "New chat" }).click();
  await page.waitForURL((url) => url.pathname !== `/chat/${result.stopSessionId}`);
  const doomed = new URL(page.url()).pathname.split("/").pop();
  await page.getByText("Ask something").waitFor();
  assert((await items.count()) === listed + 1, "the new chat is listed");
  await items.filter({ has: page.locator(`a[href="/chat/${doomed}"]`) }).getByRole("button", { name: "Delete this chat" }).click();
  await page.getByRole("button", { name: "Delete", exact: true }).click();
  await page.waitForURL((url) => url.pathname === "/chat");
  await page.waitForFunction((n) => document.querySelectorAll("[data-testid=session-list] li").length === n, listed);
  assert((await page.locator(`a[href="/chat/${result.sessionId}"]`).count()) === 1, "the first chat stays");
  result.deletedSessionId = doomed;
});
