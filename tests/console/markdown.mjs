// Chat answers as Markdown: a stored answer with a code block renders highlighted with a working Copy button;
// stored answers carrying XSS payloads (raw HTML with handlers, javascript: links, a tracking image) execute
// nothing: no dialog, no request, no navigation. Then a real chat: per-chat temperature and max tokens go out
// with the question, and the chat's title appears without a reload.
//
// The stored answers go in through the API (ChatService.AddMessages), so they are exact and need no model.
import { ADMIN_KEY, BASE_URL, assert, run, shot, signIn, sleep } from "./harness.mjs";

const CODE_ANSWER = [
  "Here is a function:",
  "",
  "```python",
  "def greet(name: str) -> str:",
  '    return f"Hello {name}"  # a comment',
  "```",
  "",
  "and **bold** text with `inline code`.",
].join("\n");

// Every payload tries to reach /canary-<n> or open a dialog; none may.
const XSS_ANSWER = [
  '<img src=x onerror="alert(1);fetch(\'/canary-1\')">',
  "",
  "[click me](javascript:alert(2);fetch('/canary-2'))",
  "",
  "<a href=\"javascript:fetch('/canary-3')\">raw link</a>",
  "",
  "<script>fetch('/canary-4');alert(4)</script>",
  "",
  "<svg onload=\"fetch('/canary-5')\"></svg>",
  "",
  "![pixel](/canary-6.png)",
  "",
  "<javascript:fetch('/canary-7')>",
  "",
  "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCg4KTwvc2NyaXB0Pg==)",
].join("\n");

async function api(method, path, body) {
  const res = await fetch(BASE_URL + path, {
    method,
    headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

run("markdown", async (page, result, context) => {
  const models = await api("GET", "/v1/models?type=MODEL_TYPE_LLM&online=true");
  const modelId = models.models[0].id;
  const session = (await api("POST", "/v1/sessions", { model_id: modelId, title: "Markdown and payloads" })).session;
  await api("POST", `/v1/sessions/${session.id}/messages`, {
    pairs: [
      { question: "Show me code", answer: CODE_ANSWER },
      { question: "Show me payloads", answer: XSS_ANSWER },
    ],
  });
  result.sessionId = session.id;

  const dialogs = [];
  const canaries = [];
  page.on("dialog", (d) => {
    dialogs.push(d.message());
    void d.dismiss();
  });
  context.on("request", (r) => {
    if (/canary|\/x$/.test(r.url())) canaries.push(r.url());
  });
  context.on("page", (p) => canaries.push(`popup: ${p.url()}`));
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: BASE_URL });

  await signIn(page, `/chat/${session.id}`);
  const answers = page.locator("[data-testid=answer]");
  await answers.nth(1).waitFor();

  // 1. The code block is highlighted and copyable.
  const code = answers.nth(0).locator("pre.code-block code");
  result.codeClass = await code.getAttribute("class");
  result.highlightedSpans = await code.locator("span[class^=hljs-]").count();
  result.keywordColour = await code.locator(".hljs-keyword").first().evaluate((el) => getComputedStyle(el).color);
  result.bold = await answers.nth(0).locator("strong").textContent();
  assert(result.codeClass.includes("language-python"), `code block marked python: ${result.codeClass}`);
  assert(result.highlightedSpans >= 3, `code highlighted: ${result.highlightedSpans} spans`);
  assert(result.keywordColour !== "rgb(29, 35, 48)", `keywords coloured differently from text: ${result.keywordColour}`);
  await answers.nth(0).locator("pre.code-block").hover();
  await answers.nth(0).locator("pre.code-block").getByRole("button", { name: "Copy" }).click();
  await answers.nth(0).locator("pre.code-block").getByRole("button", { name: "Copied" }).waitFor();
  result.clipboard = await page.evaluate(() => navigator.clipboard.readText());
  assert(result.clipboard.startsWith("def greet(name: str) -> str:"), `copied the code: ${result.clipboard}`);
  await shot(page, "20-chat-markdown");

  // 2. The payloads are shown, inert. Click every link the answer has.
  const xss = answers.nth(1).locator("[data-testid=answer-text]");
  result.xssHtml = await xss.innerHTML();
  for (const link of await xss.locator("a").all()) {
    await link.click({ modifiers: [] }).catch(() => undefined);
  }
  await sleep(1500); // time for any handler, image load or navigation to happen
  result.dialogs = dialogs;
  result.canaries = canaries;
  result.url = page.url();
  assert(dialogs.length === 0, `no dialog opened: ${dialogs}`);
  assert(canaries.length === 0, `no payload request was made: ${canaries}`);
  assert(new URL(page.url()).pathname === `/chat/${session.id}`, `no navigation: ${page.url()}`);
  result.liveInDom = await xss.evaluate((root) =>
    [...root.querySelectorAll("*")].flatMap((el) => [
      ...(["SCRIPT", "SVG", "IFRAME"].includes(el.tagName.toUpperCase()) ? [el.tagName] : []),
      ...[...el.attributes].filter((a) => /^on/i.test(a.name) || /^\s*(javascript|data|vbscript):/i.test(a.value) || (el.tagName === "IMG" && a.name === "src")).map((a) => `${el.tagName} ${a.name}=${a.value}`),
    ]),
  );
  assert(result.liveInDom.length === 0, `no live handler, script or URL in the DOM: ${result.liveInDom}`);
  assert((await xss.textContent()).includes("<img src=x onerror="), "raw HTML is shown as text");
  await shot(page, "21-chat-xss-inert");

  // 3. A new chat: its own temperature and max tokens go out with the question; the title appears live.
  await page.getByRole("button", { name: "New chat" }).click();
  await page.waitForURL((u) => /\/chat\/[^/]+$/.test(u.pathname) && !u.pathname.endsWith(session.id));
  const newId = new URL(page.url()).pathname.split("/").pop();
  result.newSessionId = newId;
  await page.fill("input[name=temperature]", "0.3");
  await page.fill("input[name=max-tokens]", "12");
  const chatRequest = page.waitForRequest((r) => r.url().endsWith(`/v1/sessions/${newId}:chat`));
  await page.fill("textarea[name=question]", "Name three colours of the sea.");
  await page.getByRole("button", { name: "Send" }).click();
  result.chatBody = JSON.parse((await chatRequest).postData());
  assert(result.chatBody.temperature === 0.3 && (result.chatBody.max_tokens ?? result.chatBody.maxTokens) === 12,
    `settings sent: ${JSON.stringify(result.chatBody)}`);
  await page.waitForFunction(() => [...document.querySelectorAll("[data-testid=answer]")].pop()?.dataset.status === "complete", null, { timeout: 60_000 });
  const started = Date.now();
  await page.waitForFunction(() => {
    const h = document.querySelector(".conversation .pane-head h2");
    return h && h.textContent !== "New chat";
  }, null, { timeout: 30_000 });
  result.title = await page.locator(".conversation .pane-head h2").textContent();
  result.titleAfterMs = Date.now() - started;
  await shot(page, "22-chat-title-live");
  // The settings belong to that chat: another chat shows its own (empty) ones.
  await page.goto(`${BASE_URL}/chat/${session.id}`);
  await answers.nth(1).waitFor();
  result.otherChatTemperature = await page.inputValue("input[name=temperature]");
  assert(result.otherChatTemperature === "", `temperature is per chat: ${result.otherChatTemperature}`);
});
