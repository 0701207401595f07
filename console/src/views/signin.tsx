// Sign in with an API key (e.g. the bootstrap admin key) or a username and password.
import { useState } from "preact/hooks";
import { describe, signInWithKey, signInWithPassword } from "../api";
import { ErrorBox, Spinner } from "../components/ui";

export function SignInView({ notice }: { notice?: string }) {
  const [mode, setMode] = useState<"key" | "password">("key");
  const [apiKey, setApiKey] = useState("");
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  async function submit(e: Event) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      if (mode === "key") await signInWithKey(apiKey);
      else await signInWithPassword(username, password);
    } catch (err) {
      setError(
        mode === "key" ? `That API key was not accepted: ${describe(err)}` : `Could not sign in: ${describe(err)}`,
      );
    } finally {
      setBusy(false);
    }
  }

  return (
    <div class="signin-page">
      <form class="card signin" onSubmit={submit}>
        <h1>Typecase console</h1>
        {notice && <div class="notice">{notice}</div>}
        <div class="tabs" role="tablist">
          <button type="button" role="tab" aria-selected={mode === "key"} class={mode === "key" ? "active" : ""} onClick={() => setMode("key")}>
            API key
          </button>
          <button
            type="button"
            role="tab"
            aria-selected={mode === "password"}
            class={mode === "password" ? "active" : ""}
            onClick={() => setMode("password")}
          >
            Username &amp; password
          </button>
        </div>
        {mode === "key" ? (
          <>
            <label>
              API key
              <input
                name="api-key"
                type="password"
                autoComplete="off"
                placeholder="tc_…"
                value={apiKey}
                onInput={(e) => setApiKey(e.currentTarget.value)}
                required
                autoFocus
              />
            </label>
            <p class="hint">
              First time here? The server prints the <b>admin API key</b> once, at its first start, and keeps it in{" "}
              <code>.typecase/admin_api_key</code> (inside its data directory, <code>TYPECASE_DATA_DIR</code>):{" "}
              <code>cat .typecase/admin_api_key</code>. If the server was started with{" "}
              <code>TYPECASE_ADMIN_API_KEY</code>, that value is the key.
            </p>
          </>
        ) : (
          <>
            <label>
              Username
              <input name="username" autoComplete="username" value={username} onInput={(e) => setUsername(e.currentTarget.value)} required autoFocus />
            </label>
            <label>
              Password
              <input
                name="password"
                type="password"
                autoComplete="current-password"
                value={password}
                onInput={(e) => setPassword(e.currentTarget.value)}
                required
              />
            </label>
            <p class="hint">Users are created by an admin (AuthService CreateUser, <code>POST /v1/users</code>).</p>
          </>
        )}
        <ErrorBox error={error} />
        <button class="btn primary" type="submit" disabled={busy}>
          {busy ? <Spinner label="Signing in…" /> : "Sign in"}
        </button>
        <p class="hint faint">
          Credentials are kept in this browser's local storage until you sign out. The API reference is at{" "}
          <a href="/docs">/docs</a>.
        </p>
      </form>
    </div>
  );
}
