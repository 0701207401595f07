// The visual flow editor: a palette of every node type the server runs (ListNodeTypes), drag to place, connect
// handles (a condition's cases and else, an output's choices, each its own handle), a side panel per node whose
// form is generated from the type's params JSON Schema, validation by ValidateFlow as you draw (problems pinned
// on the nodes and under the fields), undo/redo, a draft autosaved in localStorage, and Save (a new version,
// made current).
//
// The canvas is @xyflow/react on Preact's compat layer rather than React: the same canvas bundles to about
// half the size (xyflow + react-dom 412 KiB minified / 132 KiB gzip, xyflow + preact/compat 206 / 70, measured
// with esbuild), and the rest of the console is Preact already. build.mjs aliases react and react-dom.
import {
  Background,
  Controls,
  Handle,
  Position,
  ReactFlow,
  ReactFlowProvider,
  addEdge,
  applyEdgeChanges,
  applyNodeChanges,
  useReactFlow,
  useUpdateNodeInternals,
  type Connection,
  type Edge as RFEdge,
  type EdgeChange,
  type Node as RFNode,
  type NodeChange,
  type NodeProps,
} from "@xyflow/react";
import { ValidationSeverity, type Flow, type NodeTypeInfo, type ValidationProblem } from "@typecase/client/gen/typecase/v1/flow_pb.js";
import { useCallback, useEffect, useMemo, useRef, useState } from "preact/hooks";
import { handleError, tc } from "../../api";
import { Badge, ErrorBox, useAction } from "../../components/ui";
import type { JsonObject, JsonValue } from "../../json";
import { ParamForm, type Choice, type FormContext } from "./paramform";
import { branchHandles, clone, outputKeys, schemaOf, setAt } from "./schema";

const VALIDATE_DEBOUNCE_MS = 400;
const HISTORY_LIMIT = 100;
const DRAG_TYPE = "application/x-typecase-node";
const draftKey = (flowId: string) => `typecase.console.flowDraft.${flowId}`;

export type NodeData = {
  info: NodeTypeInfo;
  name: string;
  params: JsonObject;
  problems: string[];
  runStatus?: string; // lit up by the run panel: running, succeeded, failed, waiting, skipped
};
type FNode = RFNode<NodeData, "tc">;
type Snapshot = { nodes: FNode[]; edges: RFEdge[] };
export type GraphJson = {
  nodes: { id: string; type: number; name: string; params: JsonObject; position: { x: number; y: number } }[];
  edges: { id: string; source: string; target: string; sourceHandle: string }[];
};

// -- proto graph <-> canvas -----------------------------------------------------------------------------------
type GraphLike = {
  nodes: { id: string; type: number; name: string; params?: unknown; position?: { x: number; y: number } }[];
  edges: { id: string; source: string; target: string; sourceHandle: string }[];
};

function toCanvas(graph: GraphLike | undefined, byType: Map<number, NodeTypeInfo>): Snapshot {
  const nodes: FNode[] = [];
  (graph?.nodes ?? []).forEach((n, i) => {
    const info = byType.get(n.type);
    if (!info) return;
    nodes.push({
      id: n.id,
      type: "tc",
      position: { x: n.position?.x ?? 80 + (i % 4) * 240, y: n.position?.y ?? 80 + Math.floor(i / 4) * 160 },
      data: { info, name: n.name, params: clone((n.params ?? {}) as JsonObject), problems: [] },
    });
  });
  const edges: RFEdge[] = (graph?.edges ?? []).map((e) => edgeOf(e.id, e.source, e.target, e.sourceHandle || null));
  return { nodes, edges };
}

function edgeOf(id: string, source: string, target: string, handle: string | null): RFEdge {
  return { id, source, target, sourceHandle: handle, label: handle || undefined, className: handle ? "fe-edge-branch" : undefined };
}

export function toGraph(snapshot: Snapshot): GraphJson {
  return {
    nodes: snapshot.nodes.map((n) => ({
      id: n.id,
      type: n.data.info.type,
      name: n.data.name,
      params: n.data.params,
      position: { x: Math.round(n.position.x), y: Math.round(n.position.y) },
    })),
    edges: snapshot.edges.map((e) => ({ id: e.id, source: e.source, target: e.target, sourceHandle: e.sourceHandle ?? "" })),
  };
}

/** The graph without canvas positions: what validation and "is it saved" compare. */
function logical(g: GraphJson): string {
  return JSON.stringify({ n: g.nodes.map(({ position: _p, ...rest }) => rest), e: g.edges });
}

// -- one node on the canvas -----------------------------------------------------------------------------------
function FlowNode({ id, data, selected }: NodeProps<FNode>) {
  const { info, params } = data;
  const handles = branchHandles(info, params);
  const update = useUpdateNodeInternals();
  const handleKey = handles?.join("|") ?? "";
  useEffect(() => update(id), [id, handleKey, update]);
  return (
    <div
      class={`fe-node${selected ? " selected" : ""}${data.problems.length ? " has-problems" : ""}${data.runStatus ? ` run-${data.runStatus}` : ""}`}
      data-testid={`node-${id}`}
      data-run-status={data.runStatus}
    >
      {info.hasInput && <Handle type="target" position={Position.Left} />}
      <div class="fe-node-head">
        <span class="node-type">{info.displayName}</span>
        {data.problems.length > 0 && (
          <span class="fe-node-problems" title={data.problems.join("\n")} data-testid="node-problems">
            {data.problems.length}
          </span>
        )}
      </div>
      <b class="fe-node-name">{data.name || id}</b>
      <span class="mono faint">{id}</span>
      {handles ? (
        <div class="fe-branches">
          {handles.map((h) => (
            <div class="fe-branch" key={h}>
              {h}
              <Handle type="source" position={Position.Right} id={h} />
            </div>
          ))}
        </div>
      ) : (
        info.hasOutput && <Handle type="source" position={Position.Right} />
      )}
    </div>
  );
}

const NODE_TYPES = { tc: FlowNode };

// -- the editor -----------------------------------------------------------------------------------------------
export function FlowEditor(props: { flow: Flow; nodeTypes: NodeTypeInfo[]; runStatus: Map<string, string>; onSaved: () => void }) {
  return (
    <ReactFlowProvider>
      <Editor {...props} />
    </ReactFlowProvider>
  );
}

function Editor({ flow, nodeTypes, runStatus, onSaved }: { flow: Flow; nodeTypes: NodeTypeInfo[]; runStatus: Map<string, string>; onSaved: () => void }) {
  const byType = useMemo(() => new Map(nodeTypes.map((t) => [t.type as number, t])), [nodeTypes]);
  const initial = useMemo(() => toCanvas(flow.graph, byType), [flow, byType]);
  const [nodes, setNodes] = useState<FNode[]>(initial.nodes);
  const [edges, setEdges] = useState<RFEdge[]>(initial.edges);
  const [selected, setSelected] = useState<string | null>(null);
  const [problems, setProblems] = useState<ValidationProblem[]>([]);
  const [validating, setValidating] = useState(false);
  const { busy: saving, error, setError, act } = useAction();
  const [draft, setDraft] = useState<{ graph: GraphJson; savedAt: number } | null>(null);
  const past = useRef<Snapshot[]>([]);
  const future = useRef<Snapshot[]>([]);
  const [, setTick] = useState(0);
  const { screenToFlowPosition } = useReactFlow();
  const wrapper = useRef<HTMLDivElement>(null);
  const savedGraph = useRef(logical(toGraph(initial)));
  const [fitOnOpen] = useState(initial.nodes.length > 0); // once: a later fit would move what is being drawn

  // Choices for model / knowledge-base widgets.
  const [models, setModels] = useState<Choice[]>([]);
  const [kbs, setKbs] = useState<Choice[]>([]);
  useEffect(() => {
    tc.llm.listModels({ pageSize: 200 }).then((r) => setModels(r.models.map((m) => ({ value: m.id, label: m.name }))), () => undefined);
    tc.knowledge.listKnowledgeBases({ pageSize: 200 }).then((r) => setKbs(r.knowledgeBases.map((k) => ({ value: k.id, label: k.name }))), () => undefined);
  }, []);

  // A draft left from an earlier visit that differs from the saved graph is offered back.
  useEffect(() => {
    try {
      const raw = localStorage.getItem(draftKey(flow.id));
      const stored = raw ? (JSON.parse(raw) as { graph: GraphJson; savedAt: number }) : null;
      if (stored && logical(stored.graph) !== savedGraph.current) setDraft(stored);
    } catch {
      /* unreadable draft: ignore */
    }
  }, [flow.id]);

  const snapshot = (): Snapshot => ({ nodes, edges });
  function remember(): void {
    past.current.push(clone(snapshot()));
    if (past.current.length > HISTORY_LIMIT) past.current.shift();
    future.current = [];
    setTick((n) => n + 1);
  }
  function restore(s: Snapshot): void {
    setNodes(s.nodes.map((n) => ({ ...n, data: { ...n.data, info: byType.get(n.data.info.type) ?? n.data.info } })));
    setEdges(s.edges);
  }
  function undo(): void {
    const prev = past.current.pop();
    if (!prev) return;
    future.current.push(clone(snapshot()));
    restore(prev);
    setTick((n) => n + 1);
  }
  function redo(): void {
    const next = future.current.pop();
    if (!next) return;
    past.current.push(clone(snapshot()));
    restore(next);
    setTick((n) => n + 1);
  }

  const graph = useMemo(() => toGraph({ nodes, edges }), [nodes, edges]);
  const graphKey = logical(graph);
  const dirty = graphKey !== savedGraph.current;

  // Autosave the draft (positions included) while it differs from what is saved.
  useEffect(() => {
    if (dirty) localStorage.setItem(draftKey(flow.id), JSON.stringify({ graph, savedAt: Date.now() }));
    else localStorage.removeItem(draftKey(flow.id));
  }, [graph, dirty, flow.id]);

  // Validate as you draw (debounced); positions do not matter to validation.
  useEffect(() => {
    const timer = window.setTimeout(async () => {
      setValidating(true);
      try {
        const res = await tc.flow.validateFlow({ flowId: flow.id, graph });
        setProblems(res.problems);
      } catch (e) {
        setError(handleError(e));
      } finally {
        setValidating(false);
      }
    }, VALIDATE_DEBOUNCE_MS);
    return () => window.clearTimeout(timer);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [graphKey, flow.id]);

  // Problems and run states pinned on the nodes.
  const shownNodes = useMemo(
    () =>
      nodes.map((n) => {
        const mine = problems.filter((p) => p.nodeId === n.id).map((p) => (p.param ? `${p.param}: ${p.message}` : p.message));
        const status = runStatus.get(n.id);
        return mine.join() === n.data.problems.join() && status === n.data.runStatus ? n : { ...n, data: { ...n.data, problems: mine, runStatus: status } };
      }),
    [nodes, problems, runStatus],
  );
  const shownEdges = useMemo(
    () => edges.map((e) => (problems.some((p) => p.edgeId === e.id) ? { ...e, className: `${e.className ?? ""} fe-edge-bad` } : e)),
    [edges, problems],
  );

  const onNodesChange = useCallback((changes: NodeChange<FNode>[]) => {
    if (changes.some((c) => c.type === "remove")) remember();
    setNodes((ns) => applyNodeChanges(changes, ns));
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [nodes, edges]);
  const onEdgesChange = useCallback((changes: EdgeChange[]) => {
    if (changes.some((c) => c.type === "remove")) remember();
    setEdges((es) => applyEdgeChanges(changes, es));
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [nodes, edges]);

  function onConnect(c: Connection): void {
    if (c.source === c.target) return;
    const handle = c.sourceHandle || null;
    const id = `e-${c.source}-${handle ?? "out"}-${c.target}`;
    if (edges.some((e) => e.id === id)) return;
    remember();
    setEdges((es) => addEdge(edgeOf(id, c.source, c.target, handle), es));
  }

  function newId(kind: string): string {
    const taken = new Set(nodes.map((n) => n.id));
    if (!taken.has(kind)) return kind;
    for (let i = 2; ; i++) if (!taken.has(`${kind}_${i}`)) return `${kind}_${i}`;
  }

  function addNode(info: NodeTypeInfo, position: { x: number; y: number }): void {
    remember();
    const id = newId(info.kind);
    const count = nodes.filter((n) => n.data.info.type === info.type).length;
    const name = count ? `${info.displayName} ${count + 1}` : info.displayName;
    setNodes((ns) => [...ns, { id, type: "tc", position, data: { info, name, params: clone((info.defaultParams ?? {}) as JsonObject), problems: [] } }]);
    setSelected(id);
  }

  function onDrop(e: DragEvent): void {
    e.preventDefault();
    const type = Number(e.dataTransfer?.getData(DRAG_TYPE));
    const info = byType.get(type);
    if (!info) return;
    const at = screenToFlowPosition({ x: e.clientX, y: e.clientY });
    addNode(info, { x: Math.round(at.x - 80), y: Math.round(at.y - 30) });
  }

  // Typing in a field is one undo step per field visit, not per keystroke.
  const lastEdit = useRef<string>("");
  function editNode(id: string, change: (d: NodeData) => NodeData, editKey: string): void {
    if (lastEdit.current !== editKey) {
      remember();
      lastEdit.current = editKey;
    }
    setNodes((ns) => ns.map((n) => (n.id === id ? { ...n, data: change(n.data) } : n)));
  }

  function deleteNode(id: string): void {
    remember();
    setNodes((ns) => ns.filter((n) => n.id !== id));
    setEdges((es) => es.filter((e) => e.source !== id && e.target !== id));
    setSelected(null);
  }

  const save = () =>
    act(async () => {
      const versions = (await tc.flow.listFlowVersions({ flowId: flow.id, pageSize: 200 })).versions;
      const names = new Set(versions.map((v) => v.name));
      let n = versions.length + 1;
      while (names.has(`v${n}`)) n++;
      const created = await tc.flow.createFlowVersion({ flowId: flow.id, version: { name: `v${n}`, description: "Saved in the editor", graph } });
      if (created.version) await tc.flow.setCurrentVersion({ flowId: flow.id, versionId: created.version.id });
      savedGraph.current = graphKey;
      localStorage.removeItem(draftKey(flow.id));
      setTick((t) => t + 1);
      onSaved();
    });

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (!(e.ctrlKey || e.metaKey) || (e.target as HTMLElement)?.closest?.("input, textarea, select")) return;
      if (e.key.toLowerCase() === "z") {
        e.preventDefault();
        if (e.shiftKey) redo();
        else undo();
      } else if (e.key.toLowerCase() === "y") {
        e.preventDefault();
        redo();
      }
    };
    wrapper.current?.addEventListener("keydown", onKey);
    const el = wrapper.current;
    return () => el?.removeEventListener("keydown", onKey);
  });

  const current = shownNodes.find((n) => n.id === selected) ?? null;
  const errors = problems.filter((p) => p.severity === ValidationSeverity.ERROR);
  const graphLevel = problems.filter((p) => !p.nodeId);

  return (
    <div class="flow-editor" ref={wrapper} tabIndex={-1} data-version-id={flow.currentVersionId}>
      <div class="fe-toolbar">
        <button class="btn small" onClick={undo} disabled={past.current.length === 0} title="Undo (Ctrl+Z)">
          Undo
        </button>
        <button class="btn small" onClick={redo} disabled={future.current.length === 0} title="Redo (Ctrl+Shift+Z)">
          Redo
        </button>
        <span class="fe-status" data-testid="validation" data-errors={errors.length} data-validating={validating ? "true" : undefined}>
          {validating ? "checking…" : errors.length ? <Badge tone="bad">{errors.length} problem{errors.length === 1 ? "" : "s"}</Badge> : <Badge tone="ok">valid</Badge>}
        </span>
        <span class="faint">{dirty ? "unsaved changes (draft kept in this browser)" : "saved"}</span>
        <button class="btn primary small" onClick={save} disabled={saving || !dirty} data-testid="save-flow">
          {saving ? "Saving…" : "Save version"}
        </button>
      </div>
      {draft && (
        <div class="fe-draft" role="status">
          An unsaved draft from {new Date(draft.savedAt).toLocaleString()} is kept in this browser.
          <button
            class="btn small"
            onClick={() => {
              remember();
              restore(toCanvas(draft.graph, byType));
              setDraft(null);
            }}
          >
            Restore it
          </button>
          <button
            class="btn small ghost"
            onClick={() => {
              localStorage.removeItem(draftKey(flow.id));
              setDraft(null);
            }}
          >
            Discard
          </button>
        </div>
      )}
      <ErrorBox error={error} />
      {graphLevel.length > 0 && (
        <ul class="fe-graph-problems" data-testid="graph-problems">
          {graphLevel.map((p, i) => (
            <li key={i} class={p.severity === ValidationSeverity.ERROR ? "error-text" : "muted"}>
              {p.message}
            </li>
          ))}
        </ul>
      )}
      <div class="fe-body">
        <div class="fe-palette" data-testid="palette">
          {nodeTypes.map((t) => (
            <div
              key={t.type}
              class={`fe-palette-item${t.unavailableReason ? " unavailable" : ""}`}
              draggable
              data-testid={`palette-${t.kind}`}
              title={t.unavailableReason || t.description}
              onDragStart={(e) => {
                e.dataTransfer?.setData(DRAG_TYPE, String(t.type));
                if (e.dataTransfer) e.dataTransfer.effectAllowed = "move";
              }}
              onDblClick={() => addNode(t, { x: 80 + nodes.length * 30, y: 80 + nodes.length * 30 })}
            >
              <b>{t.displayName}</b>
              <span class="faint">{t.category}</span>
            </div>
          ))}
        </div>
        <div
          class="fe-canvas"
          data-testid="canvas"
          onDragOver={(e) => {
            e.preventDefault();
            if (e.dataTransfer) e.dataTransfer.dropEffect = "move";
          }}
          onDrop={onDrop}
        >
          <ReactFlow<FNode, RFEdge>
            nodes={shownNodes}
            edges={shownEdges}
            nodeTypes={NODE_TYPES}
            onNodesChange={onNodesChange}
            onEdgesChange={onEdgesChange}
            onConnect={onConnect}
            onNodeDragStart={() => remember()}
            onNodeClick={(_e, n) => setSelected(n.id)}
            onPaneClick={() => setSelected(null)}
            deleteKeyCode={["Delete", "Backspace"]}
            fitView={fitOnOpen}
            fitViewOptions={{ maxZoom: 1 }}
            minZoom={0.3}
            maxZoom={1.5}
            proOptions={{ hideAttribution: true }}
          >
            <Background gap={16} />
            <Controls showInteractive={false} />
          </ReactFlow>
        </div>
        <aside class="fe-panel" data-testid="node-panel">
          {current ? (
            <NodePanel
              key={current.id}
              node={current}
              upstream={upstreamVariables(current.id, shownNodes, edges)}
              problems={problems.filter((p) => p.nodeId === current.id)}
              ctx={{ models, knowledgeBases: kbs, nodes: nodes.filter((n) => n.id !== current.id).map((n) => ({ value: n.id, label: n.data.name || n.id })) }}
              onRename={(name) => editNode(current.id, (d) => ({ ...d, name }), `${current.id}:name`)}
              onParam={(path, value) => editNode(current.id, (d) => ({ ...d, params: setAt(d.params, path, value) }), `${current.id}:${path.join(".")}`)}
              onDelete={() => deleteNode(current.id)}
            />
          ) : (
            <p class="hint">
              Drag a node from the palette onto the canvas (or double-click it), connect a node's right handle to
              another's left, and click a node to edit its settings. Conditions have one handle per case plus “else”.
            </p>
          )}
        </aside>
      </div>
    </div>
  );
}

/** `{{node.key}}` for every output of the nodes upstream of `id` (start inputs also as `{{name}}`). */
function upstreamVariables(id: string, nodes: FNode[], edges: RFEdge[]): string[] {
  const seen = new Set<string>();
  const queue = [id];
  while (queue.length) {
    const at = queue.shift()!;
    for (const e of edges) if (e.target === at && !seen.has(e.source)) (seen.add(e.source), queue.push(e.source));
  }
  const out: string[] = [];
  for (const n of nodes) {
    if (!seen.has(n.id)) continue;
    for (const key of outputKeys(n.data.info, n.data.params)) {
      if (key === "*") continue;
      out.push(`{{${n.id}.${key}}}`);
      if (!n.data.info.hasInput && key !== "guide") out.push(`{{${key}}}`);
    }
  }
  return out;
}

function NodePanel({
  node,
  upstream,
  problems,
  ctx,
  onRename,
  onParam,
  onDelete,
}: {
  node: FNode;
  upstream: string[];
  problems: ValidationProblem[];
  ctx: Omit<FormContext, "variables" | "problems">;
  onRename: (name: string) => void;
  onParam: (path: (string | number)[], value: JsonValue | undefined) => void;
  onDelete: () => void;
}) {
  const { info } = node.data;
  const byParam = new Map<string, string[]>();
  for (const p of problems) if (p.param) byParam.set(p.param, [...(byParam.get(p.param) ?? []), p.message]);
  const general = problems.filter((p) => !p.param || !knownPath(p.param, node.data.params));
  return (
    <div class="fe-node-panel" data-node-id={node.id}>
      <div class="fe-panel-head">
        <div>
          <span class="node-type">{info.displayName}</span> <span class="mono faint">{node.id}</span>
        </div>
        <button class="btn small danger" onClick={onDelete}>
          Delete
        </button>
      </div>
      <p class="faint">{info.description}</p>
      {info.unavailableReason && <p class="error-text">{info.unavailableReason}</p>}
      <label class="field">
        <span class="field-label">Name</span>
        <input name="node-name" value={node.data.name} onInput={(e) => onRename(e.currentTarget.value)} />
      </label>
      {general.length > 0 && (
        <ul class="fe-node-problem-list" data-testid="panel-problems">
          {general.map((p, i) => (
            <li key={i} class={p.severity === ValidationSeverity.ERROR ? "error-text" : "muted"}>
              {p.param ? `${p.param}: ` : ""}
              {p.message}
            </li>
          ))}
        </ul>
      )}
      <ParamForm schema={schemaOf(info)} params={node.data.params} onChange={onParam} ctx={{ ...ctx, variables: upstream, problems: byParam }} />
      {outputKeys(info, node.data.params).length > 0 && (
        <p class="faint">
          Outputs: {outputKeys(info, node.data.params).map((k) => (k === "*" ? "any key main() returns" : `{{${node.id}.${k}}}`)).join(", ")}
        </p>
      )}
    </div>
  );
}

/** Whether a problem's param path names a control the form shows (so it is shown there, not in the list). */
function knownPath(path: string, params: JsonObject): boolean {
  const parts = path.split(".");
  let cur: JsonValue | undefined = params;
  for (const part of parts.slice(0, -1)) {
    if (cur === null || typeof cur !== "object") return false;
    cur = (cur as Record<string, JsonValue>)[part];
  }
  return cur !== null && typeof cur === "object";
}
