// The server (admins): its settings grouped by category, editable ones changed in place (checked by the server
// before saving with validate_only), a restart when a changed setting needs one, and the recent request errors.
import { ConfigSource, ConfigValueType, RequestSource, type ConfigEntry, type ErrorRecord } from "@typecase/client/gen/typecase/v1/admin_pb.js";
import { useState } from "preact/hooks";
import { tc } from "../api";
import { Badge, Empty, ErrorBox, Loading, fmtTime, useAction, useAsync } from "../components/ui";

const ERROR_PAGE = 50;
const SOURCE: Record<number, string> = {
  [RequestSource.API]: "API",
  [RequestSource.OPENAI]: "OpenAI API",
  [RequestSource.PROXY]: "proxy",
};
const ORIGIN: Record<number, string> = {
  [ConfigSource.DEFAULT]: "default",
  [ConfigSource.ENV]: "environment",
  [ConfigSource.FILE]: "file",
  [ConfigSource.RUNTIME]: "set here",
};

export function ServerView() {
  const config = useAsync(async () => await tc.admin.getConfig({ category: "" }), []);
  const [edits, setEdits] = useState<Record<string, string>>({});
  const { busy, error, act } = useAction();
  const [notice, setNotice] = useState<string | null>(null);
  const [restartNeeded, setRestartNeeded] = useState(false);
  const [filter, setFilter] = useState("");

  const save = (validateOnly: boolean) =>
    act(async () => {
      setNotice(null);
      const res = await tc.admin.updateConfig({ values: edits, validateOnly });
      if (validateOnly) {
        setNotice(`The server accepts ${Object.keys(edits).length === 1 ? "this value" : "these values"}.`);
        return;
      }
      await config.reload(); // the stored values first, so the form never shows the old ones in between
      setEdits({});
      setRestartNeeded(res.restartRequired);
      setNotice(`Saved ${res.applied.map((a) => a.key).join(", ")}.`);
    });
  const restart = () =>
    act(async () => {
      const res = await tc.admin.restartServer({ reason: "settings changed in the console" });
      setNotice(`Restarting at ${fmtTime(res.restartTime)}; the page reconnects by itself.`);
      setRestartNeeded(false);
    });

  const entries = (config.data?.entries ?? []).filter((e) => !filter || e.key.includes(filter.trim().toLowerCase()) || e.description.toLowerCase().includes(filter.trim().toLowerCase()));
  const byCategory = new Map<string, ConfigEntry[]>();
  for (const e of entries) byCategory.set(e.category || "general", [...(byCategory.get(e.category || "general") ?? []), e]);
  const changed = Object.keys(edits).length;

  return (
    <div class="main-pane scroll admin">
      <div class="pane-head">
        <div>
          <h2>Server</h2>
          <span class="muted">Settings and recent request errors (administrators).</span>
        </div>
      </div>
      <ErrorBox error={error} />
      {notice && (
        <div class="card notice-box" role="status" data-testid="config-notice">
          {notice}
        </div>
      )}
      {(restartNeeded || config.data?.restartRequired) && (
        <div class="card restart-box" role="status">
          A changed setting takes effect after a restart.{" "}
          <button class="btn small danger" onClick={restart} disabled={busy}>
            Restart now
          </button>
        </div>
      )}

      <h3>Settings</h3>
      <ErrorBox error={config.error} onRetry={config.reload} />
      {config.loading && !config.data && <Loading />}
      {config.data?.readOnly && <p class="hint">Settings are read-only on this server.</p>}
      <div class="inline-form sticky-actions">
        <input name="config-filter" placeholder="Find a setting" value={filter} onInput={(e) => setFilter(e.currentTarget.value)} />
        <button class="btn" disabled={busy || !changed} onClick={() => save(true)}>
          Check
        </button>
        <button class="btn primary" disabled={busy || !changed} onClick={() => save(false)} data-testid="save-config">
          Save {changed ? `${changed} change${changed === 1 ? "" : "s"}` : ""}
        </button>
      </div>
      {[...byCategory.entries()].map(([category, list]) => (
        <details key={category} class="config-group" open={!!filter}>
          <summary>
            {category} <span class="faint">({list.length})</span>
          </summary>
          <table class="table">
            <tbody>
              {list.map((e) => (
                <ConfigRow key={e.key} entry={e} value={edits[e.key]} readOnly={!!config.data?.readOnly} onEdit={(v) => setEdits((old) => {
                  const next = { ...old };
                  if (v === undefined || v === e.value) delete next[e.key];
                  else next[e.key] = v;
                  return next;
                })} />
              ))}
            </tbody>
          </table>
        </details>
      ))}

      <h3>Recent errors</h3>
      <Errors />
    </div>
  );
}

function ConfigRow({ entry: e, value, readOnly, onEdit }: { entry: ConfigEntry; value?: string; readOnly: boolean; onEdit: (v: string | undefined) => void }) {
  const current = value ?? e.value;
  const editable = e.editable && !readOnly;
  return (
    <tr data-testid={`config-${e.key}`}>
      <td class="config-key">
        <span class="mono">{e.key}</span>
        <div class="faint">{e.description}</div>
      </td>
      <td class="config-value">
        {!editable ? (
          <span class="mono">{e.secret ? "••••" : e.value}</span>
        ) : e.type === ConfigValueType.BOOLEAN ? (
          <input type="checkbox" name={`config-${e.key}`} checked={current === "true"} onChange={(ev) => onEdit(ev.currentTarget.checked ? "true" : "false")} />
        ) : (
          <input
            name={`config-${e.key}`}
            type={(e.secret ? "password" : e.type === ConfigValueType.NUMBER ? "number" : "text") as "text"}
            step={e.type === ConfigValueType.NUMBER ? "any" : undefined}
            placeholder={e.example || e.defaultValue}
            value={e.secret && value === undefined ? "" : current}
            onInput={(ev) => onEdit(ev.currentTarget.value)}
          />
        )}
      </td>
      <td>
        {value !== undefined && <Badge tone="info">changed</Badge>}
        {e.requiresRestart && <Badge tone="warn">restart</Badge>} <span class="faint">{ORIGIN[e.source] ?? ""}</span>
      </td>
    </tr>
  );
}

function Errors() {
  const [pages, setPages] = useState<{ errors: ErrorRecord[]; next: string }>({ errors: [], next: "" });
  const first = useAsync(async () => {
    const res = await tc.admin.listErrors({ pageSize: ERROR_PAGE });
    setPages({ errors: [], next: res.nextPageToken });
    return res;
  }, []);
  const older = useAction();
  const more = () =>
    older.act(async () => {
      const res = await tc.admin.listErrors({ pageSize: ERROR_PAGE, pageToken: pages.next });
      setPages((p) => ({ errors: [...p.errors, ...res.errors], next: res.nextPageToken }));
    });
  const errors = [...(first.data?.errors ?? []), ...pages.errors];
  return (
    <div data-testid="errors">
      <ErrorBox error={first.error ?? older.error} onRetry={first.reload} />
      {first.data && errors.length === 0 && <Empty title="No errors recorded" />}
      {errors.length > 0 && (
        <table class="table">
          <tbody>
            {errors.map((e, i) => (
              <tr key={`${e.traceId}-${i}`} data-testid="error-row">
                <td class="faint">{fmtTime(e.time)}</td>
                <td>{SOURCE[e.source] ?? "?"}</td>
                <td class="mono">
                  {e.method} {e.path}
                </td>
                <td>
                  <Badge tone="bad">{e.statusCode}</Badge> {e.reason}
                </td>
                <td class="faint">{e.message}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {pages.next && (
        <button class="btn small" onClick={more} disabled={older.busy}>
          Older errors
        </button>
      )}
      {first.data && first.data.totalSize > 0 && <p class="faint">{first.data.totalSize} errors recorded in all.</p>}
    </div>
  );
}
