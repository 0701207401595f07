// The assistant builder's form: the model, the instructions, the tools (picked from the catalogue, by category),
// the knowledge bases and how they are used, the opening message and suggested questions, and the agent's
// limits. Saving sends every field it edits (an explicit update mask), so clearing a field clears it.
import { KnowledgeMode, type Assistant } from "@typecase/client/gen/typecase/v1/assistant_pb.js";
import { ModelType, ToolChoiceMode } from "@typecase/client/gen/typecase/v1/llm_pb.js";
import { useState } from "preact/hooks";
import { tc } from "../api";
import { Badge, ErrorBox, Spinner, plural, useAction, useAsync } from "./ui";

export type Draft = {
  name: string;
  description: string;
  modelId: string;
  instructions: string;
  toolIds: string[];
  kbIds: string[];
  knowledgeMode: KnowledgeMode;
  openingMessage: string;
  suggestedQuestions: string;
  maxSteps: string;
  toolChoice: ToolChoiceMode;
  variables: { name: string; description: string; defaultValue: string }[];
};

/** The update mask of everything the form edits (proto field names). */
const PATHS = ["name", "description", "model_id", "instructions", "tool_ids", "kb_ids", "knowledge_mode", "opening_message", "suggested_questions", "max_steps", "tool_choice", "variables"];

export function draftOf(a?: Assistant): Draft {
  return {
    name: a?.name ?? "",
    description: a?.description ?? "",
    modelId: a?.modelId ?? "",
    instructions: a?.instructions ?? "",
    toolIds: a?.toolIds ?? [],
    kbIds: a?.kbIds ?? [],
    knowledgeMode: a?.knowledgeMode || KnowledgeMode.TOOL,
    openingMessage: a?.openingMessage ?? "",
    suggestedQuestions: (a?.suggestedQuestions ?? []).join("\n"),
    maxSteps: a?.maxSteps ? String(a.maxSteps) : "",
    toolChoice: a?.toolChoice || ToolChoiceMode.AUTO,
    variables: (a?.variables ?? []).map((v) => ({ name: v.name, description: v.description, defaultValue: v.defaultValue })),
  };
}

function toAssistant(d: Draft) {
  return {
    name: d.name.trim(),
    description: d.description.trim(),
    modelId: d.modelId,
    instructions: d.instructions,
    toolIds: d.toolIds,
    kbIds: d.kbIds,
    knowledgeMode: d.knowledgeMode,
    openingMessage: d.openingMessage.trim(),
    suggestedQuestions: d.suggestedQuestions.split("\n").map((q) => q.trim()).filter(Boolean),
    maxSteps: Number(d.maxSteps) || 0,
    toolChoice: d.toolChoice,
    variables: d.variables.filter((v) => v.name.trim()).map((v) => ({ ...v, name: v.name.trim() })),
  };
}

export function AssistantForm({ assistant, onSaved }: { assistant?: Assistant; onSaved: (a: Assistant) => void }) {
  const [draft, setDraft] = useState<Draft>(() => draftOf(assistant));
  const { busy, error, act } = useAction();
  const [saved, setSaved] = useState(false);
  const set = <K extends keyof Draft>(key: K, value: Draft[K]) => {
    setSaved(false);
    setDraft((d) => ({ ...d, [key]: value }));
  };
  const models = useAsync(async () => (await tc.llm.listModels({ type: ModelType.LLM, pageSize: 200 })).models, []);
  const kbs = useAsync(async () => (await tc.knowledge.listKnowledgeBases({ pageSize: 200 })).knowledgeBases, []);

  async function save(e: Event) {
    e.preventDefault();
    await act(async () => {
      const res = assistant
        ? await tc.assistants.updateAssistant({ assistant: { id: assistant.id, ...toAssistant(draft) }, updateMask: { paths: PATHS } })
        : await tc.assistants.createAssistant({ assistant: toAssistant(draft) });
      if (res.assistant) {
        setSaved(true);
        onSaved(res.assistant);
      }
    });
  }

  const toggle = (list: string[], id: string, on: boolean) => (on ? [...list.filter((x) => x !== id), id] : list.filter((x) => x !== id));

  return (
    <form class="param-form assistant-form" onSubmit={save} data-testid="assistant-form">
      <label class="field">
        <span class="field-label">Name</span>
        <input name="assistant-name" required maxLength={128} value={draft.name} onInput={(e) => set("name", e.currentTarget.value)} />
      </label>
      <label class="field">
        <span class="field-label">Description</span>
        <input name="assistant-description" value={draft.description} onInput={(e) => set("description", e.currentTarget.value)} />
      </label>
      <label class="field">
        <span class="field-label">Model (needs tool calling when tools are picked)</span>
        <select name="assistant-model" value={draft.modelId} onChange={(e) => set("modelId", e.currentTarget.value)}>
          <option value="">The default chat model</option>
          {models.data?.map((m) => (
            <option key={m.id} value={m.id}>
              {m.name}
              {m.online ? "" : " (offline)"}
            </option>
          ))}
        </select>
      </label>
      <label class="field">
        <span class="field-label">Instructions ({"{{current_date}}"}, {"{{current_time}}"}, {"{{assistant_name}}"} are filled in)</span>
        <textarea name="assistant-instructions" rows={6} value={draft.instructions} onInput={(e) => set("instructions", e.currentTarget.value)} />
      </label>
      <Variables variables={draft.variables} onChange={(v) => set("variables", v)} />
      <ToolPicker selected={draft.toolIds} onToggle={(id, on) => set("toolIds", toggle(draft.toolIds, id, on))} />
      <div class="field">
        <span class="field-label">Knowledge {draft.kbIds.length > 0 && `· ${plural(draft.kbIds.length, "base")}`}</span>
        {kbs.loading && !kbs.data && <Spinner label="Loading knowledge bases…" />}
        {kbs.data?.length === 0 && <span class="faint">No knowledge bases yet.</span>}
        <div class="picker" data-testid="kb-picker">
          {kbs.data?.map((kb) => (
            <label key={kb.id} class="check">
              <input type="checkbox" name={`kb-${kb.name}`} checked={draft.kbIds.includes(kb.id)} onChange={(e) => set("kbIds", toggle(draft.kbIds, kb.id, e.currentTarget.checked))} />
              {kb.name}
            </label>
          ))}
        </div>
        {draft.kbIds.length > 0 && (
          <select name="knowledge-mode" value={String(draft.knowledgeMode)} onChange={(e) => set("knowledgeMode", Number(e.currentTarget.value) as KnowledgeMode)}>
            <option value={String(KnowledgeMode.TOOL)}>Search when the model decides to (a tool)</option>
            <option value={String(KnowledgeMode.BEFORE_FIRST_STEP)}>Search every question first (passages as context)</option>
          </select>
        )}
      </div>
      <label class="field">
        <span class="field-label">Opening message (the first message of a new chat)</span>
        <textarea name="assistant-opening" rows={2} value={draft.openingMessage} onInput={(e) => set("openingMessage", e.currentTarget.value)} />
      </label>
      <label class="field">
        <span class="field-label">Suggested questions (one a line, at most 10)</span>
        <textarea name="assistant-suggestions" rows={3} value={draft.suggestedQuestions} onInput={(e) => set("suggestedQuestions", e.currentTarget.value)} />
      </label>
      <div class="inline-form">
        <label class="tiny">
          Max steps
          <input name="assistant-max-steps" type="number" min={1} max={50} placeholder="8" value={draft.maxSteps} onInput={(e) => set("maxSteps", e.currentTarget.value)} />
        </label>
        <label class="tiny">
          First step
          <select name="assistant-tool-choice" value={String(draft.toolChoice)} onChange={(e) => set("toolChoice", Number(e.currentTarget.value) as ToolChoiceMode)}>
            <option value={String(ToolChoiceMode.AUTO)}>may call tools</option>
            <option value={String(ToolChoiceMode.REQUIRED)}>must call a tool</option>
            <option value={String(ToolChoiceMode.NONE)}>must not call tools</option>
          </select>
        </label>
      </div>
      <ErrorBox error={error} />
      <div class="row-actions">
        <button class="btn primary" type="submit" disabled={busy || !draft.name.trim()}>
          {busy ? "Saving…" : assistant ? "Save" : "Create assistant"}
        </button>
        {saved && <Badge tone="ok">saved</Badge>}
      </div>
    </form>
  );
}

/** Tools from the catalogue, filterable, grouped by category; picked ones first. */
function ToolPicker({ selected, onToggle }: { selected: string[]; onToggle: (id: string, on: boolean) => void }) {
  const tools = useAsync(async () => (await tc.tools.listTools({ pageSize: 1000 })).tools, []);
  const [keyword, setKeyword] = useState("");
  const k = keyword.trim().toLowerCase();
  const shown = (tools.data ?? []).filter((t) => selected.includes(t.id) || !k || t.name.toLowerCase().includes(k) || t.description.toLowerCase().includes(k) || t.category.toLowerCase().includes(k));
  const categories = [...new Set(shown.map((t) => t.category))].sort();
  const missing = selected.filter((id) => tools.data && !tools.data.some((t) => t.id === id));
  return (
    <div class="field">
      <span class="field-label">Tools {selected.length > 0 && `· ${selected.length} picked`}</span>
      <input name="tool-filter" placeholder="Filter tools" value={keyword} onInput={(e) => setKeyword(e.currentTarget.value)} />
      <ErrorBox error={tools.error} onRetry={tools.reload} />
      {tools.loading && !tools.data && <Spinner label="Loading tools…" />}
      <div class="picker tool-picker" data-testid="tool-picker">
        {categories.map((c) => (
          <fieldset key={c}>
            <legend>{c}</legend>
            {shown
              .filter((t) => t.category === c)
              .map((t) => (
                <label key={t.id} class="check" title={t.description}>
                  <input type="checkbox" name={`tool-${t.name}`} checked={selected.includes(t.id)} onChange={(e) => onToggle(t.id, e.currentTarget.checked)} />
                  <span class="mono">{t.name}</span>
                  <span class="faint ellipsis">{t.providerName}</span>
                </label>
              ))}
          </fieldset>
        ))}
        {missing.map((id) => (
          <label key={id} class="check">
            <input type="checkbox" checked onChange={() => onToggle(id, false)} />
            <span class="mono">{id}</span> <Badge tone="bad">not found</Badge>
          </label>
        ))}
      </div>
    </div>
  );
}

/** The instructions' own {{variables}}: a session gives their values, else the defaults apply. */
function Variables({ variables, onChange }: { variables: Draft["variables"]; onChange: (v: Draft["variables"]) => void }) {
  const patch = (i: number, p: Partial<Draft["variables"][number]>) => onChange(variables.map((v, j) => (j === i ? { ...v, ...p } : v)));
  return (
    <div class="field" data-testid="assistant-variables">
      <span class="field-label">Variables of the instructions ({"{{name}}"}; a chat may set them, else the default applies)</span>
      {variables.map((v, i) => (
        <div class="inline-form" key={i}>
          <input name={`variable-name-${i}`} placeholder="name" pattern="[A-Za-z][A-Za-z0-9_]*" value={v.name} onInput={(e) => patch(i, { name: e.currentTarget.value })} />
          <input name={`variable-description-${i}`} class="grow" placeholder="what it is" value={v.description} onInput={(e) => patch(i, { description: e.currentTarget.value })} />
          <input name={`variable-default-${i}`} placeholder="default" value={v.defaultValue} onInput={(e) => patch(i, { defaultValue: e.currentTarget.value })} />
          <button type="button" class="icon-btn" aria-label={`Remove variable ${v.name}`} onClick={() => onChange(variables.filter((_, j) => j !== i))}>
            ×
          </button>
        </div>
      ))}
      <div>
        <button type="button" class="btn small" onClick={() => onChange([...variables, { name: "", description: "", defaultValue: "" }])}>
          Add variable
        </button>
      </div>
    </div>
  );
}
