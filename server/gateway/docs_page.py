"""The /docs page: a self-contained HTML page (no CDN) that lists the operations of the OpenAPI document
(openapi.py builds the document; this page fetches and renders it in the browser)."""

from __future__ import annotations

import html
import json


def docs_page(title: str, openapi_url: str) -> str:
    """A self-contained page (no CDN) listing the operations of the OpenAPI document."""
    return _DOCS_HTML.replace("__TITLE__", html.escape(title)).replace("__OPENAPI__", json.dumps(openapi_url))


_DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
main{max-width:1100px;margin:0 auto;padding:16px 24px}
h2{margin:28px 0 8px;font-size:17px}.op{background:#fff;border:1px solid #dde1e7;border-radius:6px;margin:8px 0}
.op>summary{cursor:pointer;padding:8px 12px;display:flex;gap:12px;align-items:baseline}
.m{font:600 12px monospace;padding:2px 6px;border-radius:4px;color:#fff;min-width:52px;text-align:center}
.get{background:#2f7d32}.post{background:#1565c0}.put{background:#8e24aa}.patch{background:#ef6c00}.delete{background:#c62828}
.p{font-family:monospace}.s{color:#5a6270}.body{padding:4px 14px 14px}
table{border-collapse:collapse;width:100%;margin:6px 0}td,th{border-bottom:1px solid #eceff3;padding:4px 6px;text-align:left;vertical-align:top}
pre{background:#f0f2f5;padding:8px;overflow:auto;max-height:320px}input,textarea{font:12px monospace;width:100%;box-sizing:border-box}
button{margin-top:6px;padding:4px 12px}
</style></head><body><header><h1>__TITLE__</h1><div id="info" class="s"></div></header><main id="ops">Loading…</main>
<script>
const OPENAPI = __OPENAPI__;
const esc = s => String(s ?? "").replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
function resolve(doc, s){ while (s && s.$ref){ s = doc.components.schemas[s.$ref.split("/").pop()]; } return s || {}; }
function example(doc, s, depth){
  s = resolve(doc, s); if (depth > 3) return null;
  if (s.anyOf) return example(doc, s.anyOf[0], depth);
  if (s.allOf) return example(doc, s.allOf[0], depth);
  const t = Array.isArray(s.type) ? s.type[0] : s.type;
  if (s.enum) return s.enum[0];
  if (t === "object" && s.properties){ const o = {}; for (const [k,v] of Object.entries(s.properties)) o[k] = example(doc, v, depth+1); return o; }
  if (t === "array") return [];
  if (t === "integer" || t === "number") return 0;
  if (t === "boolean") return false;
  if (t === "string") return s.format === "int64" || s.format === "uint64" ? "0" : "";
  return null;
}
async function tryIt(form, path, method){
  const out = form.querySelector("pre"); out.textContent = "…";
  let url = path; const q = new URLSearchParams();
  for (const el of form.querySelectorAll("input[data-in]")){
    if (!el.value) continue;
    if (el.dataset.in === "path") url = url.replace("{" + el.name + "}", el.value); else q.append(el.name, el.value);
  }
  const init = {method: method.toUpperCase(), headers: {}};
  const tok = document.getElementById("token").value; if (tok) init.headers["Authorization"] = "Bearer " + tok;
  const ta = form.querySelector("textarea"); if (ta && ta.value.trim()){ init.body = ta.value; init.headers["Content-Type"] = "application/json"; }
  const res = await fetch(url + (q.toString() ? "?" + q : ""), init);
  out.textContent = res.status + " " + res.statusText + "\\n\\n";
  const head = out.textContent; let text = "";
  const reader = res.body.getReader(); const dec = new TextDecoder();
  for (;;){ const {done, value} = await reader.read(); if (done) break; text += dec.decode(value, {stream: true}); out.textContent = head + text; }
  out.textContent = head + pretty(text, res.headers.get("content-type") || "");
}
function pretty(text, type){
  try {
    if (type.includes("application/json")) return JSON.stringify(JSON.parse(text), null, 2);
    if (type.includes("ndjson")) return text.split("\n").filter(Boolean).map(l => JSON.stringify(JSON.parse(l), null, 2)).join("\n");
  } catch (e) {}
  return text;
}
(async () => {
  const doc = await (await fetch(OPENAPI)).json();
  document.getElementById("info").innerHTML = esc(doc.info.version) + ' · <a style="color:#9cf" href="' + esc(OPENAPI) + '">openapi.json</a> · <label for="token">API key, sent as Authorization: Bearer</label> <input id="token" type="password" autocomplete="off" placeholder="paste your API key" style="width:260px">';
  const token = document.getElementById("token");  // kept for this tab only, so a reload does not forget it
  token.value = sessionStorage.getItem("typecase-docs-token") || "";
  token.addEventListener("input", () => sessionStorage.setItem("typecase-docs-token", token.value));
  const byTag = {};
  for (const [path, item] of Object.entries(doc.paths)) for (const [method, op] of Object.entries(item)) (byTag[(op.tags||["default"])[0]] ||= []).push([path, method, op]);
  const main = document.getElementById("ops"); main.innerHTML = "";
  for (const [tag, ops] of Object.entries(byTag)){
    const h = document.createElement("h2"); h.textContent = tag; main.appendChild(h);
    for (const [path, method, op] of ops){
      const d = document.createElement("details"); d.className = "op";
      const params = op.parameters || [];
      const body = op.requestBody && op.requestBody.content["application/json"];
      d.innerHTML = '<summary><span class="m ' + method + '">' + method.toUpperCase() + '</span><span class="p">' + esc(path) + '</span><span class="s">' + esc(op.summary || op.operationId) + '</span></summary>'
        + '<div class="body"><p>' + esc(op.description || "") + '</p><form>'
        + (params.length ? '<table><tr><th>parameter</th><th>in</th><th>value</th></tr>' + params.map(p => '<tr><td class="p">' + esc(p.name) + '</td><td>' + p.in + '</td><td><input data-in="' + p.in + '" name="' + esc(p.name) + '" placeholder="' + esc(p.description || (p.schema && p.schema.type) || "") + '"></td></tr>').join("") + '</table>' : '')
        + (body ? '<div>body</div><textarea rows="6">' + esc(JSON.stringify(body.example ?? example(doc, body.schema, 0), null, 2)) + '</textarea>' : '')
        + '<button type="submit">Send</button><pre></pre></form></div>';
      d.querySelector("form").addEventListener("submit", e => { e.preventDefault(); tryIt(e.target, path, method).catch(err => e.target.querySelector("pre").textContent = String(err)); });
      main.appendChild(d);
    }
  }
})();
</script></body></html>
"""
