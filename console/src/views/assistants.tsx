// Assistants: build a tool-using assistant (model, instructions, tools, knowledge, opening message, suggested
// questions, limits), try it in a real chat beside the form, and publish it so everyone can chat with it.
import { AssistantScope, AssistantStatus, type Assistant } from "@typecase/client/gen/typecase/v1/assistant_pb.js";
import { useState } from "preact/hooks";
import { tc } from "../api";
import { AssistantForm } from "../components/assistant-form";
import { AssistantTry } from "../components/assistant-try";
import { PublishDialog } from "../components/publish-dialog";
import { ShareDialog } from "../components/share-dialog";
import { Badge, Empty, ErrorBox, Loading, fmtTime, plural, useAction, useAsync } from "../components/ui";
import { linkClick, navigate } from "../router";

export function AssistantsView({ assistantId }: { assistantId?: string }) {
  const list = useAsync(async () => (await tc.assistants.listAssistants({ scope: AssistantScope.MINE_AND_ONLINE, pageSize: 200 })).assistants, []);
  const current = list.data?.find((a) => a.id === assistantId);

  function replace(a: Assistant) {
    list.setData((prev) => [a, ...(prev ?? []).filter((x) => x.id !== a.id)]);
  }

  return (
    <div class="split">
      <aside class="sidebar">
        <div class="sidebar-head">
          <a class="btn primary" href="/assistants/new" onClick={linkClick}>
            New assistant
          </a>
        </div>
        <ErrorBox error={list.error} onRetry={list.reload} />
        {list.loading && !list.data && <Loading label="Loading assistants…" />}
        {list.data?.length === 0 && <Empty title="No assistants yet">Create one: a model, instructions and the tools it may call.</Empty>}
        <ul class="list" data-testid="assistant-list">
          {list.data?.map((a) => (
            <li key={a.id} class={a.id === assistantId ? "active" : ""} data-assistant-name={a.name}>
              <a class="list-link" href={`/assistants/${a.id}`} onClick={linkClick}>
                <span class="list-title">
                  {a.name} {a.status === AssistantStatus.ONLINE ? <Badge tone="ok">online</Badge> : <Badge>draft</Badge>}
                </span>
                <span class="list-sub">
                  {plural(a.toolIds.length, "tool")} · {a.description || "no description"}
                </span>
              </a>
            </li>
          ))}
        </ul>
      </aside>
      <section class="main-pane scroll">
        {assistantId === "new" && (
          <div class="detail">
            <div class="pane-head">
              <h2>New assistant</h2>
            </div>
            <AssistantForm
              onSaved={(a) => {
                replace(a);
                navigate(`/assistants/${a.id}`);
              }}
            />
          </div>
        )}
        {!assistantId && (
          <Empty title="Assistants">
            An assistant is a model with instructions, tools from the catalogue and knowledge bases. It answers by calling
            tools as it needs them. Build one, try it beside the form, and publish it for everyone.
          </Empty>
        )}
        {assistantId && assistantId !== "new" && list.data && !current && <Empty title="Assistant not found">It may have been deleted.</Empty>}
        {current && <AssistantDetail key={current.id} assistant={current} onChanged={replace} onDeleted={list.reload} />}
      </section>
    </div>
  );
}

function AssistantDetail({ assistant: a, onChanged, onDeleted }: { assistant: Assistant; onChanged: (a: Assistant) => void; onDeleted: () => Promise<void> }) {
  const { busy, error, act } = useAction();
  const [confirm, setConfirm] = useState(false);
  const [panel, setPanel] = useState<"share" | "publish" | null>(null);
  const online = a.status === AssistantStatus.ONLINE;

  return (
    <div class="detail" data-testid="assistant-detail" data-status={online ? "online" : "draft"}>
      <div class="pane-head">
        <div>
          <h2>
            {a.name} {online ? <Badge tone="ok">online</Badge> : <Badge>draft</Badge>}
          </h2>
          <span class="muted">
            {a.description || "No description"} · changed {fmtTime(a.updateTime)}
          </span>
        </div>
        <span class="row-actions">
          <button
            class={`btn small${online ? "" : " primary"}`}
            disabled={busy}
            onClick={() =>
              act(async () => {
                const res = online ? await tc.assistants.unpublishAssistant({ assistantId: a.id }) : await tc.assistants.publishAssistant({ assistantId: a.id });
                if (res.assistant) onChanged(res.assistant);
              })
            }
          >
            {online ? "Unpublish" : "Publish"}
          </button>
          <button class="btn small" onClick={() => setPanel((p) => (p === "share" ? null : "share"))}>
            Share
          </button>
          <button class="btn small" onClick={() => setPanel((p) => (p === "publish" ? null : "publish"))}>
            Publish as API
          </button>
          {confirm ? (
            <>
              <button
                class="btn small danger"
                onClick={() =>
                  act(async () => {
                    await tc.assistants.deleteAssistant({ assistantId: a.id });
                    await onDeleted();
                    navigate("/assistants");
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
              Delete…
            </button>
          )}
        </span>
      </div>
      <ErrorBox error={error} />
      {panel === "share" && <ShareDialog resourceType="assistant" resourceId={a.id} title={a.name} onClose={() => setPanel(null)} />}
      {panel === "publish" && <PublishDialog kind="assistant" id={a.id} title={a.name} onClose={() => setPanel(null)} />}
      <div class="builder">
        <AssistantForm assistant={a} onSaved={onChanged} />
        <AssistantTry key={a.updateTime ? String(a.updateTime.seconds) + a.updateTime.nanos : ""} assistant={a} />
      </div>
    </div>
  );
}
