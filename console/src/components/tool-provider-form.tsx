// The form that adds a tool provider: an OpenAPI document (pasted text or a URL, with the service's auth) or an
// MCP server (streamable HTTP or SSE URL with headers). Secrets typed here are sent once; reads show "****".
import {
  McpTransport,
  ToolAuthType,
  ToolProviderKind,
  type ToolProvider,
} from "@typecase/client/gen/typecase/v1/tools_pb.js";
import { useState } from "preact/hooks";
import { tc } from "../api";
import { ErrorBox, useAction } from "./ui";

type ProviderInit = NonNullable<NonNullable<Parameters<typeof tc.tools.createToolProvider>[0]>["provider"]>;
type Header = { name: string; value: string };

const AUTH_TYPES: { value: ToolAuthType; label: string }[] = [
  { value: ToolAuthType.UNSPECIFIED, label: "No auth" },
  { value: ToolAuthType.API_KEY_HEADER, label: "API key in a header" },
  { value: ToolAuthType.API_KEY_QUERY, label: "API key in the query" },
  { value: ToolAuthType.BEARER, label: "Bearer token" },
];

export function NewToolProvider({ onCreated, onCancel }: { onCreated: (p: ToolProvider) => void; onCancel: () => void }) {
  const [kind, setKind] = useState<ToolProviderKind>(ToolProviderKind.OPENAPI);
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [source, setSource] = useState<"url" | "text">("url");
  const [documentUrl, setDocumentUrl] = useState("");
  const [document, setDocument] = useState("");
  const [baseUrl, setBaseUrl] = useState("");
  const [authType, setAuthType] = useState<ToolAuthType>(ToolAuthType.UNSPECIFIED);
  const [authName, setAuthName] = useState("");
  const [credential, setCredential] = useState("");
  const [mcpUrl, setMcpUrl] = useState("");
  const [transport, setTransport] = useState<McpTransport>(McpTransport.STREAMABLE_HTTP);
  const [headers, setHeaders] = useState<Header[]>([]);
  const [timeoutMs, setTimeoutMs] = useState("");
  const { busy, error, act } = useAction();

  async function submit(e: Event) {
    e.preventDefault();
    const provider: ProviderInit = {
      name: name.trim(),
      description: description.trim(),
      kind,
      timeoutMs: Number(timeoutMs) || 0,
      headers: Object.fromEntries(headers.filter((h) => h.name.trim()).map((h) => [h.name.trim(), h.value])),
    };
    if (kind === ToolProviderKind.OPENAPI) {
      provider.openapi = {
        ...(source === "url" ? { documentUrl: documentUrl.trim() } : { document }),
        baseUrl: baseUrl.trim(),
        auth: authType === ToolAuthType.UNSPECIFIED ? undefined : { type: authType, name: authName.trim(), credential },
      };
    } else {
      provider.mcp = { transport, url: mcpUrl.trim() };
    }
    await act(async () => {
      const res = await tc.tools.createToolProvider({ provider });
      if (res.provider) onCreated(res.provider);
    });
  }

  const openapi = kind === ToolProviderKind.OPENAPI;
  return (
    <form class="card param-form new-tool-provider" onSubmit={submit} data-testid="new-tool-provider">
      <div class="tabs" role="tablist">
        <button type="button" role="tab" class={openapi ? "active" : ""} aria-selected={openapi} onClick={() => setKind(ToolProviderKind.OPENAPI)}>
          Import OpenAPI
        </button>
        <button type="button" role="tab" class={!openapi ? "active" : ""} aria-selected={!openapi} onClick={() => setKind(ToolProviderKind.MCP)}>
          Add MCP server
        </button>
      </div>
      <label class="field">
        <span class="field-label">Name</span>
        <input name="provider-name" required value={name} onInput={(e) => setName(e.currentTarget.value)} />
      </label>
      <label class="field">
        <span class="field-label">Description</span>
        <input name="provider-description" value={description} onInput={(e) => setDescription(e.currentTarget.value)} />
      </label>
      {openapi ? (
        <>
          <div class="inline-form">
            <label class="check">
              <input type="radio" name="openapi-source" checked={source === "url"} onChange={() => setSource("url")} /> From a URL
            </label>
            <label class="check">
              <input type="radio" name="openapi-source" checked={source === "text"} onChange={() => setSource("text")} /> Paste the document
            </label>
          </div>
          {source === "url" ? (
            <label class="field">
              <span class="field-label">Document URL (fetched by the server)</span>
              <input name="document-url" type="url" required placeholder="https://api.example.com/openapi.json" value={documentUrl} onInput={(e) => setDocumentUrl(e.currentTarget.value)} />
            </label>
          ) : (
            <label class="field">
              <span class="field-label">OpenAPI 3.0/3.1 document (JSON or YAML)</span>
              <textarea name="document" class="mono" rows={8} required value={document} onInput={(e) => setDocument(e.currentTarget.value)} />
            </label>
          )}
          <label class="field">
            <span class="field-label">Base URL (empty: the document's first server)</span>
            <input name="base-url" value={baseUrl} onInput={(e) => setBaseUrl(e.currentTarget.value)} />
          </label>
          <div class="inline-form">
            <select name="auth-type" value={String(authType)} onChange={(e) => setAuthType(Number(e.currentTarget.value) as ToolAuthType)}>
              {AUTH_TYPES.map((t) => (
                <option key={t.value} value={String(t.value)}>
                  {t.label}
                </option>
              ))}
            </select>
            {(authType === ToolAuthType.API_KEY_HEADER || authType === ToolAuthType.API_KEY_QUERY) && (
              <input name="auth-name" required placeholder={authType === ToolAuthType.API_KEY_HEADER ? "Header, e.g. X-API-Key" : "Query parameter"} value={authName} onInput={(e) => setAuthName(e.currentTarget.value)} />
            )}
            {authType !== ToolAuthType.UNSPECIFIED && (
              <input name="auth-credential" type="password" required autocomplete="off" placeholder="Secret (stored encrypted)" value={credential} onInput={(e) => setCredential(e.currentTarget.value)} />
            )}
          </div>
        </>
      ) : (
        <>
          <div class="inline-form">
            <input name="mcp-url" class="grow" type="url" required placeholder="https://tools.example.com/mcp" value={mcpUrl} onInput={(e) => setMcpUrl(e.currentTarget.value)} />
            <select name="mcp-transport" value={String(transport)} onChange={(e) => setTransport(Number(e.currentTarget.value) as McpTransport)}>
              <option value={String(McpTransport.STREAMABLE_HTTP)}>Streamable HTTP</option>
              <option value={String(McpTransport.SSE)}>SSE (legacy)</option>
            </select>
          </div>
        </>
      )}
      <div class="field">
        <span class="field-label">Headers sent with every call (values are secret: stored encrypted, shown as ****)</span>
        {headers.map((h, i) => (
          <div class="inline-form" key={i}>
            <input name={`header-name-${i}`} placeholder="Header" value={h.name} onInput={(e) => setHeaders(headers.map((x, j) => (j === i ? { ...x, name: e.currentTarget.value } : x)))} />
            <input name={`header-value-${i}`} class="grow" type="password" autocomplete="off" placeholder="Value" value={h.value} onInput={(e) => setHeaders(headers.map((x, j) => (j === i ? { ...x, value: e.currentTarget.value } : x)))} />
            <button type="button" class="icon-btn" aria-label="Remove header" onClick={() => setHeaders(headers.filter((_, j) => j !== i))}>
              ×
            </button>
          </div>
        ))}
        <div>
          <button type="button" class="btn small" onClick={() => setHeaders([...headers, { name: "", value: "" }])}>
            Add header
          </button>
        </div>
      </div>
      <label class="field tiny">
        <span class="field-label">Timeout per call (ms, empty: the server's default)</span>
        <input name="timeout-ms" type="number" min={0} value={timeoutMs} onInput={(e) => setTimeoutMs(e.currentTarget.value)} />
      </label>
      <ErrorBox error={error} />
      <div class="row-actions">
        <button class="btn primary" type="submit" disabled={busy || !name.trim()}>
          {busy ? "Adding…" : openapi ? "Import" : "Add server"}
        </button>
        <button type="button" class="btn ghost" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}
