// A question-answer knowledge base's pairs: paged, filtered by keyword, each editable (question, similar
// questions one a line, answer) and deletable; a pair can be written by hand, and a csv/xlsx table imported (an
// upload processed in the background: the result, pairs imported or the row that failed, is shown once done).
import { FileStatus, type KnowledgeBase, type QAPair } from "@typecase/client/gen/typecase/v1/knowledge_pb.js";
import { useEffect, useRef, useState } from "preact/hooks";
import { handleError, tc } from "../api";
import { Empty, ErrorBox, Loading, plural } from "./ui";

const PAGE_SIZE = 20;
const IMPORT_POLL_MS = 500;

type Page = { pairs: QAPair[]; next: string; total: number };
type Fields = { question: string; similar: string; answer: string };
type Imported = { name: string; ok: boolean; text: string };

const lines = (text: string) =>
  text
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);

export function QAPairs({ kb, onChanged }: { kb: KnowledgeBase; onChanged: () => void }) {
  const [keyword, setKeyword] = useState("");
  const [applied, setApplied] = useState("");
  const [page, setPage] = useState<Page | null>(null);
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [importing, setImporting] = useState<string | null>(null);
  const [imported, setImported] = useState<Imported | null>(null);
  const picker = useRef<HTMLInputElement>(null);

  async function load(token = "") {
    setLoading(true);
    setError(null);
    try {
      const res = await tc.knowledge.listQAPairs({ kbId: kb.id, keyword: applied, pageSize: PAGE_SIZE, pageToken: token });
      setPage((prev) => ({ pairs: token && prev ? [...prev.pairs, ...res.qaPairs] : res.qaPairs, next: res.nextPageToken, total: res.totalSize }));
    } catch (e) {
      setError(handleError(e));
    } finally {
      setLoading(false);
    }
  }
  useEffect(() => void load(), [kb.id, applied]);

  async function act(work: () => Promise<void>): Promise<boolean> {
    setError(null);
    try {
      await work();
      return true;
    } catch (e) {
      setError(handleError(e));
      return false;
    }
  }

  async function importTable(file: File) {
    setImporting(file.name);
    setImported(null);
    try {
      const stored = (await tc.knowledge.uploadFile(kb.id, file)).file;
      let current = stored;
      while (current && current.status !== FileStatus.DONE && current.status !== FileStatus.FAILED) {
        await new Promise((r) => window.setTimeout(r, IMPORT_POLL_MS));
        current = (await tc.knowledge.getFile({ fileId: current.id })).file;
      }
      if (current?.status === FileStatus.DONE) {
        setImported({ name: file.name, ok: true, text: `Imported ${plural(current.chunkCount, "pair")} from ${file.name}.` });
      } else {
        setImported({ name: file.name, ok: false, text: `${file.name} was not imported: ${current?.error?.message ?? "it failed"}` });
      }
      onChanged();
      await load();
    } catch (e) {
      setImported({ name: file.name, ok: false, text: `${file.name} was not imported: ${handleError(e)}` });
    } finally {
      setImporting(null);
    }
  }

  return (
    <div class="qa-pairs card" data-testid="qa-pairs">
      <div class="pane-head">
        <div>
          <h3>Question-answer pairs</h3>
          <span class="muted">Searches match the questions (and similar questions); a hit returns the answer.</span>
        </div>
        <span class="row-actions">
          <button class="btn small" disabled={importing !== null} onClick={() => picker.current?.click()}>
            {importing ? `Importing ${importing}…` : "Import csv / xlsx…"}
          </button>
          <input
            ref={picker}
            type="file"
            name="qa-import"
            accept=".csv,.xlsx,text/csv,application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            hidden
            onChange={(e) => {
              const input = e.currentTarget;
              const file = input.files?.[0];
              input.value = "";
              if (file) void importTable(file);
            }}
          />
        </span>
      </div>
      <p class="hint small">A table's columns: question, answer and similar questions (several in one cell, one a line), by header or in that order.</p>
      {imported && (
        <div class={imported.ok ? "notice-box" : "error-text"} data-testid="qa-import-result" data-ok={String(imported.ok)}>
          {imported.text}
        </div>
      )}
      <form
        class="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          setApplied(keyword.trim());
        }}
      >
        <input name="qa-keyword" class="grow" placeholder="Only pairs containing…" value={keyword} onInput={(e) => setKeyword(e.currentTarget.value)} />
        <button class="btn" type="submit">
          Filter
        </button>
        {page && (
          <span class="faint" data-testid="qa-total">
            {plural(page.total, "pair")}
          </span>
        )}
      </form>
      <ErrorBox error={error} />
      {loading && !page && <Loading label="Loading pairs…" />}
      {page && page.pairs.length === 0 && <Empty title="No pairs">{applied ? "None contains that text." : "Write one below or import a table."}</Empty>}
      <ol class="chunks">
        {page?.pairs.map((p) => (
          <PairItem
            key={p.id}
            pair={p}
            onSave={(f) =>
              act(async () => {
                const res = await tc.knowledge.updateQAPair({
                  qaPair: { id: p.id, question: f.question.trim(), similarQuestions: lines(f.similar), answer: f.answer.trim() },
                  updateMask: { paths: ["question", "similar_questions", "answer"] },
                });
                const saved = res.qaPair;
                if (saved) setPage((pg) => pg && { ...pg, pairs: pg.pairs.map((x) => (x.id === saved.id ? saved : x)) });
              })
            }
            onDelete={() =>
              act(async () => {
                await tc.knowledge.deleteQAPair({ pairId: p.id });
                setPage((pg) => pg && { ...pg, pairs: pg.pairs.filter((x) => x.id !== p.id), total: pg.total - 1 });
                onChanged();
              })
            }
          />
        ))}
      </ol>
      {page?.next && (
        <button class="btn small" disabled={loading} onClick={() => void load(page.next)}>
          {loading ? "Loading…" : "More pairs"}
        </button>
      )}
      <h4>Add a pair</h4>
      <PairForm
        testId="add-qa-pair"
        submitLabel="Add pair"
        initial={{ question: "", similar: "", answer: "" }}
        clearOnSave
        onSave={(f) =>
          act(async () => {
            const res = await tc.knowledge.createQAPair({
              kbId: kb.id,
              qaPair: { question: f.question.trim(), similarQuestions: lines(f.similar), answer: f.answer.trim() },
            });
            const added = res.qaPair;
            if (added) setPage((pg) => (pg ? { ...pg, pairs: [...pg.pairs, added], total: pg.total + 1 } : pg));
            onChanged();
          })
        }
      />
    </div>
  );
}

function PairItem({ pair: p, onSave, onDelete }: { pair: QAPair; onSave: (f: Fields) => Promise<boolean>; onDelete: () => void }) {
  const [editing, setEditing] = useState(false);
  const [confirm, setConfirm] = useState(false);
  return (
    <li class="chunk" data-testid="qa-pair" data-pair-id={p.id}>
      <div class="chunk-head faint small">
        {p.fileName}
        <span class="row-actions">
          {!editing && (
            <button class="link-btn" onClick={() => setEditing(true)}>
              Edit
            </button>
          )}
          {confirm ? (
            <>
              <button class="btn small danger" onClick={onDelete}>
                Delete
              </button>
              <button class="btn small ghost" onClick={() => setConfirm(false)}>
                Keep
              </button>
            </>
          ) : (
            <button class="link-btn" onClick={() => setConfirm(true)}>
              Delete…
            </button>
          )}
        </span>
      </div>
      {editing ? (
        <PairForm
          testId="edit-qa-pair"
          submitLabel="Save"
          initial={{ question: p.question, similar: p.similarQuestions.join("\n"), answer: p.answer }}
          onSave={async (f) => {
            const ok = await onSave(f);
            if (ok) setEditing(false);
            return ok;
          }}
          onCancel={() => setEditing(false)}
        />
      ) : (
        <div class="stack">
          <b data-testid="qa-question">{p.question}</b>
          {p.similarQuestions.length > 0 && (
            <ul class="faint small" data-testid="qa-similar">
              {p.similarQuestions.map((q, i) => (
                <li key={i}>{q}</li>
              ))}
            </ul>
          )}
          <div class="chunk-text" data-testid="qa-answer">
            {p.answer}
          </div>
        </div>
      )}
    </li>
  );
}

function PairForm({
  testId,
  submitLabel,
  initial,
  clearOnSave,
  onSave,
  onCancel,
}: {
  testId: string;
  submitLabel: string;
  initial: Fields;
  clearOnSave?: boolean;
  onSave: (f: Fields) => Promise<boolean>;
  onCancel?: () => void;
}) {
  const [fields, setFields] = useState<Fields>(initial);
  const [busy, setBusy] = useState(false);
  const set = (k: keyof Fields) => (e: Event) => setFields((f) => ({ ...f, [k]: (e.currentTarget as HTMLInputElement).value }));
  return (
    <form
      class="stack"
      data-testid={testId}
      onSubmit={async (e) => {
        e.preventDefault();
        setBusy(true);
        if ((await onSave(fields)) && clearOnSave) setFields(initial);
        setBusy(false);
      }}
    >
      <input name="qa-question" placeholder="Question" value={fields.question} onInput={set("question")} />
      <textarea name="qa-similar" rows={2} placeholder="Similar questions, one a line (optional)" value={fields.similar} onInput={set("similar")} />
      <textarea name="qa-answer" rows={3} placeholder="Answer" value={fields.answer} onInput={set("answer")} />
      <div class="row-actions">
        <button class="btn small primary" type="submit" disabled={busy || !fields.question.trim() || !fields.answer.trim()}>
          {busy ? "Saving…" : submitLabel}
        </button>
        {onCancel && (
          <button class="btn small ghost" type="button" onClick={onCancel}>
            Cancel
          </button>
        )}
      </div>
    </form>
  );
}
