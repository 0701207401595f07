// Providers and models: add an upstream (OpenAI-compatible or Anthropic) with its key, add its models, test a
// model with one real request, switch it online or offline, restrict it to the users and groups it is shared with,
// and choose the defaults (chat, flows, titles).
// The key is sent once and shown masked afterwards (Provider.api_key is input-only).
import { ModelAccess, ModelType, ProviderType, type LLMDefaults, type Model, type Provider, type TestModelResponse } from "@typecase/client/gen/typecase/v1/llm_pb.js";
import { useState } from "preact/hooks";
import { tc } from "../api";
import { ShareDialog } from "../components/share-dialog";
import { Badge, Empty, ErrorBox, Loading, durationMs, fmtMs, useAction, useAsync } from "../components/ui";

type ProviderInit = Pick<Provider, "name" | "type" | "baseUrl" | "apiKey" | "enabled">;
type ModelInit = Pick<Model, "providerId" | "name" | "upstreamName" | "type" | "online">;

const PROVIDER_TYPES: { value: ProviderType; label: string }[] = [
  { value: ProviderType.OPENAI_COMPATIBLE, label: "OpenAI-compatible" },
  { value: ProviderType.ANTHROPIC, label: "Anthropic" },
];
const TYPE_LABEL: Record<number, string> = {
  [ProviderType.OPENAI_COMPATIBLE]: "OpenAI-compatible",
  [ProviderType.ANTHROPIC]: "Anthropic",
  [ProviderType.LOCAL]: "built-in local",
};
const MODEL_TYPES: { value: ModelType; label: string }[] = [
  { value: ModelType.LLM, label: "LLM" },
  { value: ModelType.EMBEDDING, label: "embedding" },
  { value: ModelType.RERANK, label: "rerank" },
];
const DEFAULTS: { field: keyof LLMDefaults & string; label: string; type: ModelType }[] = [
  { field: "chatModelId", label: "Chat", type: ModelType.LLM },
  { field: "flowModelId", label: "Flows", type: ModelType.LLM },
  { field: "titleModelId", label: "Chat titles", type: ModelType.LLM },
  { field: "knowledgeEmbeddingModelId", label: "Knowledge embeddings", type: ModelType.EMBEDDING },
  { field: "rerankModelId", label: "Rerank", type: ModelType.RERANK },
];
const SNAKE: Record<string, string> = {
  chatModelId: "chat_model_id",
  flowModelId: "flow_model_id",
  titleModelId: "title_model_id",
  knowledgeEmbeddingModelId: "knowledge_embedding_model_id",
  rerankModelId: "rerank_model_id",
};

export function ModelsView() {
  const providers = useAsync(async () => (await tc.llm.listProviders({ pageSize: 200 })).providers, []);
  const models = useAsync(async () => (await tc.llm.listModels({ pageSize: 500 })).models, []);
  const defaults = useAsync(async () => (await tc.llm.getDefaults({})).defaults, []);
  const { error, act } = useAction({ showBusy: false });

  const providerName = (id: string) => providers.data?.find((p) => p.id === id)?.name ?? id;

  return (
    <div class="main-pane scroll admin">
      <div class="pane-head">
        <div>
          <h2>Models</h2>
          <span class="muted">Upstream providers, their models, and which model each feature uses by default.</span>
        </div>
      </div>
      <ErrorBox error={error} />

      <h3>Providers</h3>
      <ErrorBox error={providers.error} onRetry={providers.reload} />
      {providers.loading && !providers.data && <Loading />}
      {providers.data && (
        <table class="table" data-testid="providers">
          <thead>
            <tr>
              <th>Name</th>
              <th>Type</th>
              <th>Base URL</th>
              <th>Key</th>
              <th>Models</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {providers.data.map((p) => (
              <ProviderRow key={p.id} provider={p} onDelete={() => act(async () => (await tc.llm.deleteProvider({ providerId: p.id }), await providers.reload()))} />
            ))}
          </tbody>
        </table>
      )}
      <NewProvider onCreate={(p) => act(async () => (await tc.llm.createProvider({ provider: p }), await providers.reload()))} />

      <h3>Models</h3>
      <ErrorBox error={models.error} onRetry={models.reload} />
      {models.data && models.data.length === 0 && <Empty title="No models">Add a provider, then its models.</Empty>}
      {models.data && models.data.length > 0 && (
        <table class="table" data-testid="models">
          <thead>
            <tr>
              <th>Name</th>
              <th>Provider</th>
              <th>Type</th>
              <th>Online</th>
              <th>Access</th>
              <th>Test</th>
            </tr>
          </thead>
          <tbody>
            {models.data.map((m) => (
              <ModelRow
                key={m.id}
                model={m}
                provider={providerName(m.providerId)}
                onOnline={(online) => act(async () => (await tc.llm.updateModel({ model: { id: m.id, online }, updateMask: { paths: ["online"] } }), await models.reload()))}
                onRestrict={(restricted) =>
                  act(async () => (await tc.llm.updateModel({ model: { id: m.id, access: restricted ? ModelAccess.RESTRICTED : ModelAccess.EVERYONE }, updateMask: { paths: ["access"] } }), await models.reload()))
                }
              />
            ))}
          </tbody>
        </table>
      )}
      {providers.data && providers.data.length > 0 && (
        <NewModel providers={providers.data} onCreate={(m) => act(async () => (await tc.llm.createModel({ model: m }), await Promise.all([models.reload(), providers.reload()])))} />
      )}

      <h3>Defaults</h3>
      <ErrorBox error={defaults.error} onRetry={defaults.reload} />
      {defaults.data && models.data && (
        <div class="defaults" data-testid="defaults">
          {DEFAULTS.map((d) => (
            <label key={d.field}>
              {d.label}
              <select
                name={`default-${SNAKE[d.field]}`}
                value={String(defaults.data![d.field] ?? "")}
                onChange={(e) => {
                  const value = e.currentTarget.value;
                  void act(async () => {
                    const res = await tc.llm.updateDefaults({ defaults: { [d.field]: value }, updateMask: { paths: [SNAKE[d.field]!] } });
                    if (res.defaults) defaults.setData(res.defaults);
                  });
                }}
              >
                <option value="">(built-in choice)</option>
                {models.data!.filter((m) => m.type === d.type).map((m) => (
                  <option key={m.id} value={m.id}>
                    {m.name}
                  </option>
                ))}
              </select>
            </label>
          ))}
        </div>
      )}
    </div>
  );
}

function ProviderRow({ provider: p, onDelete }: { provider: Provider; onDelete: () => void }) {
  const [confirm, setConfirm] = useState(false);
  return (
    <tr>
      <td>
        <b>{p.name}</b>
      </td>
      <td>{TYPE_LABEL[p.type] ?? "?"}</td>
      <td class="mono faint">{p.baseUrl || "—"}</td>
      <td class="mono faint">{p.apiKeyMasked || "—"}</td>
      <td>{p.modelCount}</td>
      <td class="actions">
        {p.type !== ProviderType.LOCAL &&
          (confirm ? (
            <>
              <button class="btn small danger" onClick={onDelete}>
                Delete
              </button>
              <button class="btn small ghost" onClick={() => setConfirm(false)}>
                Keep
              </button>
            </>
          ) : (
            <button class="btn small ghost" onClick={() => setConfirm(true)}>
              Delete…
            </button>
          ))}
      </td>
    </tr>
  );
}

function ModelRow({ model: m, provider, onOnline, onRestrict }: { model: Model; provider: string; onOnline: (online: boolean) => void; onRestrict: (restricted: boolean) => void }) {
  const [sharing, setSharing] = useState(false);
  const restricted = m.access === ModelAccess.RESTRICTED;
  const [test, setTest] = useState<TestModelResponse | null>(null);
  const testing = useAction();
  const runTest = () => testing.act(async () => (setTest(null), setTest(await tc.llm.testModel({ modelId: m.id }))));
  const type = MODEL_TYPES.find((t) => t.value === m.type)?.label ?? "?";
  return (
    <tr data-testid={`model-${m.name}`}>
      <td>
        <b>{m.name}</b>
        {m.upstreamName && m.upstreamName !== m.name && <span class="faint"> ({m.upstreamName})</span>}
      </td>
      <td>{provider}</td>
      <td>{type}</td>
      <td>
        <label class="check">
          <input type="checkbox" name={`online-${m.name}`} checked={m.online} onChange={(e) => onOnline(e.currentTarget.checked)} />
          {m.online ? "online" : "offline"}
        </label>
      </td>
      <td>
        {/* Restricted: only admins and the users and groups it is shared with see and use it. */}
        <label class="check">
          <input type="checkbox" name={`restricted-${m.name}`} checked={restricted} onChange={(e) => onRestrict(e.currentTarget.checked)} />
          {restricted ? "restricted" : "everyone"}
        </label>{" "}
        {restricted && (
          <button class="btn small" onClick={() => setSharing(true)}>
            Share
          </button>
        )}
        {sharing && <ShareDialog resourceType="model" resourceId={m.id} title={m.name} useOnly onClose={() => setSharing(false)} />}
      </td>
      <td class="test-cell">
        <button class="btn small" onClick={runTest} disabled={testing.busy}>
          {testing.busy ? "Testing…" : "Test"}
        </button>{" "}
        {test && (
          <span data-testid="test-result">
            {test.ok ? (
              <Badge tone="ok">ok in {fmtMs(durationMs(test.latency))}</Badge>
            ) : (
              <Badge tone="bad">failed: {test.error?.message || "error"}</Badge>
            )}{" "}
            <span class="faint">{test.output}</span>
          </span>
        )}
        {testing.error && <Badge tone="bad">{testing.error}</Badge>}
      </td>
    </tr>
  );
}

function NewProvider({ onCreate }: { onCreate: (p: ProviderInit) => Promise<boolean> }) {
  const [name, setName] = useState("");
  const [type, setType] = useState<ProviderType>(ProviderType.OPENAI_COMPATIBLE);
  const [baseUrl, setBaseUrl] = useState("");
  const [apiKey, setApiKey] = useState("");
  const [busy, setBusy] = useState(false);
  return (
    <form
      class="inline-form card"
      data-testid="new-provider"
      onSubmit={async (e) => {
        e.preventDefault();
        setBusy(true);
        if (await onCreate({ name: name.trim(), type, baseUrl: baseUrl.trim(), apiKey, enabled: true })) {
          setName("");
          setBaseUrl("");
          setApiKey("");
        }
        setBusy(false);
      }}
    >
      <input name="provider-name" placeholder="Name" required value={name} onInput={(e) => setName(e.currentTarget.value)} />
      <select name="provider-type" value={String(type)} onChange={(e) => setType(Number(e.currentTarget.value) as ProviderType)}>
        {PROVIDER_TYPES.map((t) => (
          <option key={t.value} value={String(t.value)}>
            {t.label}
          </option>
        ))}
      </select>
      <input name="provider-base-url" class="grow" placeholder="Base URL, e.g. https://api.openai.com/v1" value={baseUrl} onInput={(e) => setBaseUrl(e.currentTarget.value)} />
      <input name="provider-api-key" type="password" placeholder="API key" autoComplete="off" value={apiKey} onInput={(e) => setApiKey(e.currentTarget.value)} />
      <button class="btn primary" type="submit" disabled={busy || !name.trim()}>
        Add provider
      </button>
    </form>
  );
}

function NewModel({ providers, onCreate }: { providers: Provider[]; onCreate: (m: ModelInit) => Promise<boolean> }) {
  const usable = providers.filter((p) => p.type !== ProviderType.LOCAL);
  const [providerId, setProviderId] = useState(usable[0]?.id ?? "");
  const [name, setName] = useState("");
  const [upstream, setUpstream] = useState("");
  const [type, setType] = useState<ModelType>(ModelType.LLM);
  const [busy, setBusy] = useState(false);
  if (usable.length === 0) return <p class="hint">Add a provider above to add its models.</p>;
  const chosen = usable.some((p) => p.id === providerId) ? providerId : usable[0]!.id;
  return (
    <form
      class="inline-form card"
      data-testid="new-model"
      onSubmit={async (e) => {
        e.preventDefault();
        setBusy(true);
        if (await onCreate({ providerId: chosen, name: name.trim(), upstreamName: upstream.trim() || name.trim(), type, online: true })) {
          setName("");
          setUpstream("");
        }
        setBusy(false);
      }}
    >
      <select name="model-provider" value={chosen} onChange={(e) => setProviderId(e.currentTarget.value)}>
        {usable.map((p) => (
          <option key={p.id} value={p.id}>
            {p.name}
          </option>
        ))}
      </select>
      <input name="model-name" placeholder="Name shown here" required value={name} onInput={(e) => setName(e.currentTarget.value)} />
      <input name="model-upstream" placeholder="Upstream model name (default: the same)" value={upstream} onInput={(e) => setUpstream(e.currentTarget.value)} />
      <select name="model-type" value={String(type)} onChange={(e) => setType(Number(e.currentTarget.value) as ModelType)}>
        {MODEL_TYPES.map((t) => (
          <option key={t.value} value={String(t.value)}>
            {t.label}
          </option>
        ))}
      </select>
      <button class="btn primary" type="submit" disabled={busy || !name.trim()}>
        Add model
      </button>
    </form>
  );
}
