// A question-answer knowledge base's pairs: paged, filtered by keyword, each editable (question, similar
// questions one a line, answer) and deletable; a pair can be written by hand, and a csv/xlsx table imported (an
// upload processed in the background: the result, pairs imported or the row that failed, is shown once done).
import { FileStatus, type KnowledgeBase, type QAPair } from "@typecase/client/gen/typecase/v1/knowledge_pb.js";
import { useRef, useState } from "preact/hooks";
import { handleError, tc } from "../api";
import { type ListWords, PagedList, RowActions, usePagedList } from "./paged-list";
import { plural } from "./ui";

const PAGE_SIZE = 20;
const IMPORT_POLL_MS = 500;
const WORDS: ListWords = { noun: "pair", filterName: "qa-keyword", totalTestId: "qa-total", emptyText: "Write one below or import a table." };

type Fields = { question: string; similar: string; answer: string };
type Imported = { name: string; ok: boolean; text: string };

const lines = (text: string) =>
  text
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);

export function QAPairs({ kb, onChanged }: { kb: KnowledgeBase; onChanged: () => void }) {
  const list = usePagedList<QAPair>(async (keyword, pageToken) => {
    const res = await tc.knowledge.listQAPairs({ kbId: kb.id, keyword, pageSize: PAGE_SIZE, pageToken });
    return { items: res.qaPairs, next: res.nextPageToken, total: res.totalSize };
  }, kb.id);
  const [importing, setImporting] = useState<string | null>(null);
  const [imported, setImported] = useState<Imported | null>(null);
  const picker = useRef<HTMLInputElement>(null);

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
      await list.load();
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
      <PagedList list={list} words={WORDS}>
        {(p) => (
          <PairItem
            key={p.id}
            pair={p}
            onSave={(f) =>
              list.act(async () => {
                const res = await tc.knowledge.updateQAPair({
                  qaPair: { id: p.id, question: f.question.trim(), similarQuestions: lines(f.similar), answer: f.answer.trim() },
                  updateMask: { paths: ["question", "similar_questions", "answer"] },
                });
                if (res.qaPair) list.replace(res.qaPair);
              })
            }
            onDelete={() =>
              list.act(async () => {
                await tc.knowledge.deleteQAPair({ pairId: p.id });
                list.remove(p.id);
                onChanged();
              })
            }
          />
        )}
      </PagedList>
      <h4>Add a pair</h4>
      <PairForm
        testId="add-qa-pair"
        submitLabel="Add pair"
        initial={{ question: "", similar: "", answer: "" }}
        clearOnSave
        onSave={(f) =>
          list.act(async () => {
            const res = await tc.knowledge.createQAPair({
              kbId: kb.id,
              qaPair: { question: f.question.trim(), similarQuestions: lines(f.similar), answer: f.answer.trim() },
            });
            if (res.qaPair) list.append(res.qaPair);
            onChanged();
          })
        }
      />
    </div>
  );
}

function PairItem({ pair: p, onSave, onDelete }: { pair: QAPair; onSave: (f: Fields) => Promise<boolean>; onDelete: () => void }) {
  const [editing, setEditing] = useState(false);
  return (
    <li class="chunk" data-testid="qa-pair" data-pair-id={p.id}>
      <div class="chunk-head faint small">
        {p.fileName}
        <RowActions editing={editing} onEdit={() => setEditing(true)} onDelete={onDelete} />
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
