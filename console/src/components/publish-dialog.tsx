// The "Publish as API" dialog of an assistant or a flow: creates an API key restricted to this one app and the
// "chat" action (auth/scopes.py), shows its secret once, and the iframe snippet of the embeddable chat page
// (/embed/<kind>s/<id>#key=..., server/embed.py). The key rides in the URL fragment, which browsers never send.
import { useState } from "preact/hooks";
import { tc } from "../api";
import { ErrorBox, useAction } from "./ui";

export function embedSnippet(origin: string, kind: "assistant" | "flow", id: string, secret: string): string {
  return `<iframe src="${origin}/embed/${kind}s/${id}#key=${secret}" width="400" height="600" style="border:0"></iframe>`;
}

export function PublishDialog({ kind, id, title, onClose }: { kind: "assistant" | "flow"; id: string; title: string; onClose: () => void }) {
  const [name, setName] = useState(`${title} (embedded)`);
  const [rate, setRate] = useState("60/minute");
  const [secret, setSecret] = useState("");
  const { busy, error, act } = useAction();

  async function create(e: Event) {
    e.preventDefault();
    await act(async () => {
      const res = await tc.auth.createApiKey({ apiKey: { name, resources: [`${kind}/${id}`], actions: ["chat"], rateLimit: rate.trim() } });
      setSecret(res.secret);
    });
  }

  return (
    <div class="card" role="dialog" aria-label={`Publish ${title} as API`} data-testid="publish-dialog" style={{ padding: "12px", margin: "8px 0 16px" }}>
      <div class="pane-head">
        <h3>Publish as API</h3>
        <button class="btn small ghost" onClick={onClose}>
          Close
        </button>
      </div>
      <p class="muted">A key that opens only this {kind}, for chatting. Anyone who sees the page source sees the key: keep its rate limit low.</p>
      <ErrorBox error={error} />
      {secret ? (
        <>
          <label>
            Key (shown once)
            <input readOnly value={secret} data-testid="publish-secret" />
          </label>
          <label>
            Embed on a web site
            <textarea readOnly rows={3} data-testid="publish-snippet" value={embedSnippet(location.origin, kind, id, secret)} />
          </label>
          <p class="muted">
            OpenAI-compatible: <code>{`${location.origin}/openai/v1`}</code>
            {kind === "assistant" ? <> with model <code>{`assistant:${id}`}</code></> : null}
          </p>
        </>
      ) : (
        <form class="inline-form" onSubmit={create}>
          <input aria-label="Key name" value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} />
          <input aria-label="Rate limit" value={rate} placeholder="60/minute" onInput={(e) => setRate((e.target as HTMLInputElement).value)} />
          <button class="btn primary" type="submit" disabled={busy || !name.trim()}>
            Create key
          </button>
        </form>
      )}
    </div>
  );
}
