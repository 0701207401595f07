// An assistant's tool calls inside an answer, collapsed: the names at a glance (coloured by outcome), and when
// opened each call's arguments, result preview (or error reason) and duration. Used by chat and the try-it pane.
import { ToolStepStatus, type ToolStep } from "@typecase/client/gen/typecase/v1/common_pb.js";
import { Badge, Spinner, fmtMs, plural, type Tone } from "./ui";

const TONE: Record<number, Tone> = {
  [ToolStepStatus.RUNNING]: "info",
  [ToolStepStatus.SUCCEEDED]: "ok",
  [ToolStepStatus.FAILED]: "bad",
  [ToolStepStatus.CANCELLED]: "warn",
};

/** The arguments as indented JSON when they parse, as the model wrote them otherwise. */
function pretty(args: string): string {
  try {
    return JSON.stringify(JSON.parse(args), null, 2);
  } catch {
    return args;
  }
}

/** Steps streamed twice (running, then ended) keep one entry per call: the latest. */
export function mergeToolStep(steps: ToolStep[], step: ToolStep): ToolStep[] {
  const i = steps.findIndex((s) => s.callId === step.callId);
  return i >= 0 ? steps.map((s, j) => (j === i ? step : s)) : [...steps, step];
}

export function ToolSteps({ steps }: { steps: ToolStep[] }) {
  if (steps.length === 0) return null;
  return (
    <details class="steps tool-steps" data-testid="tool-steps">
      <summary>
        <span class="faint">{plural(steps.length, "tool call")}</span>{" "}
        {steps.map((s) => (
          <Badge key={s.callId} tone={TONE[s.status] ?? "neutral"} title={s.reason || undefined}>
            {s.name}
          </Badge>
        ))}
      </summary>
      <ol class="step-list">
        {steps.map((s) => (
          <li key={s.callId} data-testid="tool-step" data-tool={s.name} data-status={ToolStepStatus[s.status]?.toLowerCase()}>
            <b class="mono">{s.name}</b> <span class="faint">step {s.step}</span>{" "}
            {s.status === ToolStepStatus.RUNNING ? <Spinner label="running…" /> : <span class="faint">{fmtMs(Number(s.durationMs))}</span>}
            {s.reason && (
              <>
                {" "}
                <Badge tone="bad">{s.reason}</Badge>
              </>
            )}
            <div class="faint small">Arguments</div>
            <pre class="json" data-testid="tool-arguments">
              {pretty(s.arguments)}
            </pre>
            {s.status !== ToolStepStatus.RUNNING && (
              <>
                <div class="faint small">{s.status === ToolStepStatus.SUCCEEDED ? "Result" : "Error"}{Number(s.resultSizeBytes) > s.resultPreview.length ? ` (first part of ${Number(s.resultSizeBytes)} bytes)` : ""}</div>
                <pre class="json tool-result-preview" data-testid="tool-result-preview">
                  {s.resultPreview}
                </pre>
              </>
            )}
          </li>
        ))}
      </ol>
    </details>
  );
}
