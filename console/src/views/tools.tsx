// Tools: the catalogue assistants and flow agents call. Providers on the left (the seeded built-ins, imported
// OpenAPI services, MCP servers); on the right a provider's tools by category, and "try a tool" with a form
// generated from its JSON Schema, showing the result or the error (its reason and message) as the server gave it.
import { ToolProviderKind, type CallToolResponse, type CatalogTool, type ToolProvider } from "@typecase/client/gen/typecase/v1/tools_pb.js";
import { Fragment } from "preact";
import { useState } from "preact/hooks";
import { TypecaseError, describe, handleError, tc } from "../api";
import { SchemaForm } from "../components/schema-form";
import { ShareDialog } from "../components/share-dialog";
import { NewToolProvider } from "../components/tool-provider-form";
import { Badge, Empty, ErrorBox, Json, Loading, fmtMs, fmtTime, plural, useAction, useAsync, type Tone } from "../components/ui";
import type { JsonObject } from "../json";
import { linkClick, navigate } from "../router";

const KIND: Record<number, { label: string; tone: Tone }> = {
  [ToolProviderKind.UNSPECIFIED]: { label: "?", tone: "neutral" },
  [ToolProviderKind.BUILTIN]: { label: "built-in", tone: "info" },
  [ToolProviderKind.OPENAPI]: { label: "OpenAPI", tone: "ok" },
  [ToolProviderKind.MCP]: { label: "MCP", tone: "warn" },
};

export function ToolsView({ providerId }: { providerId?: string }) {
  const providers = useAsync(async () => (await tc.tools.listToolProviders({ pageSize: 500 })).providers, []);
  const current = providers.data?.find((p) => p.id === providerId);

  return (
    <div class="split">
      <aside class="sidebar">
        <div class="sidebar-head">
          <a class="btn primary" href="/tools/new" onClick={linkClick}>
            Add tools…
          </a>
        </div>
        <ErrorBox error={providers.error} onRetry={providers.reload} />
        {providers.loading && !providers.data && <Loading label="Loading providers…" />}
        <ul class="list" data-testid="tool-providers">
          <li class={!providerId ? "active" : ""}>
            <a class="list-link" href="/tools" onClick={linkClick}>
              <span class="list-title">All tools</span>
              <span class="list-sub">every tool you may call, by category</span>
            </a>
          </li>
          {providers.data?.map((p) => (
            <li key={p.id} class={p.id === providerId ? "active" : ""} data-provider-name={p.name}>
              <a class="list-link" href={`/tools/${p.id}`} onClick={linkClick}>
                <span class="list-title">
                  {p.name} {p.lastError && <Badge tone="bad">error</Badge>}
                </span>
                <span class="list-sub">
                  {KIND[p.kind]?.label} · {plural(p.toolCount, "tool")}
                  {p.shared ? " · shared" : ""}
                </span>
              </a>
            </li>
          ))}
        </ul>
      </aside>
      <section class="main-pane scroll">
        {providerId === "new" && (
          <div class="detail">
            <div class="pane-head">
              <h2>Add tools</h2>
            </div>
            <NewToolProvider
              onCancel={() => navigate("/tools")}
              onCreated={async (p) => {
                await providers.reload();
                navigate(`/tools/${p.id}`);
              }}
            />
          </div>
        )}
        {!providerId && (
          <div class="detail">
            <div class="pane-head">
              <div>
                <h2>Tools</h2>
                <span class="muted">What assistants and flow agents may call. Try any of them here.</span>
              </div>
            </div>
            <ToolList providerId="" />
          </div>
        )}
        {providerId && providerId !== "new" && providers.data && !current && <Empty title="Provider not found">It may have been deleted.</Empty>}
        {current && <ProviderDetail key={current.id} provider={current} onChanged={providers.reload} />}
      </section>
    </div>
  );
}

function ProviderDetail({ provider: p, onChanged }: { provider: ToolProvider; onChanged: () => Promise<void> }) {
  const { busy, error, act } = useAction();
  const [confirm, setConfirm] = useState(false);
  const [generation, setGeneration] = useState(0);
  const [sharing, setSharing] = useState(false);

  const source = p.kind === ToolProviderKind.OPENAPI ? p.openapi?.documentUrl || p.openapi?.baseUrl : p.kind === ToolProviderKind.MCP ? p.mcp?.url || p.mcp?.command : "";
  const headerNames = Object.keys(p.headers);
  return (
    <div class="detail" data-testid="tool-provider">
      <div class="pane-head">
        <div>
          <h2>
            {p.name} <Badge tone={KIND[p.kind]?.tone}>{KIND[p.kind]?.label}</Badge>
          </h2>
          <span class="muted">
            {p.description || "No description"}
            {source && (
              <>
                {" · "}
                <span class="mono">{source}</span>
              </>
            )}
          </span>
          <div class="faint small">
            {plural(p.toolCount, "tool")}
            {p.refreshTime && ` · loaded ${fmtTime(p.refreshTime)}`}
            {headerNames.length > 0 && ` · headers ${headerNames.map((h) => `${h}: ${p.headers[h]}`).join(", ")}`}
            {p.openapi?.auth?.credentialSet && ` · credential stored${p.openapi.auth.name ? ` (${p.openapi.auth.name})` : ""}`}
          </div>
        </div>
        <span class="row-actions">
          {p.kind !== ToolProviderKind.BUILTIN && (
            <button
              class="btn small"
              disabled={busy}
              onClick={() =>
                act(async () => {
                  await tc.tools.refreshToolProvider({ providerId: p.id });
                  await onChanged();
                  setGeneration((g) => g + 1);
                })
              }
            >
              Refresh tools
            </button>
          )}
          {p.kind !== ToolProviderKind.BUILTIN && (
            <button class="btn small" onClick={() => setSharing((v) => !v)}>
              Share
            </button>
          )}
          {p.kind !== ToolProviderKind.BUILTIN &&
            (confirm ? (
              <>
                <span class="muted">Delete it and its tools?</span>
                <button
                  class="btn small danger"
                  onClick={() =>
                    act(async () => {
                      await tc.tools.deleteToolProvider({ providerId: p.id });
                      await onChanged();
                      navigate("/tools");
                    })
                  }
                >
                  Delete
                </button>
                <button class="btn small ghost" onClick={() => setConfirm(false)}>
                  Keep
                </button>
              </>
            ) : (
              <button class="btn small ghost" onClick={() => setConfirm(true)}>
                Delete provider
              </button>
            ))}
        </span>
      </div>
      {p.lastError && (
        <div class="error-box" role="alert" data-testid="provider-error">
          <span>Loading its tools failed: {p.lastError}</span>
        </div>
      )}
      <ErrorBox error={error} />
      {sharing && <ShareDialog resourceType="tool_provider" resourceId={p.id} title={p.name} onClose={() => setSharing(false)} />}
      <ToolList key={generation} providerId={p.id} />
    </div>
  );
}

function ToolList({ providerId }: { providerId: string }) {
  const [keyword, setKeyword] = useState("");
  const [category, setCategory] = useState("");
  const [trying, setTrying] = useState<string | null>(null);
  const tools = useAsync(async () => (await tc.tools.listTools({ providerId, pageSize: 1000 })).tools, [providerId]);
  const all = tools.data ?? [];
  const categories = [...new Set(all.map((t) => t.category))].sort();
  const k = keyword.trim().toLowerCase();
  const shown = all.filter((t) => (!category || t.category === category) && (!k || t.name.toLowerCase().includes(k) || t.description.toLowerCase().includes(k)));

  return (
    <>
      <div class="inline-form">
        <input name="tool-keyword" class="grow" placeholder="Filter by name or description" value={keyword} onInput={(e) => setKeyword(e.currentTarget.value)} />
        <select name="tool-category" value={category} onChange={(e) => setCategory(e.currentTarget.value)}>
          <option value="">All categories</option>
          {categories.map((c) => (
            <option key={c} value={c}>
              {c}
            </option>
          ))}
        </select>
      </div>
      <ErrorBox error={tools.error} onRetry={tools.reload} />
      {tools.loading && !tools.data && <Loading label="Loading tools…" />}
      {tools.data && shown.length === 0 && <Empty title="No tools">{all.length ? "None matches the filter." : "This provider has no tools (yet)."}</Empty>}
      {shown.length > 0 && (
        <table class="table" data-testid="tool-table">
          <thead>
            <tr>
              <th>Tool</th>
              <th>Category</th>
              {!providerId && <th>Provider</th>}
              <th>Description</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {shown.map((t) => (
              <Fragment key={t.id}>
                <tr data-tool-name={t.name}>
                  <td class="mono">{t.name}</td>
                  <td>
                    <Badge>{t.category}</Badge>
                  </td>
                  {!providerId && <td>{t.providerName}</td>}
                  <td class="faint">{t.description}</td>
                  <td class="actions">
                    <button class="btn small" aria-expanded={trying === t.id} onClick={() => setTrying(trying === t.id ? null : t.id)}>
                      {trying === t.id ? "Close" : "Try"}
                    </button>
                  </td>
                </tr>
                {trying === t.id && (
                  <tr class="try-row">
                    <td colSpan={providerId ? 4 : 5}>
                      <TryTool tool={t} />
                    </td>
                  </tr>
                )}
              </Fragment>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}

type Outcome = { ok: CallToolResponse } | { error: { code: string; reason: string; message: string } };

/** Calls a tool with the generated form's arguments and shows what came back. */
function TryTool({ tool }: { tool: CatalogTool }) {
  const [busy, setBusy] = useState(false);
  const [outcome, setOutcome] = useState<Outcome | null>(null);

  async function call(args: JsonObject) {
    setBusy(true);
    setOutcome(null);
    try {
      setOutcome({ ok: await tc.tools.callTool({ toolId: tool.id, arguments: args }) });
    } catch (e) {
      const message = handleError(e);
      setOutcome({ error: e instanceof TypecaseError ? { code: e.code, reason: e.reason ?? "", message: e.message || describe(e) } : { code: "", reason: "", message } });
    } finally {
      setBusy(false);
    }
  }

  return (
    <div class="try-tool" data-testid="try-tool">
      <SchemaForm parameters={tool.parameters as JsonObject | undefined} busy={busy} onSubmit={call} />
      {outcome && "ok" in outcome && (
        <div class="tool-result" data-testid="tool-result" data-outcome="ok">
          <div class="faint small">
            <Badge tone="ok">ok</Badge> in {fmtMs(Number(outcome.ok.durationMs))}
            {outcome.ok.truncated && " · cut at the server's size cap"}
          </div>
          <pre class="json" data-testid="tool-result-text">
            {outcome.ok.text}
          </pre>
          {outcome.ok.structured !== undefined && outcome.ok.structured !== null && (
            <details>
              <summary class="faint">Structured result</summary>
              <Json value={outcome.ok.structured} />
            </details>
          )}
        </div>
      )}
      {outcome && "error" in outcome && (
        <div class="error-box" role="alert" data-testid="tool-error" data-reason={outcome.error.reason}>
          <span>
            {outcome.error.reason && <Badge tone="bad">{outcome.error.reason}</Badge>} {outcome.error.message}
            {outcome.error.code && <span class="faint"> ({outcome.error.code})</span>}
          </span>
        </div>
      )}
    </div>
  );
}
