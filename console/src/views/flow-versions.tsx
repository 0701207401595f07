// A flow's versions: which is current (Set current switches it; the editor then shows that graph), and a
// side-by-side comparison: CompareFlow runs the chosen versions on the same inputs at once and each column
// follows its own run's events to its outputs.
import { NodeRunStatus, RunStatus, type Flow, type FlowVersion } from "@typecase/client/gen/typecase/v1/flow_pb.js";
import { useState } from "preact/hooks";
import { tc } from "../api";
import { Badge, ErrorBox, Json, fmtTime, useAction, useAsync } from "../components/ui";
import type { JsonObject } from "../json";

type Column = { versionId: string; runId: string; nodes: string[]; text: string; status: string; outputs?: unknown; error?: string };

const MAX_COMPARED = 5; // CompareFlow takes 2 to 5 versions

export function FlowVersions({ flow, inputs, onCurrentChanged }: { flow: Flow; inputs: () => JsonObject; onCurrentChanged: () => void }) {
  const versions = useAsync(async () => (await tc.flow.listFlowVersions({ flowId: flow.id, pageSize: 100 })).versions, [flow.id, flow.currentVersionId, flow.updateTime?.seconds]);
  const [picked, setPicked] = useState<string[]>([]);
  const [columns, setColumns] = useState<Map<string, Column>>(new Map());
  const { busy: comparing, error, act } = useAction();

  const setCurrent = (v: FlowVersion) => act(async () => (await tc.flow.setCurrentVersion({ flowId: flow.id, versionId: v.id }), onCurrentChanged()), { showBusy: false });

  // The run panel's inputs are parsed first: a malformed one is shown as the error, and nothing runs.
  const compare = () =>
    act(async () => {
      const values = inputs();
      const cols = new Map(picked.map((id) => [id, { versionId: id, runId: "", nodes: [], text: "", status: "starting" } as Column]));
      setColumns(new Map(cols));
      for await (const ev of tc.flow.compareFlow({ flowId: flow.id, versionIds: picked, inputs: values })) {
        const col = cols.get(ev.versionId);
        if (!col) continue;
        col.runId = ev.runId;
        const kind = ev.event?.kind;
        if (kind?.case === "runStarted") col.status = "running";
        else if (kind?.case === "nodeFinished" && kind.value.status !== NodeRunStatus.SKIPPED) col.nodes.push(kind.value.nodeName || kind.value.nodeId);
        else if (kind?.case === "token") col.text += kind.value.text;
        else if (kind?.case === "inputRequired") col.status = "waiting for input";
        else if (kind?.case === "runFinished") {
          col.status = kind.value.status === RunStatus.STOPPED ? "stopped" : "finished";
          col.outputs = kind.value.outputs;
        } else if (kind?.case === "runFailed") {
          col.status = "failed";
          col.error = kind.value.message;
        }
        setColumns(new Map(cols));
      }
    });

  const list = versions.data ?? [];
  const name = (id: string) => list.find((v) => v.id === id)?.name ?? id.slice(-6);
  return (
    <div class="flow-versions" data-testid="versions">
      <h3>Versions</h3>
      <ErrorBox error={versions.error} onRetry={versions.reload} />
      <ErrorBox error={error} />
      <table class="table">
        <tbody>
          {list.map((v) => (
            <tr key={v.id} data-testid={`version-${v.name}`} data-version-id={v.id}>
              <td>
                <label class="check">
                  <input
                    type="checkbox"
                    name={`compare-${v.name}`}
                    checked={picked.includes(v.id)}
                    disabled={!picked.includes(v.id) && picked.length >= MAX_COMPARED}
                    onChange={(e) => setPicked(e.currentTarget.checked ? [...picked, v.id] : picked.filter((p) => p !== v.id))}
                  />
                  <b>{v.name}</b>
                </label>
              </td>
              <td>{v.isCurrent ? <Badge tone="ok">current</Badge> : null}</td>
              <td class="faint">{v.description}</td>
              <td class="faint">{fmtTime(v.createTime)}</td>
              <td class="actions">
                {!v.isCurrent && (
                  <button class="btn small ghost" onClick={() => setCurrent(v)}>
                    Set current
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <div class="inline-form">
        <button class="btn" onClick={compare} disabled={picked.length < 2 || comparing} title="Runs the checked versions on the run panel's inputs">
          {comparing ? "Comparing…" : `Compare ${picked.length >= 2 ? picked.length : ""} versions`}
        </button>
        <span class="faint">Check two to five versions; they run on the inputs filled in the run panel above.</span>
      </div>
      {columns.size > 0 && (
        <div class="compare" data-testid="compare">
          {[...columns.values()].map((c) => (
            <div class="compare-col card" key={c.versionId} data-testid={`compare-${name(c.versionId)}`} data-status={c.status}>
              <div class="run-head">
                <b>{name(c.versionId)}</b> <Badge tone={c.status === "finished" ? "ok" : c.status === "failed" ? "bad" : "info"}>{c.status}</Badge>
              </div>
              <div class="faint">{c.nodes.join(" → ")}</div>
              {c.text && <div class="answer-text">{c.text}</div>}
              {c.error && <div class="error-text">{c.error}</div>}
              {c.outputs !== undefined && <Json value={c.outputs} />}
            </div>
          ))}
        </div>
      )}
    </div>
  );
}
