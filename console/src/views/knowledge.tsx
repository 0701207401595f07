// Knowledge bases: create and list them, upload files with a progress bar, follow each file's processing
// live (WatchFile), and try searches against them (hit test) with the scores that ranked each hit. A file's
// chunks open in the chunk editor (/knowledge/<kb>/<file>).
import {
  FileStatus,
  KnowledgeBaseKind,
  SearchMode,
  type KnowledgeBase,
  type KnowledgeFile,
  type SearchResponse,
} from "@typecase/client/gen/typecase/v1/knowledge_pb.js";
import { useEffect, useRef, useState } from "preact/hooks";
import { handleError, isAbort, tc } from "../api";
import { ChunkEditor } from "../components/chunk-editor";
import { QAPairs } from "../components/qa-pairs";
import { ShareDialog } from "../components/share-dialog";
import { Badge, Empty, ErrorBox, Loading, ProgressBar, Spinner, durationMs, fmtBytes, fmtMs, fmtTime, plural, useAction, useAsync, useInterval, type Tone } from "../components/ui";
import { linkClick, navigate } from "../router";

const MAX_WATCHES = 3; // live WatchFile streams at once; other files in progress are polled

const STATUS: Record<number, { label: string; tone: Tone }> = {
  [FileStatus.UNSPECIFIED]: { label: "unknown", tone: "neutral" },
  [FileStatus.QUEUED]: { label: "queued", tone: "neutral" },
  [FileStatus.PARSING]: { label: "parsing", tone: "info" },
  [FileStatus.EMBEDDING]: { label: "embedding", tone: "info" },
  [FileStatus.INDEXING]: { label: "indexing", tone: "info" },
  [FileStatus.DONE]: { label: "ready", tone: "ok" },
  [FileStatus.FAILED]: { label: "failed", tone: "bad" },
};

const terminal = (s: FileStatus) => s === FileStatus.DONE || s === FileStatus.FAILED;

export function KnowledgeView({ kbId, fileId }: { kbId?: string; fileId?: string }) {
  const kbs = useAsync(async () => (await tc.knowledge.listKnowledgeBases({ pageSize: 200 })).knowledgeBases, []);
  const current = kbs.data?.find((k) => k.id === kbId);

  return (
    <div class="split">
      <aside class="sidebar">
        <CreateKnowledgeBase
          onCreated={async (kb) => {
            await kbs.reload();
            navigate(`/knowledge/${kb.id}`);
          }}
        />
        <ErrorBox error={kbs.error} onRetry={kbs.reload} />
        {kbs.loading && !kbs.data && <Loading label="Loading knowledge bases…" />}
        {kbs.data && kbs.data.length === 0 && <Empty title="No knowledge bases yet">Create one above, then upload documents to it.</Empty>}
        <ul class="list" data-testid="kb-list">
          {kbs.data?.map((kb) => (
            <li key={kb.id} class={kb.id === kbId ? "active" : ""}>
              <a class="list-link" href={`/knowledge/${kb.id}`} onClick={linkClick}>
                <span class="list-title">{kb.name}</span>
                <span class="list-sub">
                  {plural(kb.fileCount, "file")} · {plural(kb.chunkCount, "chunk")} · {fmtBytes(kb.totalSizeBytes)}
                </span>
              </a>
            </li>
          ))}
        </ul>
      </aside>
      <section class="main-pane scroll">
        {!kbId && (
          <Empty title="Knowledge bases">
            A knowledge base holds documents that are parsed, cut into chunks, embedded and indexed, so chats and flows
            can search them. Create one on the left, upload files, and try a search.
          </Empty>
        )}
        {kbId && kbs.data && !current && <Empty title="Knowledge base not found">It may have been deleted.</Empty>}
        {current && <KnowledgeBaseDetail key={current.id} kb={current} openFileId={fileId} onChanged={kbs.reload} />}
      </section>
    </div>
  );
}

function CreateKnowledgeBase({ onCreated }: { onCreated: (kb: KnowledgeBase) => void }) {
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [kind, setKind] = useState<KnowledgeBaseKind>(KnowledgeBaseKind.DOCUMENTS);
  const { busy, error, act } = useAction();

  function submit(e: Event) {
    e.preventDefault();
    void act(async () => {
      const res = await tc.knowledge.createKnowledgeBase({ knowledgeBase: { name: name.trim(), description: description.trim(), kind } });
      setName("");
      setDescription("");
      if (res.knowledgeBase) onCreated(res.knowledgeBase);
    });
  }

  return (
    <form class="sidebar-head stack" onSubmit={submit} data-testid="create-kb">
      <input name="kb-name" placeholder="New knowledge base name" value={name} onInput={(e) => setName(e.currentTarget.value)} required />
      <input name="kb-description" placeholder="Description (optional)" value={description} onInput={(e) => setDescription(e.currentTarget.value)} />
      <select name="kb-kind" value={String(kind)} onChange={(e) => setKind(Number(e.currentTarget.value) as KnowledgeBaseKind)}>
        <option value={String(KnowledgeBaseKind.DOCUMENTS)}>Documents</option>
        <option value={String(KnowledgeBaseKind.QA)}>Question-answer pairs</option>
      </select>
      <button class="btn primary" type="submit" disabled={busy || !name.trim()}>
        {busy ? "Creating…" : "Create knowledge base"}
      </button>
      <ErrorBox error={error} />
    </form>
  );
}

type Upload = { key: string; name: string; sent: number; total: number; error?: string; done?: boolean };

function KnowledgeBaseDetail({ kb, openFileId, onChanged }: { kb: KnowledgeBase; openFileId?: string; onChanged: () => void }) {
  const files = useAsync(async () => (await tc.knowledge.listFiles({ kbId: kb.id, pageSize: 200 })).files, [kb.id]);
  const [uploads, setUploads] = useState<Upload[]>([]);
  const [dragging, setDragging] = useState(false);
  const { error, setError, act } = useAction();
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [sharing, setSharing] = useState(false);
  const watches = useRef(new Map<string, AbortController>());
  const picker = useRef<HTMLInputElement>(null);

  const list = files.data ?? [];
  const inProgress = list.filter((f) => !terminal(f.status));

  function patchFile(id: string, patch: Partial<KnowledgeFile>) {
    files.setData((prev) => (prev ?? []).map((f) => (f.id === id ? ({ ...f, ...patch } as KnowledgeFile) : f)));
  }
  // Stream callbacks outlive renders: they reach the current state through a ref.
  const filesRef = useRef(files);
  filesRef.current = files;

  // Live status: a WatchFile stream for the first few files in progress; the rest are polled below.
  useEffect(() => {
    for (const f of inProgress) {
      if (watches.current.has(f.id) || watches.current.size >= MAX_WATCHES) continue;
      const ctrl = new AbortController();
      watches.current.set(f.id, ctrl);
      (async () => {
        try {
          for await (const ev of tc.knowledge.watchFile({ fileId: f.id }, { signal: ctrl.signal })) {
            filesRef.current.setData((prev) =>
              (prev ?? []).map((x) =>
                x.id === ev.fileId
                  ? ({ ...x, status: ev.status, progressPercent: ev.progressPercent, chunkCount: ev.chunkCount, error: ev.error } as KnowledgeFile)
                  : x,
              ),
            );
          }
        } catch (e) {
          if (!isAbort(e)) handleError(e);
        } finally {
          watches.current.delete(f.id);
          if (!ctrl.signal.aborted) {
            onChanged(); // counts in the sidebar
            void filesRef.current.reload();
          }
        }
      })();
    }
  });
  useEffect(() => () => watches.current.forEach((c) => c.abort()), []);
  useInterval(() => void files.reload(), inProgress.length > watches.current.size ? 2000 : null);

  async function upload(chosen: FileList | File[]) {
    setError(null);
    for (const file of Array.from(chosen)) {
      const key = `${Date.now()}-${file.name}`;
      const update = (patch: Partial<Upload>) => setUploads((u) => u.map((x) => (x.key === key ? { ...x, ...patch } : x)));
      setUploads((u) => [...u, { key, name: file.name, sent: 0, total: file.size }]);
      try {
        const res = await tc.knowledge.uploadFile(kb.id, file, { onProgress: (sent: number, total: number) => update({ sent, total }) });
        update({ sent: file.size, done: true });
        const stored = res.file;
        if (stored) files.setData((prev) => [stored, ...(prev ?? []).filter((f) => f.id !== stored.id)]);
        window.setTimeout(() => setUploads((u) => u.filter((x) => x.key !== key)), 1500);
      } catch (e) {
        update({ error: handleError(e) });
      }
    }
    onChanged();
  }

  const remove = (file: KnowledgeFile) =>
    act(async () => {
      watches.current.get(file.id)?.abort();
      await tc.knowledge.deleteFile({ fileId: file.id });
      files.setData((prev) => (prev ?? []).filter((f) => f.id !== file.id));
      onChanged();
    });
  const reprocess = (file: KnowledgeFile) =>
    act(async () => {
      const res = await tc.knowledge.reprocessFile({ fileId: file.id });
      if (res.file) patchFile(file.id, res.file);
    });
  const deleteKb = () => act(async () => (await tc.knowledge.deleteKnowledgeBase({ kbId: kb.id }), onChanged(), navigate("/knowledge")));

  return (
    <div class="detail">
      <div class="pane-head">
        <div>
          <h2>{kb.name}</h2>
          <span class="muted">
            {kb.description || "No description"} · {plural(kb.fileCount, "file")} · {plural(kb.chunkCount, "chunk")}
          </span>
        </div>
        {confirmDelete ? (
          <span class="row-actions">
            <span class="muted">Delete it with all its files?</span>
            <button class="btn small danger" onClick={deleteKb}>
              Delete
            </button>
            <button class="btn small ghost" onClick={() => setConfirmDelete(false)}>
              Keep
            </button>
          </span>
        ) : (
          <span class="row-actions">
            <button class="btn small" onClick={() => setSharing((v) => !v)}>
              Share
            </button>
            <button class="btn small ghost" onClick={() => setConfirmDelete(true)}>
              Delete knowledge base
            </button>
          </span>
        )}
      </div>
      <ErrorBox error={error} />
      {sharing && <ShareDialog resourceType="knowledge_base" resourceId={kb.id} title={kb.name} onClose={() => setSharing(false)} />}
      {kb.kind === KnowledgeBaseKind.QA && (
        <QAPairs
          kb={kb}
          onChanged={() => {
            onChanged();
            void files.reload();
          }}
        />
      )}

      <div
        class={`dropzone ${dragging ? "dragging" : ""}`}
        onDragOver={(e) => {
          e.preventDefault();
          setDragging(true);
        }}
        onDragLeave={() => setDragging(false)}
        onDrop={(e) => {
          e.preventDefault();
          setDragging(false);
          if (e.dataTransfer?.files.length) void upload(e.dataTransfer.files);
        }}
      >
        <span>Drop files here or</span>
        <button class="btn" onClick={() => picker.current?.click()}>
          Choose files…
        </button>
        <input
          ref={picker}
          type="file"
          name="upload"
          multiple
          hidden
          onChange={(e) => {
            const input = e.currentTarget;
            if (input.files?.length) void upload(input.files);
            input.value = "";
          }}
        />
        <span class="faint">PDF, Word, Markdown, text, HTML… processed in the background.</span>
      </div>
      {uploads.length > 0 && (
        <ul class="uploads" data-testid="uploads">
          {uploads.map((u) => (
            <li key={u.key}>
              <span class="upload-name">{u.name}</span>
              {u.error ? (
                <span class="error-text">{u.error}</span>
              ) : (
                <>
                  <ProgressBar value={u.total ? (100 * u.sent) / u.total : u.done ? 100 : 0} label={`Uploading ${u.name}`} />
                  <span class="faint">
                    {u.done ? "uploaded" : `${fmtBytes(u.sent)} / ${fmtBytes(u.total)}`}
                  </span>
                </>
              )}
              {u.error && (
                <button class="icon-btn" aria-label="Dismiss" onClick={() => setUploads((x) => x.filter((y) => y.key !== u.key))}>
                  ×
                </button>
              )}
            </li>
          ))}
        </ul>
      )}

      <h3>Files</h3>
      <ErrorBox error={files.error} onRetry={files.reload} />
      {files.loading && !files.data && <Loading label="Loading files…" />}
      {files.data && list.length === 0 && <Empty title="No files yet">Upload a document above; it becomes searchable once it is ready.</Empty>}
      {list.length > 0 && (
        <table class="table" data-testid="file-table">
          <thead>
            <tr>
              <th>Name</th>
              <th>Size</th>
              <th>Status</th>
              <th class="num">Chunks</th>
              <th>Uploaded</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {list.map((f) => {
              const st = STATUS[f.status] ?? STATUS[0];
              return (
                <tr key={f.id} data-file-name={f.name} data-status={st.label}>
                  <td class="ellipsis" title={f.name}>
                    {f.name}
                  </td>
                  <td>{fmtBytes(f.sizeBytes)}</td>
                  <td>
                    <Badge tone={st.tone} title={f.error?.message}>
                      {st.label}
                    </Badge>
                    {!terminal(f.status) && <ProgressBar value={f.progressPercent} label={`${f.name} ${st.label}`} />}
                    {f.status === FileStatus.FAILED && f.error?.message && <div class="error-text small">{f.error.message}</div>}
                  </td>
                  <td class="num">{f.chunkCount}</td>
                  <td class="faint">{fmtTime(f.createTime)}</td>
                  <td class="actions">
                    {f.status === FileStatus.DONE && (
                      <a class="btn small" href={`/knowledge/${kb.id}/${f.id}`} onClick={linkClick} aria-label={`Chunks of ${f.name}`}>
                        Chunks
                      </a>
                    )}
                    {f.status === FileStatus.FAILED && (
                      <button class="btn small" onClick={() => reprocess(f)}>
                        Retry
                      </button>
                    )}
                    <button class="icon-btn" title="Delete file" aria-label={`Delete ${f.name}`} onClick={() => remove(f)}>
                      ×
                    </button>
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}

      {openFileId && list.some((f) => f.id === openFileId) && (
        <ChunkEditor
          key={openFileId}
          file={list.find((f) => f.id === openFileId)!}
          onChanged={() => {
            onChanged();
            void files.reload();
          }}
          onClose={() => navigate(`/knowledge/${kb.id}`)}
        />
      )}

      <SearchPanel kb={kb} ready={list.some((f) => f.status === FileStatus.DONE)} />
    </div>
  );
}

function SearchPanel({ kb, ready }: { kb: KnowledgeBase; ready: boolean }) {
  const [query, setQuery] = useState("");
  const [mode, setMode] = useState<SearchMode>(SearchMode.HYBRID);
  const [topK, setTopK] = useState(5);
  const { busy, error, act } = useAction();
  const [result, setResult] = useState<(SearchResponse & { query: string }) | null>(null);

  function search(e: Event) {
    e.preventDefault();
    const q = query.trim();
    void act(async () => setResult(Object.assign(await tc.knowledge.search({ kbIds: [kb.id], query: q, mode, topK }), { query: q })));
  }

  return (
    <div class="search-panel">
      <h3>Search test</h3>
      <form class="inline-form" onSubmit={search} data-testid="search-form">
        <input name="query" class="grow" placeholder="Ask what the documents say…" value={query} onInput={(e) => setQuery(e.currentTarget.value)} required />
        <select name="mode" value={String(mode)} onChange={(e) => setMode(Number(e.currentTarget.value) as SearchMode)}>
          <option value={String(SearchMode.HYBRID)}>Hybrid</option>
          <option value={String(SearchMode.VECTOR)}>Vector</option>
          <option value={String(SearchMode.KEYWORD)}>Keyword</option>
        </select>
        <label class="tiny">
          Top
          <input name="top-k" type="number" min={1} max={100} value={topK} onInput={(e) => setTopK(Number(e.currentTarget.value) || 5)} />
        </label>
        <button class="btn primary" type="submit" disabled={busy || !query.trim()}>
          {busy ? "Searching…" : "Search"}
        </button>
      </form>
      {!ready && !result && <p class="hint">Search finds text in files that are ready (processed).</p>}
      <ErrorBox error={error} />
      {busy && <Spinner label="Searching…" />}
      {result && (
        <div data-testid="search-results">
          <p class="faint">
            {result.hits.length} hits in {fmtMs(durationMs(result.elapsed))}
          </p>
          {result.hits.length === 0 && <Empty title="No hits">Try other words, another mode, or wait until the files are ready.</Empty>}
          <ol class="hits">
            {result.hits.map((h) => (
              <li key={h.chunkId} class="hit" data-testid="hit">
                <div class="hit-head">
                  <span class="score" title="final score used for ranking">
                    {h.score.toFixed(3)}
                  </span>
                  <ProgressBar value={Math.min(1, h.score) * 100} label="score" />
                  <b class="ellipsis">{h.fileName}</b>
                  <span class="faint">
                    chunk {h.chunkIndex}
                    {h.page ? ` · page ${h.page}` : ""}
                    {mode !== SearchMode.KEYWORD ? ` · vector ${h.vectorScore.toFixed(3)}` : ""}
                    {mode !== SearchMode.VECTOR ? ` · keyword ${h.keywordScore.toFixed(3)}` : ""}
                  </span>
                </div>
                <HitText text={h.text} query={result.query} />
              </li>
            ))}
          </ol>
        </div>
      )}
    </div>
  );
}

const STOP_WORDS = new Set("the and for are was what which where when who how why with that this from have has does did were they them about into your".split(" "));

/** A hit's text with the query's words marked; long texts open on click. */
function HitText({ text, query }: { text: string; query: string }) {
  const [open, setOpen] = useState(false);
  const words = [...new Set(query.toLowerCase().match(/[\p{L}\p{N}]{3,}/gu) ?? [])].filter((w) => !STOP_WORDS.has(w));
  const escaped = words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const parts = escaped.length ? text.split(new RegExp(`(${escaped.join("|")})`, "giu")) : [text];
  return (
    <div class={`hit-text ${open ? "open" : ""}`} title={open ? "" : "Click to show the whole passage"} onClick={() => setOpen(!open)}>
      {parts.map((p, i) => (i % 2 ? <mark key={i}>{p}</mark> : p))}
    </div>
  );
}
