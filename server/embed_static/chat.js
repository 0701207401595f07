// The embeddable chat page (server/embed.py). The scoped API key comes in the URL fragment (#key=...), which the
// browser never sends to a server; it is read once, dropped from the address bar and kept in memory only. The page
// chats through the public REST API of its own origin: POST /v1/sessions, then POST /v1/sessions/{id}:chat (NDJSON).
(() => {
  const match = location.pathname.match(/^\/embed\/(assistants|flows)\/([^/]+)\/?$/);
  const key = new URLSearchParams(location.hash.slice(1)).get("key") || "";
  history.replaceState(null, "", location.pathname + location.search);
  const log = document.getElementById("log");
  const form = document.getElementById("form");
  const input = document.getElementById("input");
  const status = document.getElementById("status");
  const headers = { authorization: `Bearer ${key}`, "content-type": "application/json" };
  let sessionId = "";

  function bubble(role, text) {
    const div = document.createElement("div");
    div.className = `msg ${role}`;
    div.textContent = text;
    log.appendChild(div);
    log.scrollTop = log.scrollHeight;
    return div;
  }

  async function failure(response) {
    try {
      return (await response.json()).message || response.statusText;
    } catch {
      return response.statusText;
    }
  }

  async function session() {
    if (sessionId) return sessionId;
    const id = decodeURIComponent(match[2]);
    const body = match[1] === "assistants" ? { assistant_id: id } : { flow_id: id };
    const response = await fetch("/v1/sessions", { method: "POST", headers, body: JSON.stringify(body) });
    if (!response.ok) throw new Error(await failure(response));
    sessionId = (await response.json()).session.id;
    return sessionId;
  }

  function apply(line, out) {
    const message = JSON.parse(line);
    if (message.error) throw new Error(message.error.message);
    const event = (message.result && message.result.event) || {};
    if (event.token && event.token.text) out.textContent += event.token.text;
    if (event.ended && event.ended.answer && event.ended.answer.content) out.textContent = event.ended.answer.content;
    if (event.error) throw new Error(event.error.message);
  }

  async function send(text) {
    bubble("user", text);
    const out = bubble("assistant", "");
    const id = await session();
    const response = await fetch(`/v1/sessions/${encodeURIComponent(id)}:chat`, {
      method: "POST", headers, body: JSON.stringify({ content: text }),
    });
    if (!response.ok || !response.body) throw new Error(await failure(response));
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (line) apply(line, out);
      }
    }
    if (buffer.trim()) apply(buffer.trim(), out);
    out.classList.add("done");
  }

  if (!match || !key) {
    status.textContent = "This chat needs its key: embed it as /embed/assistants/<id>#key=<scoped API key>.";
    form.hidden = true;
    return;
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    input.disabled = true;
    status.textContent = "";
    try {
      await send(text);
    } catch (error) {
      status.textContent = error.message;
    } finally {
      input.disabled = false;
      input.focus();
    }
  });
})();
