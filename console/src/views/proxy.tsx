// Proxy and traffic: live request statistics (AdminService GetStats, polled) drawn as sparklines, the
// breakdowns by status, path and model, the latest requests, and server log lines as they are written
// (StreamLogs). Admin only.
import { LogLevel, RequestSource, type GetStatsResponse, type LogLine } from "@typecase/client/gen/typecase/v1/admin_pb.js";
import { useEffect, useRef, useState } from "preact/hooks";
import { TypecaseError, describe, handleError, isAbort, tc } from "../api";
import { Sparkline } from "../components/sparkline";
import { Badge, Empty, ErrorBox, Loading, durationMs, fmtBytes, fmtCount, fmtMs, fmtTime, useInterval, type Tone } from "../components/ui";

const POLL_MS = 2000;
const HISTORY = 60; // samples kept for the sparklines (2 minutes)
const MAX_LINES = 500;

const SOURCES: { value: RequestSource; label: string }[] = [
  { value: RequestSource.UNSPECIFIED, label: "All surfaces" },
  { value: RequestSource.PROXY, label: "LLM API proxy" },
  { value: RequestSource.API, label: "Typecase API" },
  { value: RequestSource.OPENAI, label: "OpenAI-compatible API" },
];
const SOURCE_LABEL: Record<number, string> = {
  [RequestSource.API]: "api",
  [RequestSource.OPENAI]: "openai",
  [RequestSource.PROXY]: "proxy",
};

type Sample = { t: number; total: number; failures: number; inFlight: number; p95: number; avg: number };

export function ProxyView() {
  const [source, setSource] = useState<RequestSource>(RequestSource.UNSPECIFIED);
  const [stats, setStats] = useState<GetStatsResponse | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [samples, setSamples] = useState<Sample[]>([]);
  const [denied, setDenied] = useState<string | null>(null);
  const inFlightPoll = useRef(false);

  async function poll() {
    if (inFlightPoll.current || document.visibilityState === "hidden") return;
    inFlightPoll.current = true;
    try {
      const s = await tc.admin.getStats({ source, recentLimit: 15 });
      setStats(s);
      setError(null);
      const sample: Sample = {
        t: Date.now(),
        total: Number(s.totalRequests),
        failures: Number(s.failureCount),
        inFlight: s.inFlight,
        p95: durationMs(s.p95Latency),
        avg: durationMs(s.avgLatency),
      };
      setSamples((prev) => [...prev, sample].slice(-HISTORY - 1));
    } catch (e) {
      if (e instanceof TypecaseError && e.code === "PERMISSION_DENIED") setDenied(describe(e));
      else setError(handleError(e));
    } finally {
      inFlightPoll.current = false;
    }
  }

  useEffect(() => {
    setSamples([]);
    setStats(null);
    void poll();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [source]);
  useInterval(poll, denied ? null : POLL_MS);

  // Rates from consecutive samples (counters only grow; a restart resets them, shown as 0).
  const rate = (key: "total" | "failures") =>
    samples.slice(1).map((s, i) => Math.max(0, (s[key] - samples[i][key]) / ((s.t - samples[i].t) / 1000)));
  const reqRate = rate("total");
  const errRate = rate("failures");
  const last = <T,>(xs: T[]) => xs[xs.length - 1];

  if (denied) {
    return (
      <div class="page">
        <Empty title="Admins only">
          Traffic statistics and server logs are for administrators: sign out and sign in with the admin API key or
          an admin account. <span class="faint">The server said: {denied}.</span>
        </Empty>
      </div>
    );
  }

  return (
    <div class="page scroll">
      <div class="pane-head">
        <div>
          <h2>Proxy &amp; traffic</h2>
          <span class="muted">
            Requests this server recorded (the LLM API proxy's traffic){stats ? ` since ${fmtTime(stats.startTime)}` : ""},
            refreshed every {POLL_MS / 1000} s.
          </span>
        </div>
        <select name="source" value={String(source)} onChange={(e) => setSource(Number(e.currentTarget.value) as RequestSource)}>
          {SOURCES.map((s) => (
            <option key={s.value} value={String(s.value)}>
              {s.label}
            </option>
          ))}
        </select>
      </div>
      <ErrorBox error={error} onRetry={poll} />
      {!stats && !error && <Loading label="Loading statistics…" />}
      {stats && (
        <>
          {source === RequestSource.PROXY && stats.totalRequests === 0n && (
            <p class="hint">
              No proxy traffic yet. The LLM API proxy listens on its own port when the server runs with{" "}
              <code>TYPECASE_PROXY_ENABLED=true</code> (<code>TYPECASE_PROXY_PORT</code>, default 8088); point an
              Anthropic or OpenAI client's base URL at it.
            </p>
          )}
          <div class="stat-grid" data-testid="stats">
            <Stat label="Requests" value={fmtCount(stats.totalRequests)} sub={`${(last(reqRate) ?? 0).toFixed(1)}/s`} series={reqRate} />
            <Stat
              label="Failures"
              value={fmtCount(stats.failureCount)}
              sub={stats.totalRequests ? `${((100 * Number(stats.failureCount)) / Number(stats.totalRequests)).toFixed(1)}%` : "–"}
              series={errRate}
              tone="bad"
            />
            <Stat label="In flight" value={String(stats.inFlight)} series={samples.map((s) => s.inFlight)} tone="warn" />
            <Stat label="p95 latency" value={fmtMs(durationMs(stats.p95Latency))} sub={`avg ${fmtMs(durationMs(stats.avgLatency))}`} series={samples.map((s) => s.p95)} />
            <Stat label="Tokens" value={fmtCount(stats.promptTokens + stats.completionTokens)} sub={`${fmtCount(stats.promptTokens)} in · ${fmtCount(stats.completionTokens)} out`} />
            <Stat label="Traffic" value={fmtBytes(stats.responseBytes)} sub={`out · ${fmtBytes(stats.requestBytes)} in`} />
          </div>
          <div class="columns">
            <Breakdown title="By status" rows={Object.entries(stats.byStatus).map(([k, v]) => [k, Number(v)])} tone={(k) => (k.startsWith("2") ? "ok" : k.startsWith("4") ? "warn" : "bad")} />
            <Breakdown title="By path" rows={Object.entries(stats.byPath).map(([k, v]) => [k, Number(v)])} />
          </div>
          {Object.keys(stats.byModel).length > 0 && (
            <>
              <h3>By model</h3>
              <table class="table" data-testid="by-model">
                <thead>
                  <tr>
                    <th>Model</th>
                    <th class="num">Requests</th>
                    <th class="num">Failures</th>
                    <th class="num">Tokens in / out</th>
                    <th class="num">Avg TTFT</th>
                    <th class="num">Avg latency</th>
                  </tr>
                </thead>
                <tbody>
                  {Object.entries(stats.byModel).map(([name, m]) => (
                    <tr key={name}>
                      <td>{name}</td>
                      <td class="num">{fmtCount(m.requestCount)}</td>
                      <td class="num">{fmtCount(m.failureCount)}</td>
                      <td class="num">
                        {fmtCount(m.promptTokens)} / {fmtCount(m.completionTokens)}
                      </td>
                      <td class="num">{fmtMs(durationMs(m.avgTtft))}</td>
                      <td class="num">{fmtMs(durationMs(m.avgLatency))}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </>
          )}
          <h3>Latest requests</h3>
          {stats.recentRequests.length === 0 ? (
            <p class="hint">Nothing yet: requests appear here as they are served.</p>
          ) : (
            <table class="table" data-testid="recent-requests">
              <thead>
                <tr>
                  <th>Time</th>
                  <th>Source</th>
                  <th>Request</th>
                  <th>Model</th>
                  <th class="num">Status</th>
                  <th class="num">Latency</th>
                </tr>
              </thead>
              <tbody>
                {stats.recentRequests.map((r, i) => (
                  <tr key={`${r.traceId}-${i}`} title={r.traceId ? `trace ${r.traceId}` : undefined}>
                    <td class="faint">{fmtTime(r.time)}</td>
                    <td>{SOURCE_LABEL[r.source] ?? "?"}</td>
                    <td class="ellipsis mono">
                      {r.method} {r.path}
                    </td>
                    <td>{r.model}</td>
                    <td class="num">
                      <Badge tone={r.statusCode < 400 ? "ok" : r.statusCode < 500 ? "warn" : "bad"} title={r.errorReason}>
                        {r.statusCode}
                      </Badge>
                    </td>
                    <td class="num">{fmtMs(durationMs(r.latency))}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      )}
      {stats && <LogStream />}
    </div>
  );
}

function Stat({ label, value, sub, series, tone = "info" }: { label: string; value: string; sub?: string; series?: number[]; tone?: "info" | "bad" | "warn" | "ok" }) {
  return (
    <div class="stat card">
      <div class="stat-label">{label}</div>
      <div class="stat-value">{value}</div>
      {sub && <div class="faint">{sub}</div>}
      {series && <Sparkline values={series.slice(-HISTORY)} label={`${label} over the last minutes`} tone={tone} />}
    </div>
  );
}

function Breakdown({ title, rows, tone }: { title: string; rows: [string, number][]; tone?: (key: string) => Tone }) {
  const sorted = [...rows].sort((a, b) => b[1] - a[1]).slice(0, 10);
  const max = Math.max(1, ...sorted.map((r) => r[1]));
  return (
    <div class="breakdown card">
      <h4>{title}</h4>
      {sorted.length === 0 && <span class="faint">No requests yet.</span>}
      {sorted.map(([key, n]) => (
        <div class="bar-row" key={key}>
          <span class="ellipsis mono" title={key}>
            {tone ? <Badge tone={tone(key)}>{key}</Badge> : key}
          </span>
          <span class="bar">
            <span style={{ width: `${(100 * n) / max}%` }} />
          </span>
          <span class="num">{fmtCount(n)}</span>
        </div>
      ))}
    </div>
  );
}

const LEVELS: { value: LogLevel; label: string }[] = [
  { value: LogLevel.UNSPECIFIED, label: "All levels" },
  { value: LogLevel.INFO, label: "Info and above" },
  { value: LogLevel.WARNING, label: "Warnings and errors" },
  { value: LogLevel.ERROR, label: "Errors" },
];
const LEVEL_NAME: Record<number, string> = {
  [LogLevel.DEBUG]: "DEBUG",
  [LogLevel.INFO]: "INFO",
  [LogLevel.WARNING]: "WARN",
  [LogLevel.ERROR]: "ERROR",
  [LogLevel.CRITICAL]: "CRIT",
};

function LogStream() {
  const [lines, setLines] = useState<LogLine[]>([]);
  const [minLevel, setMinLevel] = useState<LogLevel>(LogLevel.UNSPECIFIED);
  const [query, setQuery] = useState("");
  const [appliedQuery, setAppliedQuery] = useState("");
  const [paused, setPaused] = useState(false);
  const [state, setState] = useState<"connecting" | "live" | "error">("connecting");
  const [error, setError] = useState<string | null>(null);
  const [dropped, setDropped] = useState(0);
  const box = useRef<HTMLDivElement>(null);
  const pinned = useRef(true);
  const pausedRef = useRef(paused);
  pausedRef.current = paused;

  useEffect(() => {
    const ctrl = new AbortController();
    setLines([]);
    setDropped(0);
    setState("connecting");
    setError(null);
    (async () => {
      try {
        // A WebSocket: an endless stream should not hold one of the browser's six HTTP/1.1 connections.
        const events = tc.admin.streamLogs({ minLevel, query: appliedQuery, tail: 100 }, { signal: ctrl.signal, via: "websocket" });
        setState("live");
        let pending: LogLine[] = [];
        let timer: number | undefined;
        const flush = () => {
          timer = undefined;
          if (pausedRef.current) return;
          const batch = pending;
          pending = [];
          setLines((prev) => [...prev, ...batch].slice(-MAX_LINES));
        };
        for await (const ev of events) {
          if (ev.droppedCount) setDropped((d) => d + Number(ev.droppedCount));
          if (ev.line) pending.push(ev.line);
          if (pending.length > MAX_LINES) pending = pending.slice(-MAX_LINES);
          if (timer === undefined) timer = window.setTimeout(flush, 100); // batch bursts into one render
        }
      } catch (e) {
        if (ctrl.signal.aborted || isAbort(e)) return;
        setState("error");
        setError(handleError(e));
      }
    })();
    return () => ctrl.abort();
  }, [minLevel, appliedQuery]);

  useEffect(() => {
    if (pinned.current && box.current) box.current.scrollTop = box.current.scrollHeight;
  }, [lines]);

  return (
    <div class="logs">
      <div class="logs-head">
        <h3>Server log</h3>
        <Badge tone={state === "live" ? (paused ? "warn" : "ok") : state === "error" ? "bad" : "neutral"}>
          {state === "live" ? (paused ? "paused" : "live") : state}
        </Badge>
        <form
          class="inline-form"
          onSubmit={(e) => {
            e.preventDefault();
            setAppliedQuery(query.trim());
          }}
        >
          <input name="log-query" placeholder="Filter text…" value={query} onInput={(e) => setQuery(e.currentTarget.value)} />
          <select name="log-level" value={String(minLevel)} onChange={(e) => setMinLevel(Number(e.currentTarget.value) as LogLevel)}>
            {LEVELS.map((l) => (
              <option key={l.value} value={String(l.value)}>
                {l.label}
              </option>
            ))}
          </select>
          <button class="btn small" type="button" onClick={() => setPaused(!paused)}>
            {paused ? "Resume" : "Pause"}
          </button>
          <button class="btn small ghost" type="button" onClick={() => setLines([])}>
            Clear
          </button>
        </form>
      </div>
      <ErrorBox error={error} />
      {dropped > 0 && <p class="hint">{dropped} lines were skipped because this view fell behind.</p>}
      <div
        class="log-box"
        ref={box}
        data-testid="log-lines"
        onScroll={(e) => {
          const el = e.currentTarget;
          pinned.current = el.scrollHeight - el.scrollTop - el.clientHeight < 30;
        }}
      >
        {lines.length === 0 && state === "live" && <Empty title="Waiting for log lines…">Lines appear here as the server writes them.</Empty>}
        {lines.map((l) => (
          <div key={l.seq.toString()} class={`log-line lvl-${LEVEL_NAME[l.level] ?? "INFO"}`}>
            <span class="faint">{fmtTime(l.time)}</span> <span class="lvl">{LEVEL_NAME[l.level] ?? "?"}</span>{" "}
            <span class="logger">{l.logger}</span> <span>{l.message}</span>
            {l.traceId && <span class="faint"> · {l.traceId.slice(0, 8)}</span>}
          </div>
        ))}
      </div>
    </div>
  );
}
