// CORS in a real browser: a page served from ORIGIN_PAGE (another origin than the API at BASE_URL) calls the
// API the way a web app would: a REST call with a bearer key (preflighted), a streamed generation over SSE and a
// WebSocket. It reports what the browser let the page see; test_cors_browser.py runs it from an allowed and a
// disallowed origin.
import { ADMIN_KEY, BASE_URL, run } from "./harness.mjs";

run(`cors-${process.env.LABEL}`, async (page, result) => {
  await page.goto(process.env.ORIGIN_PAGE);
  Object.assign(result, await page.evaluate(async ({ api, key, model }) => {
    const out = {};
    const auth = { authorization: `Bearer ${key}` };
    try {
      const r = await fetch(`${api}/v1/models`, { headers: auth });
      out.rest = r.status;
      out.traceIdVisible = r.headers.get("x-trace-id") !== null;
    } catch (e) {
      out.rest = `blocked: ${e.name}`;
    }
    try {
      const r = await fetch(`${api}/v1/models/${model}:generate`, {
        method: "POST",
        headers: { ...auth, "content-type": "application/json", accept: "text/event-stream" },
        body: JSON.stringify({ messages: [{ role: "MESSAGE_ROLE_USER", content: "Hi" }], config: { max_tokens: 2 } }),
      });
      out.sse = (await r.text()).includes("data:") ? "streamed" : `status ${r.status}`;
    } catch (e) {
      out.sse = `blocked: ${e.name}`;
    }
    out.ws = await new Promise((resolve) => {
      const ws = new WebSocket(`${api.replace("http", "ws")}/v1/models/${model}:generate`, ["bearer", key]);
      ws.onopen = () => ws.send(JSON.stringify({ messages: [{ role: "MESSAGE_ROLE_USER", content: "Hi" }], config: { max_tokens: 2 } }));
      ws.onmessage = () => { resolve("frame"); ws.close(); };
      ws.onerror = () => resolve("blocked");
      setTimeout(() => resolve("timeout"), 20_000);
    });
    return out;
  }, { api: BASE_URL, key: ADMIN_KEY, model: process.env.MODEL }));
});
