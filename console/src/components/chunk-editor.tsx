// One file's chunks, as the index holds them: paged, filtered by keyword, each editable (UpdateChunk re-embeds
// and re-indexes it), deletable, and a hand-written chunk can be added. The file's original is one click away.
import type { Chunk, KnowledgeFile } from "@typecase/client/gen/typecase/v1/knowledge_pb.js";
import { useState } from "preact/hooks";
import { tc } from "../api";
import { FilePreview } from "./file-preview";
import { type ListWords, PagedList, RowActions, usePagedList } from "./paged-list";
import { Badge, plural } from "./ui";

const PAGE_SIZE = 20;
const WORDS: ListWords = { noun: "chunk", filterName: "chunk-keyword", totalTestId: "chunk-total", emptyText: "This file has no chunks." };

export function ChunkEditor({ file, onChanged, onClose }: { file: KnowledgeFile; onChanged: () => void; onClose: () => void }) {
  const list = usePagedList<Chunk>(async (keyword, pageToken) => {
    const res = await tc.knowledge.listChunks({ kbId: file.kbId, fileId: file.id, keyword, pageSize: PAGE_SIZE, pageToken });
    return { items: res.chunks, next: res.nextPageToken, total: res.totalSize };
  }, file.id);
  const [preview, setPreview] = useState(false);

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
      <PagedList list={list} words={WORDS}>
        {(c) => (
          <ChunkItem
            key={c.id}
            chunk={c}
            onSave={(text) =>
              list.act(async () => {
                const res = await tc.knowledge.updateChunk({ chunk: { id: c.id, text }, updateMask: { paths: ["text"] } });
                if (res.chunk) list.replace(res.chunk);
              })
            }
            onDelete={() =>
              list.act(async () => {
                await tc.knowledge.deleteChunk({ chunkId: c.id });
                list.remove(c.id);
                onChanged();
              })
            }
          />
        )}
      </PagedList>
      <AddChunk
        onAdd={(text) =>
          list.act(async () => {
            const res = await tc.knowledge.addChunk({ fileId: file.id, chunk: { text } });
            if (res.chunk) list.append(res.chunk);
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
        <RowActions editing={draft !== null} onEdit={() => setDraft(c.text)} onDelete={onDelete} />
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
