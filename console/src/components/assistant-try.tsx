// The builder's try-it pane: a real chat session with the assistant as saved (ChatService.CreateSession with
// assistant_id), its opening message and suggested questions, streamed answers and their tool calls. The session
// is an ordinary one: "Open in chat" continues it on the chat page.
import type { Assistant } from "@typecase/client/gen/typecase/v1/assistant_pb.js";
import type { ToolStep } from "@typecase/client/gen/typecase/v1/common_pb.js";
import { useRef, useState } from "preact/hooks";
import { tc } from "../api";
import { linkClick } from "../router";
import { Markdown } from "./markdown";
import { mergeToolStep, ToolSteps } from "./tool-steps";
import { Badge, ErrorBox, Spinner, useAction } from "./ui";

type Line = { role: "user" | "assistant"; text: string; steps: ToolStep[]; done: boolean; error?: string };

export function AssistantTry({ assistant }: { assistant: Assistant }) {
  const [sessionId, setSessionId] = useState<string | null>(null);
  const [lines, setLines] = useState<Line[]>([]);
  const [draft, setDraft] = useState("");
  const { busy, error, setError, act } = useAction();
  const stream = useRef<AbortController | null>(null);

  const patchLast = (patch: (l: Line) => Line) => setLines((ls) => ls.map((l, i) => (i === ls.length - 1 ? patch(l) : l)));

  function reset() {
    stream.current?.abort();
    setSessionId(null);
    setLines([]);
    setError(null); // busy ends as the aborted answer's stream closes
  }

  async function ask(question: string) {
    const q = question.trim();
    if (!q || busy) return;
    setDraft("");
    const ctrl = (stream.current = new AbortController());
    await act(async () => {
      let id = sessionId;
      if (!id) {
        const res = await tc.chat.createSession({ session: { assistantId: assistant.id } });
        id = res.session?.id ?? null;
        if (!id) throw new Error("the server returned no session");
        setSessionId(id);
      }
      setLines((ls) => [...ls, { role: "user", text: q, steps: [], done: true }, { role: "assistant", text: "", steps: [], done: false }]);
      for await (const ev of tc.chat.chat({ sessionId: id, content: q, requestId: crypto.randomUUID() }, { signal: ctrl.signal })) {
        const kind = ev.event?.kind;
        if (kind?.case === "token") {
          const text = kind.value.text;
          patchLast((l) => ({ ...l, text: l.text + text }));
        } else if (kind?.case === "node" && kind.value.tool) {
          const step = kind.value.tool;
          patchLast((l) => ({ ...l, steps: mergeToolStep(l.steps, step) }));
        } else if (kind?.case === "ended") {
          const answer = kind.value.answer;
          const steps = answer?.steps.flatMap((s) => (s.tool ? [s.tool] : []));
          patchLast((l) => ({ ...l, text: answer?.content ?? l.text, steps: steps?.length ? steps : l.steps, done: true }));
        } else if (kind?.case === "error") {
          const message = kind.value.message || "The answer failed.";
          patchLast((l) => ({ ...l, done: true, error: message }));
        }
      }
      patchLast((l) => ({ ...l, done: true }));
    });
  }

  return (
    <div class="assistant-try card" data-testid="assistant-try">
      <div class="pane-head">
        <h3>Try it</h3>
        <span class="row-actions">
          {sessionId && (
            <a class="btn small ghost" href={`/chat/${sessionId}`} onClick={linkClick}>
              Open in chat
            </a>
          )}
          <button class="btn small ghost" onClick={reset} disabled={lines.length === 0 && !sessionId}>
            New chat
          </button>
        </span>
      </div>
      <div class="try-messages" data-testid="try-messages">
        {assistant.openingMessage && <div class="msg notice">{assistant.openingMessage}</div>}
        {lines.length === 0 && assistant.suggestedQuestions.length > 0 && (
          <div class="suggestions" data-testid="suggestions">
            {assistant.suggestedQuestions.map((q) => (
              <button key={q} class="btn small" onClick={() => void ask(q)} disabled={busy}>
                {q}
              </button>
            ))}
          </div>
        )}
        {lines.map((l, i) =>
          l.role === "user" ? (
            <div key={i} class="msg user">
              <div class="bubble">{l.text}</div>
            </div>
          ) : (
            <div key={i} class="msg assistant" data-testid="try-answer" data-status={l.done ? (l.error ? "failed" : "complete") : "streaming"}>
              <ToolSteps steps={l.steps} />
              <div class="bubble">
                {l.text ? <Markdown text={l.text} /> : !l.done && <Spinner label="Thinking…" />}
              </div>
              {l.error && <Badge tone="bad">{l.error}</Badge>}
            </div>
          ),
        )}
      </div>
      <ErrorBox error={error} />
      <form
        class="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          void ask(draft);
        }}
      >
        <input name="try-question" class="grow" placeholder="Ask the assistant…" value={draft} onInput={(e) => setDraft(e.currentTarget.value)} />
        <button class="btn primary" type="submit" disabled={busy || !draft.trim()}>
          {busy ? "Answering…" : "Ask"}
        </button>
      </form>
    </div>
  );
}
