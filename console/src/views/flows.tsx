// Flows: list them, open one to see its graph, publish it, and run it in a panel that shows node events as
// they stream, renders the form when the run waits for human input, and resumes it with the answer.
import {
  FlowRunAs,
  FlowStatus,
  NodeRunStatus,
  NodeType,
  RunStatus,
  type Flow,
  type InputRequired,
  type NodeRun,
  type Run,
  type RunEvent,
} from "@typecase/client/gen/typecase/v1/flow_pb.js";
import { useEffect, useReducer, useRef, useState } from "preact/hooks";
import { handleError, isAbort, tc } from "../api";
import { InputForm, type InputValues } from "../components/inputform";
import { PublishDialog } from "../components/publish-dialog";
import { ShareDialog } from "../components/share-dialog";
import { Badge, Empty, ErrorBox, Json, Loading, Spinner, durationMs, fmtMs, fmtTime, useAction, useAsync, type Tone } from "../components/ui";
import type { JsonObject, JsonValue } from "../json";
import { linkClick, navigate } from "../router";
import { FlowVersions } from "./flow-versions";

// The editor (and @xyflow/react with it) is a chunk of its own, fetched when a flow is opened: the chat and the
// other views load without it.
type EditorModule = typeof import("./flow-editor/editor");
let editorModule: Promise<EditorModule> | null = null;
function useEditorModule(): { mod: EditorModule | null; error: string | null } {
  const [state, setState] = useState<{ mod: EditorModule | null; error: string | null }>({ mod: null, error: null });
  useEffect(() => {
    let live = true;
    (editorModule ??= import("./flow-editor/editor")).then(
      (mod) => live && setState({ mod, error: null }),
      (e) => {
        editorModule = null;
        if (live) setState({ mod: null, error: `Could not load the flow editor: ${(e as Error).message}` });
      },
    );
    return () => {
      live = false;
    };
  }, []);
  return state;
}

const NODE_LABEL: Record<number, string> = {
  [NodeType.START]: "start",
  [NodeType.INPUT]: "input",
  [NodeType.PROMPT]: "prompt",
  [NodeType.LLM]: "LLM",
  [NodeType.KNOWLEDGE_RETRIEVAL]: "retrieval",
  [NodeType.CONDITION]: "condition",
  [NodeType.HTTP_REQUEST]: "HTTP",
  [NodeType.CODE]: "code",
  [NodeType.OUTPUT]: "output",
  [NodeType.END]: "end",
  [NodeType.AGENT]: "agent",
  [NodeType.TOOL]: "tool",
};

const RUN_STATUS: Record<number, { label: string; tone: Tone }> = {
  [RunStatus.UNSPECIFIED]: { label: "unknown", tone: "neutral" },
  [RunStatus.RUNNING]: { label: "running", tone: "info" },
  [RunStatus.WAITING_INPUT]: { label: "waiting for input", tone: "warn" },
  [RunStatus.FINISHED]: { label: "finished", tone: "ok" },
  [RunStatus.FAILED]: { label: "failed", tone: "bad" },
  [RunStatus.STOPPED]: { label: "stopped", tone: "warn" },
};

const NODE_STATUS: Record<number, { label: string; tone: Tone }> = {
  [NodeRunStatus.RUNNING]: { label: "running", tone: "info" },
  [NodeRunStatus.WAITING_INPUT]: { label: "waiting", tone: "warn" },
  [NodeRunStatus.SUCCEEDED]: { label: "succeeded", tone: "ok" },
  [NodeRunStatus.FAILED]: { label: "failed", tone: "bad" },
  [NodeRunStatus.SKIPPED]: { label: "skipped", tone: "neutral" },
  [NodeRunStatus.STOPPED]: { label: "stopped", tone: "warn" },
};

// A small flow a newcomer can create with one click: it asks a question mid-run (human input).
const EXAMPLE_GRAPH: {
  nodes: { id: string; type: NodeType; name: string; params: JsonObject }[];
  edges: { id: string; source: string; target: string }[];
} = {
  nodes: [
    { id: "start", type: NodeType.START, name: "Start", params: { variables: [{ name: "who", type: "text", default: "Ada", required: true }] } },
    {
      id: "ask",
      type: NodeType.INPUT,
      name: "Ask age",
      params: { mode: "form", prompt: "How old is {{who}}?", fields: [{ name: "age", type: "number", label: "Age", required: true }] },
    },
    { id: "say", type: NodeType.PROMPT, name: "Sentence", params: { template: "{{who}} is {{ask.age}} years old." } },
    { id: "end", type: NodeType.END, name: "End", params: { outputs: { text: "{{say.text}}" } } },
  ],
  edges: [
    { id: "e1", source: "start", target: "ask" },
    { id: "e2", source: "ask", target: "say" },
    { id: "e3", source: "say", target: "end" },
  ],
};

export function FlowsView({ flowId }: { flowId?: string }) {
  const flows = useAsync(async () => (await tc.flow.listFlows({ pageSize: 200 })).flows, []);
  const { busy: creating, error, act } = useAction();
  const [newName, setNewName] = useState("");

  const create = (flow: { name: string; description?: string; graph: typeof EXAMPLE_GRAPH }) =>
    act(async () => {
      const res = await tc.flow.createFlow({ flow });
      await flows.reload();
      if (res.flow) navigate(`/flows/${res.flow.id}`);
    });
  async function createBlank(e: Event) {
    e.preventDefault();
    const name = newName.trim();
    if (name && (await create({ name, graph: { nodes: [], edges: [] } }))) setNewName("");
  }
  function createExample() {
    const taken = new Set((flows.data ?? []).map((f) => f.name));
    let name = "Example: ask and answer";
    for (let i = 2; taken.has(name); i++) name = `Example: ask and answer ${i}`;
    void create({ name, description: "Asks for an age mid-run, then writes a sentence.", graph: EXAMPLE_GRAPH });
  }

  return (
    <div class="split">
      <aside class="sidebar">
        <div class="sidebar-head">
          <form class="inline-form" onSubmit={createBlank}>
            <input name="new-flow-name" placeholder="New flow name" value={newName} onInput={(e) => setNewName(e.currentTarget.value)} />
            <button class="btn primary" type="submit" disabled={creating || !newName.trim()}>
              Create
            </button>
          </form>
          <button class="btn" onClick={createExample} disabled={creating}>
            {creating ? "Creating…" : "New example flow"}
          </button>
        </div>
        <ErrorBox error={error} />
        <ErrorBox error={flows.error} onRetry={flows.reload} />
        {flows.loading && !flows.data && <Loading label="Loading flows…" />}
        {flows.data && flows.data.length === 0 && (
          <Empty title="No flows yet">
            Flows are graphs of nodes (LLM calls, retrieval, conditions, forms…). Name a new flow above and draw it,
            or try “New example flow”.
          </Empty>
        )}
        <ul class="list" data-testid="flow-list">
          {flows.data?.map((f) => (
            <li key={f.id} class={f.id === flowId ? "active" : ""}>
              <a class="list-link" href={`/flows/${f.id}`} onClick={linkClick}>
                <span class="list-title">{f.name}</span>
                <span class="list-sub">
                  <Badge tone={f.status === FlowStatus.ONLINE ? "ok" : "neutral"}>{f.status === FlowStatus.ONLINE ? "online" : "draft"}</Badge>{" "}
                  {fmtTime(f.updateTime)}
                </span>
              </a>
            </li>
          ))}
        </ul>
      </aside>
      <section class="main-pane scroll">
        {!flowId && (
          <Empty title="Flows">
            Open a flow to draw it: drag nodes from the palette, connect them, fill in their settings, save a
            version and run it: nodes light up as their events stream in, and when the flow asks for input, a form
            appears here.
          </Empty>
        )}
        {flowId && <FlowDetail key={flowId} flowId={flowId} onChanged={flows.reload} />}
      </section>
    </div>
  );
}

function FlowDetail({ flowId, onChanged }: { flowId: string; onChanged: () => void }) {
  const flow = useAsync(async () => (await tc.flow.getFlow({ flowId })).flow, [flowId]);
  const runs = useAsync(async () => (await tc.flow.listRuns({ flowId, pageSize: 10 })).runs, [flowId]);
  const nodeTypes = useAsync(async () => (await tc.flow.listNodeTypes({})).nodeTypes, []);
  const editor = useEditorModule();
  const [runStatus, setRunStatus] = useState<Map<string, string>>(new Map());
  const [editorKey, setEditorKey] = useState(0);
  const runInputs = useRef<() => JsonObject>(() => ({}));
  const { busy, error, act } = useAction();
  const [openRun, setOpenRun] = useState<string | undefined>();
  const [panel, setPanel] = useState<"share" | "publish" | null>(null);

  const togglePublish = (f: Flow) =>
    act(async () => {
      const res = f.status === FlowStatus.ONLINE ? await tc.flow.unpublishFlow({ flowId }) : await tc.flow.publishFlow({ flowId });
      if (res.flow) flow.setData(res.flow);
      onChanged();
    });

  if (flow.error) return <ErrorBox error={flow.error} onRetry={flow.reload} />;
  const f = flow.data;
  if (!f) return <Loading label="Loading flow…" />;
  const online = f.status === FlowStatus.ONLINE;
  const asOwner = f.runAs === FlowRunAs.OWNER;

  return (
    <div class="detail">
      <div class="pane-head">
        <div>
          <h2>
            {f.name} <Badge tone={online ? "ok" : "neutral"}>{online ? "online" : "draft"}</Badge>{" "}
            <span
              data-testid="run-as"
              title={
                asOwner
                  ? "Knowledge retrieval searches the owner's knowledge bases, whoever runs the flow"
                  : "Knowledge retrieval searches only what the person running the flow may read"
              }
            >
              <Badge tone={asOwner ? "warn" : "neutral"}>{asOwner ? "runs as owner" : "runs as caller"}</Badge>
            </span>
          </h2>
          <span class="muted">{f.description || "No description"}</span>
        </div>
        <button class="btn" onClick={() => togglePublish(f)} disabled={busy} title={online ? "Take it offline" : "Make it available in chat"}>
          {online ? "Unpublish" : "Publish"}
        </button>
        <button class="btn" onClick={() => setPanel((p) => (p === "share" ? null : "share"))}>
          Share
        </button>
        <button class="btn" onClick={() => setPanel((p) => (p === "publish" ? null : "publish"))}>
          Publish as API
        </button>
      </div>
      <ErrorBox error={error} />
      {panel === "share" && <ShareDialog resourceType="flow" resourceId={f.id} title={f.name} onClose={() => setPanel(null)} />}
      {panel === "publish" && <PublishDialog kind="flow" id={f.id} title={f.name} onClose={() => setPanel(null)} />}
      <ErrorBox error={nodeTypes.error} onRetry={nodeTypes.reload} />
      <ErrorBox error={editor.error} />
      {nodeTypes.data && editor.mod ? (
        <editor.mod.FlowEditor
          key={`${f.id}-${editorKey}`}
          flow={f}
          nodeTypes={nodeTypes.data}
          runStatus={runStatus}
          onSaved={() => {
            void flow.reload().then(() => setEditorKey((k) => k + 1));
            onChanged();
          }}
        />
      ) : (
        !nodeTypes.error && !editor.error && <Loading label="Loading the editor…" />
      )}
      <RunPanel
        flow={f}
        inputsRef={runInputs}
        onNodeStatus={(nodeId, status) =>
          setRunStatus((m) => (nodeId === null ? new Map() : new Map(m).set(nodeId, status)))
        }
        openRunId={openRun}
        onRunEnded={() => void runs.reload()}
        onRunStarted={() => void runs.reload()}
      />
      <FlowVersions
        flow={f}
        inputs={() => runInputs.current()}
        onCurrentChanged={() => {
          void flow.reload().then(() => setEditorKey((k) => k + 1));
          onChanged();
        }}
      />
      <h3>Recent runs</h3>
      <ErrorBox error={runs.error} onRetry={runs.reload} />
      {runs.data && runs.data.length === 0 && <p class="hint">No runs yet: start one above.</p>}
      {runs.data && runs.data.length > 0 && (
        <table class="table" data-testid="runs">
          <tbody>
            {runs.data.map((r) => (
              <RunRow key={r.id} run={r} onOpen={() => setOpenRun(r.id)} />
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

function RunRow({ run, onOpen }: { run: Run; onOpen: () => void }) {
  const st = RUN_STATUS[run.status] ?? RUN_STATUS[0];
  return (
    <tr>
      <td class="mono faint">{run.id.slice(-8)}</td>
      <td>
        <Badge tone={st.tone}>{st.label}</Badge>
      </td>
      <td class="faint">{fmtTime(run.createTime)}</td>
      <td class="actions">
        <button class="btn small ghost" onClick={onOpen}>
          Open
        </button>
      </td>
    </tr>
  );
}

// -- the run panel --------------------------------------------------------------------------------------------
type Row = { seq: bigint; icon: string; text: string; tone: Tone; detail?: unknown };
type RunState = {
  runId: string;
  status: RunStatus;
  rows: Row[];
  texts: Map<string, string>; // streamed text by node id
  names: Map<string, string>;
  pending: InputRequired | null;
  outputs?: unknown;
  error?: string;
  lastSeq: bigint;
  stopping?: boolean;
  replayed?: boolean; // opened from the list, and its logged events have all been read
};

type RunStream = AsyncIterable<{ seq: bigint; runId: string; event?: RunEvent }>;

function startVariables(flow: Flow): { name: string; type: string; default?: unknown; required?: boolean }[] {
  const start = flow.graph?.nodes.find((n) => n.type === NodeType.START);
  const vars = (start?.params as { variables?: unknown } | undefined)?.variables;
  return Array.isArray(vars) ? (vars as { name: string; type: string }[]).filter((v) => v && typeof v.name === "string") : [];
}

function RunPanel({
  flow,
  openRunId,
  onRunStarted,
  onRunEnded,
  onNodeStatus,
  inputsRef,
}: {
  flow: Flow;
  inputsRef: { current: () => JsonObject };
  onNodeStatus: (nodeId: string | null, status: string) => void;
  openRunId?: string;
  onRunStarted: () => void;
  onRunEnded: () => void;
}) {
  const variables = startVariables(flow);
  const [inputs, setInputs] = useState<Record<string, string | boolean>>(() =>
    Object.fromEntries(variables.map((v) => [v.name, v.type === "boolean" ? Boolean(v.default) : v.default === undefined ? "" : typeof v.default === "string" ? v.default : JSON.stringify(v.default)])),
  );
  const { error, setError, act } = useAction();
  const run = useRef<RunState | null>(null);
  const stream = useRef<AbortController | null>(null);
  const [, rerender] = useReducer((n: number) => n + 1, 0);
  const [streaming, setStreaming] = useState(false);

  useEffect(() => () => stream.current?.abort(), []);
  useEffect(() => {
    if (openRunId) void replay(openRunId);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [openRunId]);

  function apply(seq: bigint, runId: string, event: RunEvent | undefined): void {
    let r = run.current;
    if (!r || r.runId !== runId) {
      onNodeStatus(null, "");
      r = run.current = { runId, status: RunStatus.RUNNING, rows: [], texts: new Map(), names: new Map(), pending: null, lastSeq: 0n };
    }
    if (seq <= r.lastSeq) return;
    r.lastSeq = seq;
    const kind = event?.kind;
    const name = (n?: NodeRun) => (n ? n.nodeName || r!.names.get(n.nodeId) || n.nodeId : "?");
    switch (kind?.case) {
      case "runStarted":
        r.rows.push({ seq, icon: "●", text: `Run started (version ${kind.value.versionId.slice(-6)})`, tone: "info" });
        break;
      case "nodeStarted":
        r.names.set(kind.value.nodeId, kind.value.nodeName || kind.value.nodeId);
        onNodeStatus(kind.value.nodeId, "running");
        r.rows.push({ seq, icon: "▶", text: `${name(kind.value)} (${NODE_LABEL[kind.value.nodeType] ?? "node"}) started`, tone: "info" });
        break;
      case "token":
        r.texts.set(kind.value.nodeId, (r.texts.get(kind.value.nodeId) ?? "") + kind.value.text);
        break;
      case "nodeFinished": {
        const n = kind.value;
        const st = NODE_STATUS[n.status] ?? { label: "ended", tone: "neutral" as Tone };
        onNodeStatus(n.nodeId, st.label);
        const took = durationMs(n.elapsed) >= 0.5 ? ` in ${fmtMs(durationMs(n.elapsed))}` : "";
        const why = n.error?.message ? `: ${n.error.message}` : "";
        r.rows.push({ seq, icon: n.status === NodeRunStatus.FAILED ? "✗" : "✓", text: `${name(n)} ${st.label}${took}${why}`, tone: st.tone, detail: n.outputs });
        break;
      }
      case "inputRequired":
        r.pending = kind.value;
        r.status = RunStatus.WAITING_INPUT;
        onNodeStatus(kind.value.nodeId, "waiting");
        r.rows.push({ seq, icon: "‖", text: `Waiting for input at ${kind.value.nodeName || kind.value.nodeId}`, tone: "warn" });
        break;
      case "runFinished": {
        const v = kind.value;
        r.status = v.status || RunStatus.FINISHED;
        r.outputs = v.outputs;
        r.pending = null;
        const took = v.elapsed ? ` in ${fmtMs(durationMs(v.elapsed))}` : "";
        r.rows.push({ seq, icon: "■", text: `Run ${r.status === RunStatus.STOPPED ? "stopped" : "finished"}${took}`, tone: r.status === RunStatus.STOPPED ? "warn" : "ok" });
        break;
      }
      case "runFailed":
        r.status = RunStatus.FAILED;
        r.error = kind.value.message || "The run failed.";
        r.pending = null;
        r.rows.push({ seq, icon: "✗", text: `Run failed: ${r.error}`, tone: "bad" });
        break;
    }
    rerender(0);
  }

  async function consume(open: (signal: AbortSignal) => RunStream) {
    stream.current?.abort();
    const ctrl = (stream.current = new AbortController());
    setStreaming(true);
    setError(null);
    try {
      for await (const ev of open(ctrl.signal)) apply(ev.seq, ev.runId, ev.event);
    } catch (e) {
      if (!ctrl.signal.aborted && !isAbort(e)) setError(handleError(e));
    } finally {
      if (stream.current === ctrl) {
        setStreaming(false);
        onRunEnded();
      }
    }
  }

  function parsedInputs(): JsonObject {
    const out: JsonObject = {};
    for (const v of variables) {
      const raw = inputs[v.name];
      if (raw === "" || raw === undefined) continue;
      if (v.type === "number") out[v.name] = Number(raw);
      else if (v.type === "boolean") out[v.name] = Boolean(raw);
      else if (v.type === "list" || v.type === "object") {
        try {
          out[v.name] = JSON.parse(String(raw)) as JsonValue;
        } catch {
          throw new Error(`“${v.name}” must be JSON (${v.type === "list" ? "[…]" : "{…}"})`);
        }
      } else out[v.name] = raw;
    }
    return out;
  }

  inputsRef.current = parsedInputs;

  function start(e: Event) {
    e.preventDefault();
    let values: JsonObject;
    try {
      values = parsedInputs();
    } catch (err) {
      setError((err as Error).message);
      return;
    }
    run.current = null;
    rerender(0);
    onRunStarted();
    void consume((signal) => tc.flow.runFlow({ flowId: flow.id, inputs: values }, { signal }));
  }

  function resume(values: InputValues) {
    const r = run.current;
    if (!r?.pending) return;
    const nodeId = r.pending.nodeId;
    r.pending = null;
    r.status = RunStatus.RUNNING;
    rerender(0);
    void consume((signal) => tc.flow.resumeRun({ runId: r.runId, nodeId, input: values }, { signal }));
  }

  async function stop() {
    const r = run.current;
    if (!r) return;
    r.stopping = true;
    rerender(0);
    await act(async () => {
      const res = await tc.flow.stopRun({ runId: r.runId });
      if (res.run && res.run.status !== RunStatus.RUNNING) {
        r.status = res.run.status;
        r.pending = null;
      }
    });
    r.stopping = false;
    rerender(0);
  }

  /** Shows a past (or running) run: its state, then its logged events replayed and followed. */
  const replay = (runId: string) =>
    act(async () => {
      const got = (await tc.flow.getRun({ runId })).run;
      run.current = { runId, status: got?.status ?? RunStatus.RUNNING, rows: [], texts: new Map(), names: new Map(), pending: null, lastSeq: 0n };
      rerender(0);
      await consume((signal) => tc.flow.streamRunEvents({ runId, afterSeq: 0n }, { signal }));
      if (run.current?.runId !== runId) return;
      if (got && got.status === RunStatus.WAITING_INPUT && !run.current.pending && got.pendingInput) {
        run.current.pending = got.pendingInput;
      }
      run.current.replayed = true;
      rerender(0);
    });

  const r = run.current;
  const active = streaming || r?.status === RunStatus.WAITING_INPUT;
  const st = r ? RUN_STATUS[r.status] ?? RUN_STATUS[0] : null;

  return (
    <div class="run-panel card" data-testid="run-panel" data-replayed={r?.replayed ? "true" : undefined}>
      <div class="run-head">
        <h3>Run</h3>
        {st && (
          <Badge tone={st.tone}>
            <span data-testid="run-status">{st.label}</span>
          </Badge>
        )}
        {r && <span class="mono faint">run {r.runId.slice(-8)}</span>}
      </div>
      <form class="run-inputs" onSubmit={start}>
        {variables.length === 0 && <span class="faint">This flow takes no inputs.</span>}
        {variables.map((v) => (
          <label key={v.name} class={v.type === "boolean" ? "check" : ""}>
            <span>
              {v.name}
              {v.required && <span class="required"> *</span>} <span class="faint">{v.type || "text"}</span>
            </span>
            {v.type === "boolean" ? (
              <input type="checkbox" name={`var-${v.name}`} checked={Boolean(inputs[v.name])} onChange={(e) => setInputs({ ...inputs, [v.name]: e.currentTarget.checked })} />
            ) : (
              <input
                name={`var-${v.name}`}
                inputMode={v.type === "number" ? "decimal" : "text"}
                required={v.required}
                value={String(inputs[v.name] ?? "")}
                onInput={(e) => setInputs({ ...inputs, [v.name]: e.currentTarget.value })}
              />
            )}
          </label>
        ))}
        <div class="run-buttons">
          <button class="btn primary" type="submit" disabled={streaming}>
            {streaming ? "Running…" : "Run"}
          </button>
          {r && active && (
            <button class="btn danger" type="button" onClick={stop} disabled={r.stopping}>
              {r.stopping ? "Stopping…" : "Stop"}
            </button>
          )}
        </div>
      </form>
      <ErrorBox error={error} />
      {!r && !streaming && <p class="hint">Fill in the inputs and press Run: each node's events appear here as the run executes.</p>}
      {r && (
        <ol class="events" data-testid="run-events">
          {r.rows.map((row) => (
            <EventRow key={row.seq.toString()} row={row} />
          ))}
          {streaming && r.status === RunStatus.RUNNING && (
            <li class="event">
              <Spinner label="running…" />
            </li>
          )}
        </ol>
      )}
      {r &&
        [...r.texts.entries()].map(([nodeId, text]) => (
          <div class="node-output" key={nodeId}>
            <div class="faint">{r.names.get(nodeId) ?? nodeId} wrote:</div>
            <div class="answer-text">{text}</div>
          </div>
        ))}
      {r?.pending && !streaming && <InputForm key={`${r.runId}-${r.lastSeq}`} request={r.pending} onSubmit={resume} />}
      {r?.outputs !== undefined && r.outputs !== null && (
        <div data-testid="run-outputs">
          <div class="faint">Outputs</div>
          <Json value={r.outputs} />
        </div>
      )}
    </div>
  );
}

function EventRow({ row }: { row: Row }) {
  const [open, setOpen] = useState(false);
  const detail = row.detail && typeof row.detail === "object" && Object.keys(row.detail).length > 0 ? row.detail : null;
  return (
    <li class={`event ${row.tone}`}>
      <span class="event-icon">{row.icon}</span>
      <span class="event-text">{row.text}</span>
      {detail && (
        <button class="link-btn" onClick={() => setOpen(!open)} aria-expanded={open}>
          {open ? "hide outputs" : "outputs"}
        </button>
      )}
      <span class="faint mono">#{row.seq.toString()}</span>
      {detail && open && <Json value={detail} />}
    </li>
  );
}
