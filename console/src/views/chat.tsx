// Chat playground: sessions with a model or a published flow, answers streamed live, Stop, and answers that
// keep streaming across a page reload.
//
// Reload: while a turn runs, sessionStorage keeps {turn id, answer id, last seq, text up to that seq}. On load,
// a session whose answer is still STREAMING is re-attached with StreamTurnEvents(after_seq = last seq) and
// the answer shows the longer of the stored text (ListMessages, flushed by the server now and then) and the
// saved text plus the new tokens. Both are prefixes of the same answer, so nothing is duplicated; without a
// saved copy (another tab) the turn is replayed from seq 0 instead.
import { FinishReason, MessageRole, type Citation } from "@typecase/client/gen/typecase/v1/common_pb.js";
import {
  FeedbackAction,
  MessageCategory,
  MessageRating,
  MessageStatus,
  SessionKind,
  type Message,
  type NodeEvent,
  type Session,
  type TurnEvent,
} from "@typecase/client/gen/typecase/v1/chat_pb.js";
import { FlowStatus, NodeRunStatus, type InputRequired } from "@typecase/client/gen/typecase/v1/flow_pb.js";
import { ModelType } from "@typecase/client/gen/typecase/v1/llm_pb.js";
import { AssistantScope } from "@typecase/client/gen/typecase/v1/assistant_pb.js";
import { useEffect, useReducer, useRef, useState } from "preact/hooks";
import { handleError, isAbort, tc } from "../api";
import { MessageAttachments, PendingFiles, asShown, toAttachments, usePendingFiles, type Pending } from "../components/attachments";
import { Citations } from "../components/citations";
import { ToolSteps } from "../components/tool-steps";
import { InputForm, type InputValues } from "../components/inputform";
import { Markdown, copyText } from "../components/markdown";
import { Badge, Empty, ErrorBox, Json, Loading, Spinner, durationMs, fmtMs, fmtTime, plural, useAction, useAsync } from "../components/ui";
import { linkClick, navigate } from "../router";

const MAX_TOKENS_KEY = "typecase.console.maxTokens"; // the default for chats without their own setting
const TARGET_KEY = "typecase.console.chatTarget";
const turnKey = (sessionId: string) => `typecase.console.turn.${sessionId}`;
const settingsKey = (sessionId: string) => `typecase.console.chatSettings.${sessionId}`;
const TITLE_POLL_MS = 1000; // after a turn: how often to look for the title the server writes after the answer
const TITLE_POLL_TRIES = 15;
const SESSION_PAGE = 50; // chats per page of the list; older pages load as it is scrolled

// -- per-chat generation settings (localStorage: ChatRequest carries them on every turn) ----------------------
type ChatSettings = { temperature: string; maxTokens: string };

function loadSettings(sessionId: string): ChatSettings {
  try {
    const raw = localStorage.getItem(settingsKey(sessionId));
    if (raw) return { temperature: "", maxTokens: "", ...(JSON.parse(raw) as Partial<ChatSettings>) };
  } catch {
    /* unreadable: defaults */
  }
  return { temperature: "", maxTokens: localStorage.getItem(MAX_TOKENS_KEY) ?? "" };
}
function saveSettings(sessionId: string, settings: ChatSettings): void {
  localStorage.setItem(settingsKey(sessionId), JSON.stringify(settings));
  localStorage.setItem(MAX_TOKENS_KEY, settings.maxTokens);
}

// -- the running turn's saved state (sessionStorage: survives a reload of this tab) -------------------------
type SavedTurn = { turnId: string; answerId: string; seq: string; text: string };

function loadTurn(sessionId: string): SavedTurn | null {
  try {
    const raw = sessionStorage.getItem(turnKey(sessionId));
    return raw ? (JSON.parse(raw) as SavedTurn) : null;
  } catch {
    return null;
  }
}
function saveTurn(sessionId: string, t: SavedTurn): void {
  try {
    sessionStorage.setItem(turnKey(sessionId), JSON.stringify(t));
  } catch {
    /* storage full: a reload then replays from seq 0 */
  }
}
function clearTurn(sessionId: string): void {
  sessionStorage.removeItem(turnKey(sessionId));
}

function newRequestId(): string {
  return typeof crypto.randomUUID === "function"
    ? crypto.randomUUID()
    : `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

// -- view ---------------------------------------------------------------------------------------------------
export function ChatView({ sessionId }: { sessionId?: string }) {
  // The first page is reloaded after changes; older pages are appended as the list is scrolled to its end.
  const firstToken = useRef("");
  const [older, setOlder] = useState<{ sessions: Session[]; next: string }>({ sessions: [], next: "" });
  const sessions = useAsync(async () => {
    const res = await tc.chat.listSessions({ pageSize: SESSION_PAGE });
    firstToken.current = res.nextPageToken;
    setOlder((o) => (o.sessions.length ? o : { sessions: [], next: res.nextPageToken }));
    return res.sessions;
  }, []);
  const loadingOlder = useRef(false);
  async function loadOlder(): Promise<void> {
    const token = older.next || (older.sessions.length === 0 ? firstToken.current : "");
    if (!token || loadingOlder.current) return;
    loadingOlder.current = true;
    await act(
      async () => {
        const res = await tc.chat.listSessions({ pageSize: SESSION_PAGE, pageToken: token });
        setOlder((o) => ({ sessions: [...o.sessions, ...res.sessions], next: res.nextPageToken }));
      },
      { showBusy: false },
    );
    loadingOlder.current = false;
  }
  const firstIds = new Set((sessions.data ?? []).map((s) => s.id));
  const allSessions = sessions.data ? [...sessions.data, ...older.sessions.filter((s) => !firstIds.has(s.id))] : undefined;
  const moreToLoad = !!(older.next || (older.sessions.length === 0 && firstToken.current));
  const targets = useAsync(async () => {
    const [models, flows, assistants] = await Promise.all([
      tc.llm.listModels({ type: ModelType.LLM, online: true, pageSize: 200 }),
      tc.flow.listFlows({ status: FlowStatus.ONLINE, pageSize: 200 }),
      tc.assistants.listAssistants({ scope: AssistantScope.ONLINE, pageSize: 200 }),
    ]);
    return { models: models.models, flows: flows.flows, assistants: assistants.assistants };
  }, []);
  const kbs = useAsync(async () => (await tc.knowledge.listKnowledgeBases({ pageSize: 200 })).knowledgeBases, []);
  const [target, setTarget] = useState<string>(localStorage.getItem(TARGET_KEY) ?? "");
  const [systemPrompt, setSystemPrompt] = useState("");
  const [kbIds, setKbIds] = useState<string[]>([]);
  const { busy: creating, error, act } = useAction(); // busy: creating a chat

  const models = targets.data?.models ?? [];
  const flows = targets.data?.flows ?? [];
  const assistants = targets.data?.assistants ?? [];
  const validTarget =
    (target.startsWith("assistant:") && assistants.some((a) => `assistant:${a.id}` === target)) ||
    (target.startsWith("model:") && models.some((m) => `model:${m.id}` === target)) ||
    (target.startsWith("flow:") && flows.some((f) => `flow:${f.id}` === target));
  const chosen = validTarget ? target : models[0] ? `model:${models[0].id}` : flows[0] ? `flow:${flows[0].id}` : "";

  const createSession = () =>
    act(async () => {
      const [kind, id] = chosen.split(":");
      const session =
        kind === "flow" ? { flowId: id } : kind === "assistant" ? { assistantId: id } : { modelId: id, systemPrompt: systemPrompt.trim(), kbIds };
      const res = await tc.chat.createSession({ session });
      localStorage.setItem(TARGET_KEY, chosen);
      await sessions.reload();
      if (res.session) navigate(`/chat/${res.session.id}`);
    });
  const deleteSession = (id: string) =>
    act(
      async () => {
        await tc.chat.deleteSession({ sessionId: id });
        clearTurn(id);
        if (id === sessionId) navigate("/chat");
        await sessions.reload();
      },
      { showBusy: false },
    );

  const current = allSessions?.find((s) => s.id === sessionId);

  /** The server names a chat just after its first answer: reload the list until the title is there. */
  async function followTitle(id: string): Promise<void> {
    await sessions.reload(); // the new preview
    for (let i = 0; i < TITLE_POLL_TRIES; i++) {
      const session = await tc.chat.getSession({ sessionId: id }).then((r) => r.session, () => undefined);
      if (!session) return;
      if (session.title) {
        sessions.setData((list) => list?.map((s) => (s.id === id ? session : s)) ?? [session]);
        return;
      }
      await new Promise((r) => window.setTimeout(r, TITLE_POLL_MS));
    }
  }

  return (
    <div class="split">
      <aside class="sidebar">
        <div class="sidebar-head">
          <label class="stacked">
            <span class="label">Talk to</span>
            {targets.loading && !targets.data ? (
              <Spinner label="Loading models…" />
            ) : (
              <select name="target" value={chosen} onChange={(e) => setTarget(e.currentTarget.value)} disabled={!chosen}>
                {models.length > 0 && (
                  <optgroup label="Models">
                    {models.map((m) => (
                      <option key={m.id} value={`model:${m.id}`}>
                        {m.name}
                      </option>
                    ))}
                  </optgroup>
                )}
                {flows.length > 0 && (
                  <optgroup label="Published flows">
                    {flows.map((f) => (
                      <option key={f.id} value={`flow:${f.id}`}>
                        {f.name}
                      </option>
                    ))}
                  </optgroup>
                )}
                {assistants.length > 0 && (
                  <optgroup label="Assistants">
                    {assistants.map((a) => (
                      <option key={a.id} value={`assistant:${a.id}`}>
                        {a.name}
                      </option>
                    ))}
                  </optgroup>
                )}
                {!chosen && <option value="">No online model or flow</option>}
              </select>
            )}
          </label>
          {chosen.startsWith("model:") && (
            <details class="options">
              <summary>
                Options{kbIds.length > 0 ? ` · ${plural(kbIds.length, "knowledge base")}` : ""}
                {systemPrompt.trim() ? " · system prompt" : ""}
              </summary>
              <label>
                System prompt
                <textarea name="system-prompt" rows={2} placeholder="You are a helpful assistant…" value={systemPrompt} onInput={(e) => setSystemPrompt(e.currentTarget.value)} />
              </label>
              <fieldset>
                <legend>Answer from knowledge bases</legend>
                {kbs.data?.length === 0 && <span class="faint">None yet: create one under Knowledge.</span>}
                {kbs.data?.map((kb) => (
                  <label class="check" key={kb.id}>
                    <input
                      type="checkbox"
                      name="kb"
                      value={kb.id}
                      checked={kbIds.includes(kb.id)}
                      onChange={(e) => setKbIds(e.currentTarget.checked ? [...kbIds, kb.id] : kbIds.filter((k) => k !== kb.id))}
                    />
                    {kb.name}
                  </label>
                ))}
              </fieldset>
              <span class="faint">Applies to the next new chat.</span>
            </details>
          )}
          <button class="btn primary" onClick={createSession} disabled={!chosen || creating}>
            {creating ? "Creating…" : "New chat"}
          </button>
        </div>
        <ErrorBox error={targets.error} onRetry={targets.reload} />
        {targets.data && !chosen && (
          <p class="hint">
            No online chat model or published flow. Add a model (LLMService, <code>POST /v1/models</code>) or publish a
            flow in <a href="/flows" onClick={linkClick}>Flows</a>.
          </p>
        )}
        <ErrorBox error={error} />
        <ErrorBox error={sessions.error} onRetry={sessions.reload} />
        {sessions.loading && !sessions.data && <Loading label="Loading chats…" />}
        {sessions.data && sessions.data.length === 0 && (
          <Empty title="No chats yet">Pick a model above and press “New chat”.</Empty>
        )}
        <ul class="list" data-testid="session-list">
          {allSessions?.map((s) => (
            <SessionItem key={s.id} session={s} active={s.id === sessionId} onDelete={() => deleteSession(s.id)} />
          ))}
        </ul>
        {moreToLoad && <MoreSessions key={older.sessions.length} onVisible={loadOlder} />}
      </aside>
      <section class="main-pane">
        {!sessionId && (
          <Empty title="Chat playground">
            Start a <b>New chat</b> with a model or a published flow, or open one from the list. Answers stream as they
            are generated; you can stop them, and reloading the page keeps following a running answer.
          </Empty>
        )}
        {sessionId && (
          <Conversation
            key={sessionId}
            sessionId={sessionId}
            session={current}
            onTurnEnded={() => void followTitle(sessionId)}
          />
        )}
      </section>
    </div>
  );
}

/** A sentinel at the end of the list: scrolled into view, it loads the next page. */
function MoreSessions({ onVisible }: { onVisible: () => Promise<void> }) {
  const el = useRef<HTMLDivElement>(null);
  const latest = useRef(onVisible);
  latest.current = onVisible;
  useEffect(() => {
    const node = el.current;
    if (!node) return;
    const seen = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) void latest.current();
    });
    seen.observe(node);
    return () => seen.disconnect();
  }, []);
  return (
    <div ref={el} class="more-sessions" data-testid="more-sessions">
      <Spinner label="Loading older chats…" />
    </div>
  );
}

function SessionItem({ session, active, onDelete }: { session: Session; active: boolean; onDelete: () => void }) {
  const [confirming, setConfirming] = useState(false);
  return (
    <li class={active ? "active" : ""}>
      <a href={`/chat/${session.id}`} onClick={linkClick} class="list-link">
        <span class="list-title">{session.title || "New chat"}</span>
        <span class="list-sub">
          {session.kind === SessionKind.FLOW ? "flow · " : ""}
          {session.appName} · {fmtTime(session.latestMessageTime ?? session.createTime)}
        </span>
        {session.latestMessagePreview && <span class="list-preview">{session.latestMessagePreview}</span>}
      </a>
      {confirming ? (
        <span class="row-actions">
          <button class="btn small danger" onClick={onDelete}>
            Delete
          </button>
          <button class="btn small ghost" onClick={() => setConfirming(false)}>
            Keep
          </button>
        </span>
      ) : (
        <button class="icon-btn" title="Delete this chat" aria-label="Delete this chat" onClick={() => setConfirming(true)}>
          ×
        </button>
      )}
    </li>
  );
}

// -- one conversation -----------------------------------------------------------------------------------------
type Live = {
  citations: Citation[];
  turnId: string;
  answerId: string;
  text: string; // answer text up to `seq` from the event log
  stored: string; // the answer as ListMessages returned it when re-attaching
  seq: bigint;
  stopping: boolean;
  steps: NodeEvent[];
};

async function listAllMessages(sessionId: string): Promise<Message[]> {
  const out: Message[] = [];
  let pageToken = "";
  do {
    const res = await tc.chat.listMessages({ sessionId, pageSize: 500, pageToken });
    out.push(...res.messages);
    pageToken = res.nextPageToken;
  } while (pageToken && out.length < 5000);
  return out;
}

function Conversation({ sessionId, session: listed, onTurnEnded }: { sessionId: string; session?: Session; onTurnEnded: () => void }) {
  // The list has the latest title; a chat that is not on its first page is read on its own.
  const own = useAsync(async () => (listed ? undefined : (await tc.chat.getSession({ sessionId })).session), [sessionId, !listed]);
  const session = listed ?? own.data;
  const [messages, setMessages] = useState<Message[] | undefined>();
  const { error, setError, act } = useAction({ showBusy: false }); // the turn's progress is its own busy state
  const [streamError, setStreamError] = useState<string | null>(null);
  const [draft, setDraft] = useState("");
  const [settings, setSettings] = useState<ChatSettings>(() => loadSettings(sessionId));
  const [pendingInput, setPendingInput] = useState<InputRequired | null>(null);
  const [pendingQuestion, setPendingQuestion] = useState<string | null>(null);
  const pending = usePendingFiles();
  const sentFiles = useRef<Pending[]>([]); // attached to the question being sent, until it is stored
  const picker = useRef<HTMLInputElement>(null);
  const [dragging, setDragging] = useState(false);
  const live = useRef<Live | null>(null);
  const stream = useRef<AbortController | null>(null);
  const [, rerender] = useReducer((n: number) => n + 1, 0);
  const bottom = useRef<HTMLDivElement>(null);
  const pinned = useRef(true);
  const isFlow = session?.kind === SessionKind.FLOW;

  // A list read before a local change (a new turn, a regenerate) must not overwrite it when it arrives late.
  const epoch = useRef(0);
  async function refresh(): Promise<Message[]> {
    const mine = ++epoch.current;
    const msgs = await listAllMessages(sessionId);
    if (mine !== epoch.current) return msgs;
    setMessages(msgs);
    const last = msgs[msgs.length - 1];
    setPendingInput(last?.category === MessageCategory.INPUT_REQUEST && last.inputRequired ? last.inputRequired : null);
    return msgs;
  }

  // Load the history; re-attach to a turn that is still running.
  useEffect(() => {
    let cancelled = false;
    (async () => {
      try {
        const msgs = await refresh();
        if (cancelled) return;
        const running = [...msgs].reverse().find((m) => m.category === MessageCategory.ANSWER && m.status === MessageStatus.STREAMING && m.turnId);
        if (running) await follow(running);
        else clearTurn(sessionId);
      } catch (e) {
        if (!cancelled && !isAbort(e)) setError(handleError(e));
      }
    })();
    return () => {
      cancelled = true;
      stream.current?.abort();
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [sessionId]);

  // Keep the newest text in view unless the user scrolled up.
  useEffect(() => {
    if (pinned.current) bottom.current?.scrollIntoView({ block: "end" });
  });

  function save(): void {
    const l = live.current;
    if (l) saveTurn(sessionId, { turnId: l.turnId, answerId: l.answerId, seq: l.seq.toString(), text: l.text });
  }

  /** Applies one event of the turn's log; returns true when it was the last one. */
  function apply(seq: bigint, turnId: string, event: TurnEvent | undefined, question?: string): boolean {
    let l = live.current;
    if (l && l.turnId === turnId && seq <= l.seq) return false; // already applied (resumed stream)
    const kind = event?.kind;
    if (kind?.case === "started") {
      const started = kind.value;
      l = live.current = {
        turnId: started.turnId || turnId,
        answerId: started.answerMessageId,
        text: l?.answerId === started.answerMessageId ? l.text : "",
        stored: l?.answerId === started.answerMessageId ? l.stored : "",
        seq,
        stopping: false,
        steps: [],
        citations: [],
      };
      if (question !== undefined) {
        setPendingQuestion(null);
        setMessages((msgs) => {
          const list = (msgs ?? []).filter((m) => m.id !== started.questionMessageId && m.id !== started.answerMessageId);
          const asked = localMessage(started.questionMessageId, MessageRole.USER, MessageCategory.QUESTION, question);
          asked.attachments = asShown(sentFiles.current);
          return [...list, asked, localMessage(started.answerMessageId, MessageRole.ASSISTANT, MessageCategory.ANSWER, "", MessageStatus.STREAMING, turnId)];
        });
      }
      save();
      rerender(0);
      return false;
    }
    if (!l) return false;
    l.seq = seq;
    switch (kind?.case) {
      case "token":
        l.text += kind.value.text;
        break;
      case "citation":
        l.citations = kind.value.citations;
        break;
      case "node": {
        const node = kind.value;
        // A flow node is one entry per node id; an assistant's tool call one per call id (streamed twice).
        const same = (s: NodeEvent) => (node.tool ? s.tool?.callId === node.tool.callId : !s.tool && s.node?.nodeId === node.node?.nodeId);
        const i = l.steps.findIndex(same);
        if (i >= 0) l.steps[i] = node;
        else l.steps.push(node);
        break;
      }
      case "inputRequired":
        setPendingInput(kind.value);
        break;
      case "ended": {
        const answer = kind.value.answer;
        const answerId = l.answerId;
        if (answer) setMessages((msgs) => msgs?.map((m) => (m.id === answerId ? answer : m)));
        finish();
        return true;
      }
      case "error":
        setStreamError(kind.value.message || "The answer failed.");
        finish();
        return true;
    }
    save();
    rerender(0);
    return false;
  }

  function finish(): void {
    live.current = null;
    clearTurn(sessionId);
    rerender(0);
    // The stored messages are the truth (final status, usage, title); the session list shows the new preview.
    void refresh().catch((e) => setError(handleError(e)));
    onTurnEnded();
  }

  async function consume(events: AsyncIterable<{ seq: bigint; turnId: string; event?: TurnEvent }>, question?: string) {
    for await (const ev of events) {
      if (apply(ev.seq, ev.turnId, ev.event, question)) return;
    }
  }

  /** Follows a turn that was already running when the view loaded (a reload, or another tab's question). */
  async function follow(running: Message): Promise<void> {
    const saved = loadTurn(sessionId);
    const resume = saved && saved.turnId === running.turnId && saved.answerId === running.id;
    live.current = {
      turnId: running.turnId,
      answerId: running.id,
      text: resume ? saved.text : "",
      stored: running.content,
      seq: resume ? BigInt(saved.seq) : 0n,
      stopping: false,
      steps: [],
      citations: [],
    };
    rerender(0);
    const ctrl = (stream.current = new AbortController());
    try {
      await consume(tc.chat.streamTurnEvents({ turnId: running.turnId, afterSeq: live.current.seq }, { signal: ctrl.signal }));
      if (live.current && !ctrl.signal.aborted) finish(); // stream ended without a terminal event
    } catch (e) {
      if (ctrl.signal.aborted || isAbort(e)) return;
      setStreamError(`Lost the answer stream: ${handleError(e)}`);
      live.current = null;
      clearTurn(sessionId);
      await refresh().catch(() => undefined);
    }
  }

  async function send(content: string, input?: { nodeId: string; values: InputValues }, files: Pending[] = []) {
    epoch.current++;
    setError(null);
    setStreamError(null);
    const limit = parseInt(settings.maxTokens, 10);
    const temperature = parseFloat(settings.temperature);
    const ctrl = (stream.current = new AbortController());
    setPendingQuestion(content || (input ? "(form submitted)" : ""));
    sentFiles.current = files;
    setPendingInput(null);
    pinned.current = true;
    try {
      const events = tc.chat.chat(
        {
          sessionId,
          content,
          requestId: newRequestId(),
          ...(limit > 0 ? { maxTokens: limit } : {}),
          ...(temperature >= 0 && temperature <= 2 ? { temperature } : {}),
          ...(input ? { inputNodeId: input.nodeId, input: input.values } : {}),
          ...(files.length ? { attachments: await toAttachments(files) } : {}),
        },
        { signal: ctrl.signal },
      );
      await consume(events, content || JSON.stringify(input?.values ?? {}));
      if (live.current && !ctrl.signal.aborted) finish();
    } catch (e) {
      if (ctrl.signal.aborted || isAbort(e)) return;
      setPendingQuestion(null);
      if (live.current) {
        setStreamError(`Lost the answer stream: ${handleError(e)}`);
        live.current = null;
        clearTurn(sessionId);
        await refresh().catch(() => undefined);
      } else {
        setError(handleError(e)); // refused before the turn started (e.g. TURN_IN_PROGRESS, MODEL_OFFLINE)
        if (!input) {
          setDraft(content);
          if (files.length) pending.add(files.map((f) => f.file));
        }
      }
    } finally {
      setPendingQuestion(null);
    }
  }

  async function stop() {
    const l = live.current;
    if (!l) return;
    l.stopping = true;
    rerender(0);
    try {
      await tc.chat.stopTurn({ turnId: l.turnId });
    } catch (e) {
      l.stopping = false;
      setError(`Could not stop the answer: ${handleError(e)}`);
      rerender(0);
    }
  }

  const feedback = (m: Message, action: FeedbackAction, comment = "") =>
    act(async () => {
      const updated = (await tc.chat.setMessageFeedback({ messageId: m.id, action, comment })).message;
      if (updated) setMessages((msgs) => msgs?.map((x) => (x.id === m.id ? updated : x)));
    });

  /** Regenerate / edit and resend: the last question and its answer are deleted, and `question` is asked. */
  async function replaceLastTurn(question: string): Promise<void> {
    const msgs = messages ?? [];
    const lastQ = [...msgs].reverse().find((m) => m.category === MessageCategory.QUESTION);
    if (!lastQ || live.current || pendingQuestion !== null) return;
    const after = msgs.slice(msgs.indexOf(lastQ));
    epoch.current++;
    const replaced = await act(async () => {
      for (const m of after.reverse()) await tc.chat.deleteMessage({ messageId: m.id });
      setMessages((list) => list?.filter((m) => !after.includes(m)));
      await send(question);
    });
    if (!replaced) await refresh().catch(() => undefined);
  }

  function submit(e?: Event) {
    e?.preventDefault();
    const text = draft.trim();
    if (!text || live.current || pendingQuestion !== null) return;
    setDraft("");
    void send(text, undefined, pending.take());
  }

  const l = live.current;
  const busy = !!l || pendingQuestion !== null;

  if (own.error && !listed) return <Empty title="Chat not found">{own.error} Pick another chat from the list.</Empty>;

  return (
    <div class="conversation">
      <div class="pane-head">
        <div>
          <h2>{session?.title || "New chat"}</h2>
          <span class="muted">
            {isFlow ? "Flow" : session?.kind === SessionKind.ASSISTANT ? "Assistant" : "Model"}: {session?.appName || "…"}
            {session && session.kbIds.length > 0 ? ` · answers from ${plural(session.kbIds.length, "knowledge base")}` : ""}
          </span>
        </div>
        {!isFlow && session && (
          <div class="chat-settings" data-testid="chat-settings">
            <label class="tiny" title="Sampling temperature for this chat's answers, 0 to 2 (empty: the model's default)">
              Temperature
              <input
                name="temperature"
                type="number"
                min={0}
                max={2}
                step={0.1}
                placeholder="default"
                value={settings.temperature}
                onInput={(e) => {
                  const next = { ...settings, temperature: e.currentTarget.value };
                  setSettings(next);
                  saveSettings(sessionId, next);
                }}
              />
            </label>
            <label class="tiny" title="Maximum answer tokens for each question (empty: the model's default); kept for this chat">
              Max tokens
              <input
                name="max-tokens"
                type="number"
                min={1}
                placeholder="default"
                value={settings.maxTokens}
                onInput={(e) => {
                  const next = { ...settings, maxTokens: e.currentTarget.value };
                  setSettings(next);
                  saveSettings(sessionId, next);
                }}
              />
            </label>
          </div>
        )}
      </div>
      <div
        class="messages"
        data-testid="messages"
        onScroll={(e) => {
          const el = e.currentTarget;
          pinned.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
        }}
      >
        {!messages && !error && <Loading label="Loading messages…" />}
        {messages && messages.length === 0 && pendingQuestion === null && (
          <Empty title="Ask something">Type a question below; the answer streams in as the model writes it.</Empty>
        )}
        {messages?.map((m) => {
          const last = !busy && !isFlow && m.id === lastOf(messages, m.category)?.id && m.id === lastTurnMessage(messages, m)?.id;
          return (
            <MessageView
              key={m.id}
              message={m}
              live={l && l.answerId === m.id ? l : null}
              actions={{
                feedback: (action, comment) => feedback(m, action, comment),
                regenerate: last && m.category === MessageCategory.ANSWER ? () => void replaceLastTurn(questionOf(messages, m)) : undefined,
                edit: last && m.category === MessageCategory.QUESTION ? (text) => void replaceLastTurn(text) : undefined,
              }}
            />
          );
        })}
        {pendingQuestion !== null && !l && (
          <>
            <div class="msg user">
              <div class="bubble">{pendingQuestion}</div>
            </div>
            <div class="msg assistant">
              <div class="bubble">
                <Spinner label="Starting…" />
              </div>
            </div>
          </>
        )}
        <div ref={bottom} />
      </div>
      <ErrorBox error={streamError} />
      <ErrorBox error={error} />
      {pendingInput && isFlow && !busy && (
        <InputForm
          request={pendingInput}
          onSubmit={(values) =>
            void send(pendingInput.fields.length ? "" : String(values.text ?? ""), {
              nodeId: pendingInput.nodeId,
              values,
            })
          }
        />
      )}
      <PendingFiles files={pending.files} onRemove={pending.remove} />
      <form
        class={`composer${dragging ? " dragging" : ""}`}
        onSubmit={submit}
        data-testid="composer"
        onDragOver={(e) => {
          e.preventDefault();
          setDragging(true);
        }}
        onDragLeave={() => setDragging(false)}
        onDrop={(e) => {
          e.preventDefault();
          setDragging(false);
          if (e.dataTransfer?.files.length) pending.add(e.dataTransfer.files);
        }}
        onPaste={(e) => {
          const files = e.clipboardData?.files;
          if (files?.length) {
            e.preventDefault();
            pending.add(files);
          }
        }}
      >
        <textarea
          name="question"
          rows={2}
          placeholder={busy ? "Wait for the answer, or stop it…" : "Ask a question (Enter sends, Shift+Enter for a new line)"}
          value={draft}
          onInput={(e) => setDraft(e.currentTarget.value)}
          onKeyDown={(e) => {
            if (e.key === "Enter" && !e.shiftKey && !e.isComposing) submit(e);
          }}
        />
        <div class="composer-side">
          <button type="button" class="btn ghost" title="Attach files (or drop them here): images for vision models, documents read as text" onClick={() => picker.current?.click()}>
            Attach
          </button>
          <input
            ref={picker}
            type="file"
            name="attach"
            multiple
            hidden
            onChange={(e) => {
              const input = e.currentTarget;
              if (input.files?.length) pending.add(input.files);
              input.value = "";
            }}
          />
          {l ? (
            <button type="button" class="btn danger" onClick={stop} disabled={l.stopping} data-testid="stop">
              {l.stopping ? "Stopping…" : "Stop"}
            </button>
          ) : (
            <button type="submit" class="btn primary" disabled={busy || !draft.trim()}>
              Send
            </button>
          )}
        </div>
      </form>
    </div>
  );
}

function lastOf(messages: Message[], category: MessageCategory): Message | undefined {
  return [...messages].reverse().find((m) => m.category === category);
}
/** The last question or answer of the conversation that `m` is (only the last turn is regenerated or edited). */
function lastTurnMessage(messages: Message[], m: Message): Message | undefined {
  const turn = messages.filter((x) => x.category === MessageCategory.QUESTION || x.category === MessageCategory.ANSWER);
  const i = turn.indexOf(m);
  return i >= turn.length - 2 ? m : undefined;
}
function questionOf(messages: Message[], answer: Message): string {
  const i = messages.indexOf(answer);
  return [...messages.slice(0, i)].reverse().find((m) => m.category === MessageCategory.QUESTION)?.content ?? "";
}

type Actions = {
  feedback: (action: FeedbackAction, comment?: string) => Promise<unknown>;
  regenerate?: () => void;
  edit?: (text: string) => void;
};

function localMessage(id: string, role: MessageRole, category: MessageCategory, content: string, status = MessageStatus.COMPLETE, turnId = ""): Message {
  return { id, role, category, content, status, turnId, citations: [], steps: [], attachments: [] } as unknown as Message;
}

const STEP_TONE: Record<number, "ok" | "bad" | "warn" | "info" | "neutral"> = {
  [NodeRunStatus.RUNNING]: "info",
  [NodeRunStatus.WAITING_INPUT]: "warn",
  [NodeRunStatus.SUCCEEDED]: "ok",
  [NodeRunStatus.FAILED]: "bad",
  [NodeRunStatus.STOPPED]: "warn",
};

function MessageView({ message, live, actions }: { message: Message; live: Live | null; actions: Actions }) {
  const m = message;
  if (m.category === MessageCategory.GUIDE || m.category === MessageCategory.NOTICE) {
    return <div class="msg notice">{m.content}</div>;
  }
  if (m.role === MessageRole.USER) return <QuestionView message={m} onEdit={actions.edit} />;
  // While streaming: the longer of the stored text and the streamed text (both prefixes of the answer).
  const text = live ? (live.text.length >= live.stored.length ? live.text : live.stored) : m.content;
  const status = live
    ? "streaming"
    : m.status === MessageStatus.STOPPED
      ? "stopped"
      : m.status === MessageStatus.FAILED
        ? "failed"
        : m.status === MessageStatus.STREAMING
          ? "streaming"
          : "complete";
  const allSteps = live ? live.steps : m.steps;
  const steps = allSteps.filter((s) => s.node);
  const toolSteps = allSteps.flatMap((s) => (s.tool ? [s.tool] : []));
  const citations = live ? live.citations : m.citations;
  return (
    <div class="msg assistant" data-testid="answer" data-status={status} data-message-id={m.id}>
      {steps.length > 0 && (
        // The steps the flow took: names at a glance, each one's outputs or error when opened.
        <details class="steps" data-testid="steps">
          <summary>
            {steps.map((s, i) => (
              <Badge key={i} tone={STEP_TONE[s.node?.status ?? 0] ?? "neutral"}>
                {s.node?.nodeName || s.node?.nodeId}
                {/* a long step (embedding a large attachment) streams how far it got */}
                {s.node?.status === NodeRunStatus.RUNNING && typeof s.node.outputs?.progress === "string" && ` · ${s.node.outputs.progress}`}
              </Badge>
            ))}
          </summary>
          <ol class="step-list">
            {steps.map((s, i) => (
              <li key={i}>
                <b>{s.node?.nodeName || s.node?.nodeId}</b>{" "}
                {s.node?.elapsed && <span class="faint">{fmtMs(durationMs(s.node.elapsed))}</span>}
                {s.node?.error?.message && <div class="error-text">{s.node.error.message}</div>}
                {s.node?.outputs && Object.keys(s.node.outputs).length > 0 && <Json value={s.node.outputs} />}
              </li>
            ))}
          </ol>
        </details>
      )}
      <ToolSteps steps={toolSteps} />
      <div class="bubble">
        {m.category === MessageCategory.INPUT_REQUEST && m.inputRequired ? (
          <span class="muted">{m.inputRequired.prompt || text || "The flow is waiting for your input."}</span>
        ) : (
          // data-source: the Markdown the page rendered, for tests comparing it with what the server stored.
          <div class="answer-text" data-testid="answer-text" data-source={text}>
            <Markdown text={text} />
          </div>
        )}
        {live && !text && <Spinner label="Thinking…" />}
        {live && text && <span class="cursor" aria-hidden="true" />}
      </div>
      <div class="msg-meta">
        {live?.stopping && <Badge tone="warn">stopping…</Badge>}
        {live && !live.stopping && <Badge tone="info">streaming</Badge>}
        {status === "stopped" && <Badge tone="warn">Stopped</Badge>}
        {status === "failed" && <Badge tone="bad" title={m.error?.message}>Failed: {m.error?.message || "error"}</Badge>}
        {!live && m.finishReason === FinishReason.LENGTH && <Badge tone="neutral">max tokens reached</Badge>}
        {!live && m.usage && m.usage.completionTokens > 0 && m.category === MessageCategory.ANSWER && (
          <span class="faint">{m.usage.completionTokens} tokens</span>
        )}
        {!live && m.category === MessageCategory.ANSWER && status !== "streaming" && <AnswerActions message={m} actions={actions} />}
      </div>
      <Citations citations={citations} />
    </div>
  );
}


function QuestionView({ message: m, onEdit }: { message: Message; onEdit?: (text: string) => void }) {
  const [editing, setEditing] = useState<string | null>(null);
  if (editing !== null && onEdit) {
    return (
      <form
        class="msg user editing"
        data-testid="question-edit"
        onSubmit={(e) => {
          e.preventDefault();
          if (editing.trim()) onEdit(editing.trim());
          setEditing(null);
        }}
      >
        <textarea name="edit-question" rows={2} value={editing} onInput={(e) => setEditing(e.currentTarget.value)} />
        <div class="row-actions">
          <button class="btn small primary" type="submit" disabled={!editing.trim()}>
            Send
          </button>
          <button class="btn small ghost" type="button" onClick={() => setEditing(null)}>
            Cancel
          </button>
        </div>
      </form>
    );
  }
  return (
    <div class="msg user" data-testid="question">
      <MessageAttachments messageId={m.id} attachments={m.attachments} />
      <div class="bubble">{m.content}</div>
      {onEdit && (
        <button class="link-btn msg-action" onClick={() => setEditing(m.content)} title="Edit this question and ask it again">
          Edit
        </button>
      )}
    </div>
  );
}

function AnswerActions({ message: m, actions }: { message: Message; actions: Actions }) {
  const [copied, setCopied] = useState(false);
  const [commenting, setCommenting] = useState<string | null>(null);
  const liked = m.rating === MessageRating.LIKE;
  const disliked = m.rating === MessageRating.DISLIKE;
  return (
    <span class="answer-actions" data-testid="answer-actions" data-rating={liked ? "like" : disliked ? "dislike" : ""}>
      <button
        class="link-btn"
        onClick={() =>
          void copyText(m.content).then(() => {
            setCopied(true);
            window.setTimeout(() => setCopied(false), 1500);
            return actions.feedback(FeedbackAction.COPIED);
          })
        }
      >
        {copied ? "Copied" : "Copy"}
      </button>
      <button class={`link-btn${liked ? " on" : ""}`} aria-pressed={liked} title="Good answer" onClick={() => void actions.feedback(liked ? FeedbackAction.CANCEL : FeedbackAction.LIKE)}>
        👍 Like
      </button>
      <button
        class={`link-btn${disliked ? " on" : ""}`}
        aria-pressed={disliked}
        title="Bad answer (you may say why)"
        onClick={() => (disliked ? void actions.feedback(FeedbackAction.CANCEL) : setCommenting(""))}
      >
        👎 Dislike
      </button>
      {actions.regenerate && (
        <button class="link-btn" onClick={actions.regenerate} title="Ask the same question again, replacing this answer">
          Regenerate
        </button>
      )}
      {commenting !== null && (
        <form
          class="inline-form feedback-form"
          onSubmit={(e) => {
            e.preventDefault();
            void actions.feedback(FeedbackAction.DISLIKE, commenting.trim());
            setCommenting(null);
          }}
        >
          <input name="feedback-comment" placeholder="What was wrong? (optional)" value={commenting} onInput={(e) => setCommenting(e.currentTarget.value)} />
          <button class="btn small" type="submit">
            Send
          </button>
        </form>
      )}
      {m.feedbackComment && disliked && <span class="faint">“{m.feedbackComment}”</span>}
    </span>
  );
}
