// Small shared pieces: loading, error and empty states, badges, progress bars, formatting, and the hooks that load
// (useAsync) and change (useAction) with the busy and error states every page shows.
import type { ComponentChildren } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { handleError, isAbort } from "../api";

export function Spinner({ label }: { label?: string }) {
  return (
    <span class="spinner-wrap" role="status">
      <span class="spinner" aria-hidden="true" />
      {label && <span class="muted">{label}</span>}
    </span>
  );
}

export function Loading({ label = "Loading…" }: { label?: string }) {
  return (
    <div class="loading">
      <Spinner label={label} />
    </div>
  );
}

export function ErrorBox({ error, onRetry }: { error: string | null | undefined; onRetry?: () => void }) {
  if (!error) return null;
  return (
    <div class="error-box" role="alert">
      <span>{error}</span>
      {onRetry && (
        <button class="btn small" onClick={onRetry}>
          Retry
        </button>
      )}
    </div>
  );
}

export function Empty({ title, children }: { title: string; children?: ComponentChildren }) {
  return (
    <div class="empty">
      <div class="empty-title">{title}</div>
      {children && <div class="empty-hint">{children}</div>}
    </div>
  );
}

export type Tone = "neutral" | "ok" | "warn" | "bad" | "info";

export function Badge({ tone = "neutral", children, title }: { tone?: Tone; children: ComponentChildren; title?: string }) {
  return (
    <span class={`badge ${tone}`} title={title}>
      {children}
    </span>
  );
}

export function ProgressBar({ value, label }: { value: number; label?: string }) {
  const pct = Math.max(0, Math.min(100, value));
  return (
    <div class="progress" role="progressbar" aria-valuenow={Math.round(pct)} aria-valuemin={0} aria-valuemax={100} aria-label={label}>
      <div class="progress-fill" style={{ width: `${pct}%` }} />
    </div>
  );
}

// -- formatting ---------------------------------------------------------------------------------------------
type Ts = { seconds: bigint; nanos: number } | undefined;

export function tsMillis(ts: Ts): number | undefined {
  return ts ? Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6) : undefined;
}

export function fmtTime(ts: Ts): string {
  const ms = tsMillis(ts);
  if (!ms) return "";
  const d = new Date(ms);
  const now = new Date();
  return d.toDateString() === now.toDateString()
    ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
    : d.toLocaleString([], { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

export function durationMs(d: Ts): number {
  return d ? Number(d.seconds) * 1000 + d.nanos / 1e6 : 0;
}

export function fmtMs(ms: number): string {
  if (!ms) return "–";
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

export function fmtBytes(n: number | bigint): string {
  let v = Number(n);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export function fmtCount(n: number | bigint): string {
  return Number(n).toLocaleString();
}

/** "1 file", "3 files". */
export function plural(n: number | bigint, word: string): string {
  return `${fmtCount(n)} ${word}${Number(n) === 1 ? "" : "s"}`;
}

// -- async state --------------------------------------------------------------------------------------------
export type Async<T> = {
  data: T | undefined;
  error: string | null;
  loading: boolean;
  reload: () => Promise<void>;
  setData: (data: T | ((previous: T | undefined) => T)) => void;
};

/** Runs `load` when `deps` change; keeps the last data while reloading; errors go through handleError. */
export function useAsync<T>(load: () => Promise<T>, deps: unknown[]): Async<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const generation = useRef(0);
  const loadRef = useRef(load);
  loadRef.current = load;

  const reload = useCallback(async () => {
    const mine = ++generation.current;
    setLoading(true);
    try {
      const value = await loadRef.current();
      if (mine === generation.current) {
        setData(value);
        setError(null);
      }
    } catch (e) {
      if (mine === generation.current) setError(handleError(e));
    } finally {
      if (mine === generation.current) setLoading(false);
    }
  }, []);

  useEffect(() => {
    setData(undefined);
    void reload();
    return () => {
      generation.current++;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);

  return { data, error, loading, reload, setData: setData as Async<T>["setData"] };
}

/**
 * A page's changes: `busy` while `act`'s work runs (buttons disable on it), and when the work fails the server's
 * message (through handleError) in `error`, with nothing the user typed cleared. `act` is true when it succeeded;
 * aborted work (a stream the page closed) is no error. `showBusy: false` (for the hook, or for one `act`) is for
 * checkboxes that show the server's value until a reload, where a re-render for `busy` would put a clicked one back
 * before the change is saved, and for changes whose buttons do not wait. `setError` shows errors found outside
 * `act` (a stream's, a form's) in the same place.
 */
export function useAction({ showBusy = true } = {}) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  async function act(work: () => Promise<unknown>, { showBusy: show = showBusy } = {}): Promise<boolean> {
    if (show) setBusy(true);
    setError(null);
    try {
      await work();
      return true;
    } catch (e) {
      if (!isAbort(e)) setError(handleError(e));
      return false;
    } finally {
      if (show) setBusy(false);
    }
  }
  return { busy, error, setError, act };
}

/** setInterval bound to the component's life; the latest callback runs. */
export function useInterval(callback: () => void, ms: number | null): void {
  const saved = useRef(callback);
  saved.current = callback;
  useEffect(() => {
    if (ms === null) return;
    const id = window.setInterval(() => saved.current(), ms);
    return () => window.clearInterval(id);
  }, [ms]);
}

/** Pretty JSON for Struct values and outputs. */
export function Json({ value }: { value: unknown }) {
  const text = JSON.stringify(value, (_k, v) => (typeof v === "bigint" ? v.toString() : v), 2);
  return <pre class="json">{text}</pre>;
}
