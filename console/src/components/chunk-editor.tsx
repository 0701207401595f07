// One file's chunks, as the index holds them: paged, filtered by keyword, each editable (UpdateChunk re-embeds
// and re-indexes it), deletable, and a hand-written chunk can be added. The file's original is one click away.
import type { Chunk, KnowledgeFile } from "@typecase/client/gen/typecase/v1/knowledge_pb.js";
import { useEffect, useState } from "preact/hooks";
import { handleError, tc } from "../api";
import { FilePreview } from "./file-preview";
import { Badge, Empty, ErrorBox, Loading, plural } from "./ui";

const PAGE_SIZE = 20;

type Page = { chunks: Chunk[]; next: string; total: number };

export function ChunkEditor({ file, onChanged, onClose }: { file: KnowledgeFile; onChanged: () => void; onClose: () => void }) {
  const [keyword, setKeyword] = useState("");
  const [applied, setApplied] = useState("");
  const [page, setPage] = useState<Page | null>(null);
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [preview, setPreview] = useState(false);

  async function load(token = "") {
    setLoading(true);
    setError(null);
    try {
      const res = await tc.knowledge.listChunks({ kbId: file.kbId, fileId: file.id, keyword: applied, pageSize: PAGE_SIZE, pageToken: token });
      setPage((prev) => ({ chunks: token && prev ? [...prev.chunks, ...res.chunks] : res.chunks, next: res.nextPageToken, total: res.totalSize }));
    } catch (e) {
      setError(handleError(e));
    } finally {
      setLoading(false);
    }
  }
  useEffect(() => void load(), [file.id, applied]);

  function replace(chunk: Chunk) {
    setPage((p) => p && { ...p, chunks: p.chunks.map((c) => (c.id === chunk.id ? chunk : c)) });
  }

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

  return (
    <div class="chunk-editor card" data-testid="chunk-editor" data-file-name={file.name}>
      <div class="pane-head">
        <div>
          <h3>Chunks of {file.name}</h3>
          <span class="muted">Edits are re-embedded and re-indexed at once, and kept when the file is reprocessed.</span>
        </div>
        <span class="row-actions">
          <button class="btn small" aria-expanded={preview} onClick={() => setPreview(!preview)}>
            {preview ? "Hide original" : "Original file"}
          </button>
          <button class="btn small ghost" onClick={onClose}>
            Close
          </button>
        </span>
      </div>
      {preview && <FilePreview fileId={file.id} name={file.name} />}
      <form
        class="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          setApplied(keyword.trim());
        }}
      >
        <input name="chunk-keyword" class="grow" placeholder="Only chunks containing…" value={keyword} onInput={(e) => setKeyword(e.currentTarget.value)} />
        <button class="btn" type="submit">
          Filter
        </button>
        {page && (
          <span class="faint" data-testid="chunk-total">
            {plural(page.total, "chunk")}
          </span>
        )}
      </form>
      <ErrorBox error={error} />
      {loading && !page && <Loading label="Loading chunks…" />}
      {page && page.chunks.length === 0 && <Empty title="No chunks">{applied ? "None contains that text." : "This file has no chunks."}</Empty>}
      <ol class="chunks">
        {page?.chunks.map((c) => (
          <ChunkItem
            key={c.id}
            chunk={c}
            onSave={(text) =>
              act(async () => {
                const res = await tc.knowledge.updateChunk({ chunk: { id: c.id, text }, updateMask: { paths: ["text"] } });
                if (res.chunk) replace(res.chunk);
              })
            }
            onDelete={() =>
              act(async () => {
                await tc.knowledge.deleteChunk({ chunkId: c.id });
                setPage((p) => p && { ...p, chunks: p.chunks.filter((x) => x.id !== c.id), total: p.total - 1 });
                onChanged();
              })
            }
          />
        ))}
      </ol>
      {page?.next && (
        <button class="btn small" disabled={loading} onClick={() => void load(page.next)}>
          {loading ? "Loading…" : "More chunks"}
        </button>
      )}
      <AddChunk
        onAdd={(text) =>
          act(async () => {
            const res = await tc.knowledge.addChunk({ fileId: file.id, chunk: { text } });
            const added = res.chunk;
            if (added) setPage((p) => (p ? { ...p, chunks: [...p.chunks, added], total: p.total + 1 } : p));
            onChanged();
          })
        }
      />
    </div>
  );
}

function ChunkItem({ chunk: c, onSave, onDelete }: { chunk: Chunk; onSave: (text: string) => Promise<boolean>; onDelete: () => void }) {
  const [draft, setDraft] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [confirm, setConfirm] = useState(false);
  return (
    <li class="chunk" data-testid="chunk" data-chunk-index={c.index}>
      <div class="chunk-head faint small">
        #{c.index}
        {c.page > 0 && ` · page ${c.page}`} · {plural(c.tokenCount, "token")}
        {c.edited && (
          <>
            {" "}
            <Badge tone="info">{c.added ? "added" : "edited"}</Badge>
          </>
        )}
        <span class="row-actions">
          {draft === null && (
            <button class="link-btn" onClick={() => setDraft(c.text)}>
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
      {draft === null ? (
        <div class="chunk-text" data-testid="chunk-text">
          {c.text}
        </div>
      ) : (
        <form
          class="stack"
          onSubmit={async (e) => {
            e.preventDefault();
            setBusy(true);
            if (await onSave(draft)) setDraft(null);
            setBusy(false);
          }}
        >
          <textarea name="chunk-text" rows={Math.min(12, Math.max(3, draft.split("\n").length + 1))} value={draft} onInput={(e) => setDraft(e.currentTarget.value)} />
          <div class="row-actions">
            <button class="btn small primary" type="submit" disabled={busy || !draft.trim() || draft === c.text}>
              {busy ? "Saving…" : "Save"}
            </button>
            <button class="btn small ghost" type="button" onClick={() => setDraft(null)}>
              Cancel
            </button>
          </div>
        </form>
      )}
    </li>
  );
}

function AddChunk({ onAdd }: { onAdd: (text: string) => Promise<boolean> }) {
  const [text, setText] = useState("");
  const [busy, setBusy] = useState(false);
  return (
    <form
      class="stack add-chunk"
      data-testid="add-chunk"
      onSubmit={async (e) => {
        e.preventDefault();
        setBusy(true);
        if (await onAdd(text.trim())) setText("");
        setBusy(false);
      }}
    >
      <textarea name="new-chunk" rows={3} placeholder="A passage to add to this file (embedded and indexed at once)" value={text} onInput={(e) => setText(e.currentTarget.value)} />
      <div>
        <button class="btn small" type="submit" disabled={busy || !text.trim()}>
          {busy ? "Adding…" : "Add chunk"}
        </button>
      </div>
    </form>
  );
}
