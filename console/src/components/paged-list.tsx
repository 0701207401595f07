// A paged list filtered by keyword whose rows can be edited and deleted, as a file's chunks (chunk-editor.tsx)
// and a question-answer base's pairs (qa-pairs.tsx) show it: usePagedList holds the pages and the last error,
// PagedList draws the filter, the rows and the "more" button, RowActions a row's Edit and Delete… buttons.
// Both panels had their own copy of each.
import type { ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";
import { Empty, ErrorBox, Loading, plural, useAction } from "./ui";

export type Page<T> = { items: T[]; next: string; total: number };

/** One page as the server answers: its rows, the next page's token ("" after the last) and the filtered total. */
export type Fetch<T> = (keyword: string, pageToken: string) => Promise<Page<T>>;

export function usePagedList<T extends { id: string }>(fetch: Fetch<T>, owner: string) {
  const [applied, setApplied] = useState("");
  const [page, setPage] = useState<Page<T> | null>(null);
  // Loads and changes share the error shown above the list; only loads show as loading.
  const { error, act } = useAction();
  const [loading, setLoading] = useState(false);

  async function load(token = "") {
    setLoading(true);
    await act(async () => {
      const res = await fetch(applied, token);
      setPage((prev) => ({ ...res, items: token && prev ? [...prev.items, ...res.items] : res.items }));
    });
    setLoading(false);
  }
  useEffect(() => void load(), [owner, applied]);

  return {
    applied,
    setApplied,
    page,
    loading,
    error,
    load,
    act,
    replace: (item: T) => setPage((p) => p && { ...p, items: p.items.map((x) => (x.id === item.id ? item : x)) }),
    remove: (id: string) => setPage((p) => p && { ...p, items: p.items.filter((x) => x.id !== id), total: p.total - 1 }),
    append: (item: T) => setPage((p) => (p ? { ...p, items: [...p.items, item], total: p.total + 1 } : p)),
  };
}

export type PagedListState<T extends { id: string }> = ReturnType<typeof usePagedList<T>>;

/** What the list calls its rows, in the filter, the count, the empty state and the buttons. */
export type ListWords = {
  noun: string; // "chunk": "3 chunks", "Loading chunks…", "No chunks", "More chunks"
  filterName: string; // the filter input's name
  totalTestId: string;
  emptyText: string; // shown when there are none and no filter is applied
};

export function PagedList<T extends { id: string }>({
  list,
  words,
  children,
}: {
  list: PagedListState<T>;
  words: ListWords;
  children: (item: T) => ComponentChildren;
}) {
  const [keyword, setKeyword] = useState("");
  const { page, loading, applied } = list;
  return (
    <>
      <form
        class="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          list.setApplied(keyword.trim());
        }}
      >
        <input name={words.filterName} class="grow" placeholder={`Only ${words.noun}s containing…`} value={keyword} onInput={(e) => setKeyword(e.currentTarget.value)} />
        <button class="btn" type="submit">
          Filter
        </button>
        {page && (
          <span class="faint" data-testid={words.totalTestId}>
            {plural(page.total, words.noun)}
          </span>
        )}
      </form>
      <ErrorBox error={list.error} />
      {loading && !page && <Loading label={`Loading ${words.noun}s…`} />}
      {page && page.items.length === 0 && <Empty title={`No ${words.noun}s`}>{applied ? "None contains that text." : words.emptyText}</Empty>}
      <ol class="chunks">{page?.items.map(children)}</ol>
      {page?.next && (
        <button class="btn small" disabled={loading} onClick={() => void list.load(page.next)}>
          {loading ? "Loading…" : `More ${words.noun}s`}
        </button>
      )}
    </>
  );
}

/** A row's Edit button (hidden while it is edited) and its Delete… button, which asks before it deletes. */
export function RowActions({ editing, onEdit, onDelete }: { editing: boolean; onEdit: () => void; onDelete: () => void }) {
  const [confirm, setConfirm] = useState(false);
  return (
    <span class="row-actions">
      {!editing && (
        <button class="link-btn" onClick={onEdit}>
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
  );
}
