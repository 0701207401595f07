// The proxy & traffic view: statistics polled live (numbers and sparklines) while requests go through the
// LLM API proxy (PROXY_URL, forwarding to the server's own OpenAI-compatible API), and server log lines
// streamed live. The proxy spends the server's key upstream, so its requests carry a proxy access key (PROXY_KEY).
import { ADMIN_KEY, BASE_URL, assert, run, shot, signIn, sleep } from "./harness.mjs";

const PROXY_URL = process.env.PROXY_URL;
const auth = { authorization: `Bearer ${ADMIN_KEY}` };
// The proxy's callers present an access key: an API key with the proxy scope (created by the test).
const proxyAuth = { authorization: `Bearer ${process.env.PROXY_KEY}` };

async function traffic() {
  await fetch(`${PROXY_URL}/v1/models`, { headers: proxyAuth }).then((r) => r.text());
  await fetch(`${PROXY_URL}/v1/no-such-route`, { headers: proxyAuth }).then((r) => r.text());
}
const api = (path, body) =>
  fetch(`${BASE_URL}${path}`, { method: "POST", headers: { ...auth, "content-type": "application/json" }, body: JSON.stringify(body) }).then((r) => r.json());
const requests = (page) =>
  page.evaluate(() => Number(document.querySelector(".stat .stat-value")?.textContent?.replace(/\D/g, "") || "-1"));

run("proxy", async (page, result) => {
  const chat = await fetch(`${PROXY_URL}/v1/chat/completions`, {
    method: "POST",
    headers: { ...proxyAuth, "content-type": "application/json" },
    body: JSON.stringify({ model: "smollm2-135m-instruct", max_tokens: 8, messages: [{ role: "user", content: "Hi" }] }),
  });
  assert(chat.ok, `a chat completion through the proxy: ${chat.status}`);
  await traffic();

  await signIn(page, "/proxy");
  await page.getByTestId("stats").waitFor();
  await page.locator("[data-testid=log-lines] .log-line").first().waitFor();
  result.logLines = await page.locator("[data-testid=log-lines] .log-line").count();
  // Something that logs a line while the page is open: indexing a small document (checked at the end).
  const kb = await api("/v1/knowledge-bases", { name: `log probe ${Date.now() % 100000}` });
  const file = await api(`/v1/knowledge-bases/${kb.knowledge_base.id}:add-text`, { name: "probe.txt", text: "A line for the log." });
  result.probeFileId = file.file.id;

  await page.waitForFunction(() => Number(document.querySelector(".stat .stat-value")?.textContent?.replace(/\D/g, "")) > 0);
  result.requestsFirst = await requests(page);
  for (let i = 0; i < 3; i++) {
    await traffic();
    await sleep(700);
  }
  // The numbers follow the traffic without a reload.
  await page.waitForFunction((n) => Number(document.querySelector(".stat .stat-value")?.textContent?.replace(/\D/g, "")) >= n + 6, result.requestsFirst);
  result.requestsLater = await requests(page);
  // The requests-per-second sparkline draws a line once two rates are known.
  await page.waitForFunction(() => (document.querySelector(".sparkline path.line")?.getAttribute("d") ?? "").includes("L"));
  result.statuses = await page.$$eval(".breakdown:first-child .bar-row .badge", (bs) => bs.map((b) => b.textContent));
  assert(result.statuses.includes("200") && result.statuses.includes("404"), `requests by status: ${result.statuses}`);
  result.models = await page.$$eval("[data-testid=by-model] tbody tr td:first-child", (tds) => tds.map((t) => t.textContent));
  assert(result.models.includes("smollm2-135m-instruct"), `requests by model: ${result.models}`);
  await shot(page, "16-proxy-stats");

  // The indexing line arrives on the open stream.
  await page.waitForFunction(
    (id) => [...document.querySelectorAll("[data-testid=log-lines] .log-line")].some((l) => l.textContent.includes(id)),
    file.file.id,
    { timeout: 60_000 },
  );
  await page.getByTestId("log-lines").scrollIntoViewIfNeeded();
  await shot(page, "17-proxy-logs");
});
