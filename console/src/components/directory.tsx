// The two-pane page that Groups and Roles share: a sidebar with an optional create-by-name form above the list of
// entries (each a link), and the chosen entry beside it. One component so that both pages keep one look and one
// behaviour (loading, errors, the active entry).
import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";
import { ErrorBox, Loading, useAction, type Async } from "./ui";
import { linkClick } from "../router";

export function Directory({ create, list, loadingLabel, listTestId, empty, children, detail }: {
  create?: ComponentChildren; // the create form, absent for users who may not create
  list: Pick<Async<readonly unknown[]>, "data" | "error" | "loading" | "reload">;
  loadingLabel: string;
  listTestId: string;
  empty?: ComponentChildren; // shown when the list is empty
  children: ComponentChildren; // the entries (DirectoryEntry)
  detail: ComponentChildren;
}) {
  return (
    <div class="split">
      <aside class="sidebar">
        {create && <div class="sidebar-head">{create}</div>}
        <ErrorBox error={list.error} onRetry={list.reload} />
        {list.loading && !list.data && <Loading label={loadingLabel} />}
        {list.data?.length === 0 && empty}
        <ul class="list" data-testid={listTestId}>
          {children}
        </ul>
      </aside>
      <section class="main-pane scroll">{detail}</section>
    </div>
  );
}

/** One entry of a Directory: `data` carries the attributes tests find it by (e.g. data-role-name). */
export function DirectoryEntry({ href, active, title, sub, data }: { href: string; active: boolean; title: ComponentChildren; sub: ComponentChildren; data: Record<string, string> }) {
  return (
    <li class={active ? "active" : ""} {...data}>
      <a class="list-link" href={href} onClick={linkClick}>
        <span class="list-title">{title}</span>
        <span class="list-sub">{sub}</span>
      </a>
    </li>
  );
}

/** An inline form that creates something from a name alone; the server's refusal is shown beside it. */
export function CreateByName({ testId, field, placeholder, label, create }: { testId: string; field: string; placeholder: string; label: string; create: (name: string) => Promise<void> }) {
  const [name, setName] = useState("");
  const { busy, error, act } = useAction();
  return (
    <form
      class="inline-form"
      data-testid={testId}
      onSubmit={async (e) => {
        e.preventDefault();
        if (await act(() => create(name.trim()))) setName("");
      }}
    >
      <input name={field} class="grow" placeholder={placeholder} required value={name} onInput={(e) => setName(e.currentTarget.value)} />
      <button class="btn primary" type="submit" disabled={busy || !name.trim()}>
        {label}
      </button>
      <ErrorBox error={error} />
    </form>
  );
}
