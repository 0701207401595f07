// The one SDK client of the console, and the credentials it sends.
//
// Credentials live in localStorage: an API key, or the access + refresh tokens of a username/password login.
// The client reads the current token on every call, so a refreshed token applies at once. Access tokens are
// refreshed (AuthService.RefreshToken, which rotates the refresh token) shortly before they expire.
import { createTypecase, TypecaseError } from "@typecase/client";

const STORAGE_KEY = "typecase.console.auth";
const REFRESH_MARGIN_MS = 60_000; // refresh this long before the access token expires (short tokens: at 80% of life)
const EXPIRING_MS = 5_000; // at start-up, a token this close to expiry is refreshed before anything else

export type Credentials =
  | { kind: "key"; apiKey: string }
  | {
      kind: "password";
      username: string;
      accessToken: string;
      refreshToken: string;
      expiresAt: number; // ms since epoch
      refreshExpiresAt: number;
    };

type Listener = (creds: Credentials | null, reason?: string) => void;

let current: Credentials | null = load();
let refreshTimer: number | undefined;
let refreshing: Promise<void> | null = null;
const listeners = new Set<Listener>();

function load(): Credentials | null {
  try {
    const raw = localStorage.getItem(STORAGE_KEY);
    return raw ? (JSON.parse(raw) as Credentials) : null;
  } catch {
    return null;
  }
}

function bearer(creds: Credentials | null): string | undefined {
  if (!creds) return undefined;
  return creds.kind === "key" ? creds.apiKey : creds.accessToken;
}

/** The SDK client every view uses (same origin: the console is served by the API server). */
export const tc = createTypecase({ baseUrl: "", token: () => bearer(current) });

export type Typecase = typeof tc;

/** A client for one explicit credential, used to check it before keeping it. */
function clientFor(token: string): Typecase {
  return createTypecase({ baseUrl: "", token });
}

export function credentials(): Credentials | null {
  return current;
}

export function onAuthChange(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function set(creds: Credentials | null, reason?: string): void {
  current = creds;
  if (creds) localStorage.setItem(STORAGE_KEY, JSON.stringify(creds));
  else localStorage.removeItem(STORAGE_KEY);
  scheduleRefresh();
  for (const listener of listeners) listener(creds, reason);
}

/** Checks an API key with GetMe and keeps it. Throws the server's error when it is refused. */
export async function signInWithKey(apiKey: string): Promise<void> {
  const key = apiKey.trim();
  await clientFor(key).auth.getMe({});
  set({ kind: "key", apiKey: key });
}

/** Logs in with AuthService.Login and keeps the tokens. */
export async function signInWithPassword(username: string, password: string): Promise<void> {
  const res = await tc.auth.login({ username: username.trim(), password });
  const now = Date.now();
  set({
    kind: "password",
    username: res.user?.username || username.trim(),
    accessToken: res.accessToken,
    refreshToken: res.refreshToken,
    expiresAt: now + res.expiresIn * 1000,
    refreshExpiresAt: now + res.refreshExpiresIn * 1000,
  });
}

export function signOut(reason?: string): void {
  set(null, reason);
}

/** Exchanges the refresh token for new tokens; signs out when that is no longer possible. */
export function refreshNow(): Promise<void> {
  const creds = current;
  if (!creds || creds.kind !== "password") return Promise.resolve();
  if (refreshing) return refreshing;
  if (Date.now() >= creds.refreshExpiresAt) {
    signOut("Your sign-in expired. Sign in again.");
    return Promise.resolve();
  }
  refreshing = (async () => {
    try {
      const res = await tc.auth.refreshToken({ refreshToken: creds.refreshToken });
      if (current !== creds) return; // signed out or in again meanwhile
      const now = Date.now();
      set({
        ...creds,
        accessToken: res.accessToken,
        refreshToken: res.refreshToken,
        expiresAt: now + res.expiresIn * 1000,
        refreshExpiresAt: now + res.refreshExpiresIn * 1000,
      });
    } catch (e) {
      if (current !== creds) return;
      const stored = load();
      if (stored?.kind === "password" && stored.refreshToken !== creds.refreshToken) {
        // Another tab refreshed first (refresh tokens are single-use): take its tokens.
        current = stored;
        scheduleRefresh();
      } else if (e instanceof TypecaseError && !["UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"].includes(e.code)) {
        signOut(`Your sign-in expired (${describe(e)}). Sign in again.`);
      } else {
        refreshTimer = window.setTimeout(refreshNow, 10_000); // the server is unreachable: try again soon
      }
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

function scheduleRefresh(): void {
  window.clearTimeout(refreshTimer);
  const creds = current;
  if (!creds || creds.kind !== "password") return;
  const left = creds.expiresAt - Date.now();
  const delay = left > 2 * REFRESH_MARGIN_MS ? left - REFRESH_MARGIN_MS : left * 0.8;
  // A little jitter keeps several tabs from spending the same single-use refresh token at once.
  refreshTimer = window.setTimeout(refreshNow, Math.max(0, delay - Math.random() * Math.min(5_000, delay / 10)));
}

/** Before the first render: refresh an expired access token (timers do not run while a tab sleeps). */
export async function ensureFresh(): Promise<void> {
  const creds = current;
  if (creds?.kind === "password" && Date.now() > creds.expiresAt - EXPIRING_MS) await refreshNow();
  else scheduleRefresh();
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") void ensureFresh();
});
window.addEventListener("storage", (e) => {
  // Another tab signed in, out, or refreshed: follow it.
  if (e.key === STORAGE_KEY) {
    current = load();
    scheduleRefresh();
    for (const listener of listeners) listener(current);
  }
});

/** A readable sentence for any failure: the server's Status message, with the reason when it helps. */
export function describe(error: unknown): string {
  if (error instanceof TypecaseError) {
    const message = error.message || error.code;
    if (error.code === "UNAVAILABLE" && !error.httpStatus) return `Cannot reach the server: ${message}`;
    return error.reason && !message.includes(error.reason) ? `${message} (${error.reason})` : message;
  }
  if (error instanceof Error) {
    if (error.name === "AbortError") return "Cancelled.";
    return error.message;
  }
  return String(error);
}

/** True for errors that mean the stored credentials no longer work. */
export function isAuthError(error: unknown): boolean {
  return error instanceof TypecaseError && error.code === "UNAUTHENTICATED";
}

/** Call for every failure a view shows: a refused credential signs out (with the reason) instead. */
export function handleError(error: unknown): string {
  if (isAuthError(error) && current) {
    if (current.kind === "password") void refreshNow();
    else signOut(`The API key was refused: ${describe(error)}`);
  }
  return describe(error);
}

export function isAbort(error: unknown): boolean {
  return (
    (error instanceof Error && error.name === "AbortError") ||
    (error instanceof TypecaseError && error.code === "CANCELLED")
  );
}

export { TypecaseError };

/**
 * Raw bytes from an HttpBody route (KnowledgeService.DownloadFile, ChatService.DownloadAttachment): the SDK has no
 * HttpBody streams, so this is a plain fetch with the current credential. Throws the server's error as a
 * TypecaseError.
 */
async function fetchBytes(path: string, params: URLSearchParams, signal?: AbortSignal): Promise<Response> {
  const token = bearer(current);
  const res = await fetch(`${path}${params.size ? `?${params}` : ""}`, { headers: token ? { authorization: `Bearer ${token}` } : {}, signal });
  if (!res.ok) {
    const text = await res.text().catch(() => "");
    let status: unknown = { code: res.status === 404 ? 5 : 2, message: text.slice(0, 200) || `HTTP ${res.status}` };
    try {
      status = JSON.parse(text);
    } catch {
      // not a Status body: the status line is all there is
    }
    throw TypecaseError.fromStatus(status, { httpStatus: res.status });
  }
  return res;
}

/** A knowledge file's bytes; `range` is an HTTP byte range ("bytes=0-65535"). */
export function fetchFile(fileId: string, options: { range?: string; inline?: boolean; signal?: AbortSignal } = {}): Promise<Response> {
  const params = new URLSearchParams();
  if (options.range) params.set("range", options.range);
  if (options.inline) params.set("inline", "true");
  return fetchBytes(`/v1/files/${encodeURIComponent(fileId)}:download`, params, options.signal);
}

/** The bytes of a file attached to a chat message (stored inline data). */
export function fetchAttachment(messageId: string, index: number, signal?: AbortSignal): Promise<Response> {
  return fetchBytes(`/v1/messages/${encodeURIComponent(messageId)}/attachments/${index}:download`, new URLSearchParams({ inline: "true" }), signal);
}
