// People and access (admins): users (create, role, disable), API keys (the secret is shown once, at creation;
// revoke), and the audit log of who changed what, filtered by action and paged.
import { UserRole, type ApiKey, type User } from "@typecase/client/gen/typecase/v1/auth_pb.js";
import type { AuditEvent } from "@typecase/client/gen/typecase/v1/admin_pb.js";
import { Fragment } from "preact";
import { useState } from "preact/hooks";
import { tc } from "../api";
import { Badge, Empty, ErrorBox, Json, Loading, fmtTime, useAction, useAsync } from "../components/ui";
import { usePermissions } from "../permissions";

const AUDIT_PAGE = 50;

export function AdminView() {
  const { error, act } = useAction({ showBusy: false });
  const users = useAsync(async () => (await tc.auth.listUsers({ pageSize: 200 })).users, []);
  const roles = useAsync(async () => (await tc.roles.listRoles({})).roles.map((r) => r.name), []);
  const [keyOwner, setKeyOwner] = useState(""); // whose keys are listed: "" is the signed-in user
  const keys = useAsync(async () => (await tc.auth.listApiKeys({ pageSize: 200, showRevoked: true, ownerId: keyOwner })).apiKeys, [keyOwner]);
  const [secret, setSecret] = useState<{ name: string; secret: string } | null>(null);
  const permissions = usePermissions();
  const assign = permissions.has("users.manage"); // what AuthService.UpdateUser asks of whoever changes a role

  const userName = (id: string) => users.data?.find((u) => u.id === id)?.username ?? id.slice(-6);

  return (
    <div class="main-pane scroll admin">
      <div class="pane-head">
        <div>
          <h2>Access</h2>
          <span class="muted">Users, API keys and the audit log (administrators).</span>
        </div>
      </div>
      <ErrorBox error={error} />

      <h3>Users</h3>
      <ErrorBox error={users.error} onRetry={users.reload} />
      {users.loading && !users.data && <Loading />}
      {users.data && (
        <table class="table" data-testid="users">
          <tbody>
            {users.data.map((u) => (
              <UserRow
                key={u.id}
                user={u}
                roles={roles.data ?? [u.roleName]}
                assign={assign}
                onChange={(patch, paths) => act(async () => (await tc.auth.updateUser({ user: { id: u.id, ...patch }, updateMask: { paths } }), await users.reload()))}
              />
            ))}
          </tbody>
        </table>
      )}
      <NewUser onCreate={(u) => act(async () => (await tc.auth.createUser({ user: u }), await users.reload()))} />

      <h3>API keys</h3>
      <div class="inline-form">
        <label class="tiny">
          Keys of
          <select name="keys-of" value={keyOwner} onChange={(e) => setKeyOwner(e.currentTarget.value)}>
            <option value="">me</option>
            {(users.data ?? []).map((u) => (
              <option key={u.id} value={u.id}>
                {u.username}
              </option>
            ))}
          </select>
        </label>
      </div>
      <ErrorBox error={keys.error} onRetry={keys.reload} />
      {secret && (
        <div class="card secret-once" role="status" data-testid="new-secret">
          The secret of <b>{secret.name}</b>, shown this once: <code class="mono">{secret.secret}</code>{" "}
          <button class="btn small ghost" onClick={() => setSecret(null)}>
            Done
          </button>
        </div>
      )}
      {keys.data && keys.data.length === 0 && <p class="hint">No API keys yet.</p>}
      {keys.data && keys.data.length > 0 && (
        <table class="table" data-testid="api-keys">
          <tbody>
            {keys.data.map((k) => (
              <KeyRow key={k.id} apiKey={k} owner={userName(k.ownerId)} onRevoke={() => act(async () => (await tc.auth.deleteApiKey({ apiKeyId: k.id }), await keys.reload()))} />
            ))}
          </tbody>
        </table>
      )}
      <NewKey
        users={users.data ?? []}
        onCreate={(k) =>
          act(async () => {
            const res = await tc.auth.createApiKey({ apiKey: k });
            setSecret({ name: res.apiKey?.name ?? k.name, secret: res.secret });
            if (k.ownerId !== keyOwner) setKeyOwner(k.ownerId); // show the list the new key is in
            else await keys.reload();
          })
        }
      />

      {permissions.has("audit.read") && (
        <>
          <h3>Audit log</h3>
          <AuditLog userName={userName} />
        </>
      )}
    </div>
  );
}

// The role selector lists every role by name (built-in and custom, from the Roles page); a user who may not assign
// roles sees the role as text.
function UserRow({ user: u, roles, assign, onChange }: { user: User; roles: string[]; assign: boolean; onChange: (patch: Partial<Pick<User, "roleName" | "disabled">>, paths: string[]) => void }) {
  return (
    <tr data-testid={`user-${u.username}`}>
      <td>
        <b>{u.username}</b> <span class="faint">{u.displayName}</span>
      </td>
      <td>
        {assign ? (
          <select name={`role-${u.username}`} aria-label={`Role of ${u.username}`} value={u.roleName} onChange={(e) => onChange({ roleName: e.currentTarget.value }, ["role_name"])}>
            {(roles.includes(u.roleName) ? roles : [u.roleName, ...roles]).map((r) => (
              <option key={r} value={r}>
                {r}
              </option>
            ))}
          </select>
        ) : (
          <span class="mono" data-testid={`role-of-${u.username}`}>
            {u.roleName}
          </span>
        )}
      </td>
      <td>
        <label class="check">
          <input type="checkbox" name={`disabled-${u.username}`} checked={u.disabled} onChange={(e) => onChange({ disabled: e.currentTarget.checked }, ["disabled"])} />
          disabled
        </label>
      </td>
      <td class="faint">{u.lastLoginTime ? `last sign-in ${fmtTime(u.lastLoginTime)}` : "never signed in"}</td>
    </tr>
  );
}

function NewUser({ onCreate }: { onCreate: (u: Pick<User, "username" | "password" | "displayName" | "role">) => Promise<boolean> }) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [admin, setAdmin] = useState(false);
  return (
    <form
      class="inline-form card"
      data-testid="new-user"
      onSubmit={async (e) => {
        e.preventDefault();
        if (await onCreate({ username: username.trim(), password, displayName: username.trim(), role: admin ? UserRole.ADMIN : UserRole.USER })) {
          setUsername("");
          setPassword("");
        }
      }}
    >
      <input name="new-username" placeholder="Username" required value={username} onInput={(e) => setUsername(e.currentTarget.value)} />
      <input name="new-password" type="password" placeholder="Password" autoComplete="new-password" required value={password} onInput={(e) => setPassword(e.currentTarget.value)} />
      <label class="check">
        <input type="checkbox" checked={admin} onChange={(e) => setAdmin(e.currentTarget.checked)} /> admin
      </label>
      <button class="btn primary" type="submit" disabled={!username.trim() || !password}>
        Add user
      </button>
    </form>
  );
}

function KeyRow({ apiKey: k, owner, onRevoke }: { apiKey: ApiKey; owner: string; onRevoke: () => void }) {
  return (
    <tr data-testid={`key-${k.name}`}>
      <td>
        <b>{k.name}</b> <span class="mono faint">{k.prefix}…</span>
      </td>
      <td>{owner}</td>
      <td class="faint">{k.scopes.join(", ") || "all"}</td>
      <td class="faint">{k.lastUsedTime ? `used ${fmtTime(k.lastUsedTime)}` : "never used"}</td>
      <td class="actions">
        {k.revoked ? (
          <Badge tone="warn">revoked</Badge>
        ) : (
          <button class="btn small ghost" onClick={onRevoke}>
            Revoke
          </button>
        )}
      </td>
    </tr>
  );
}

function NewKey({ users, onCreate }: { users: User[]; onCreate: (k: Pick<ApiKey, "name" | "ownerId">) => Promise<boolean> }) {
  const [name, setName] = useState("");
  const [owner, setOwner] = useState("");
  return (
    <form
      class="inline-form card"
      data-testid="new-key"
      onSubmit={async (e) => {
        e.preventDefault();
        if (await onCreate({ name: name.trim(), ownerId: owner })) setName("");
      }}
    >
      <input name="key-name" placeholder="Key name" required value={name} onInput={(e) => setName(e.currentTarget.value)} />
      <select name="key-owner" value={owner} onChange={(e) => setOwner(e.currentTarget.value)}>
        <option value="">for me</option>
        {users.map((u) => (
          <option key={u.id} value={u.id}>
            for {u.username}
          </option>
        ))}
      </select>
      <button class="btn primary" type="submit" disabled={!name.trim()}>
        Create key
      </button>
    </form>
  );
}

function AuditLog({ userName }: { userName: (id: string) => string }) {
  const [action, setAction] = useState("");
  const [pages, setPages] = useState<{ events: AuditEvent[]; next: string }>({ events: [], next: "" });
  const first = useAsync(async () => {
    const res = await tc.admin.listAuditEvents({ pageSize: AUDIT_PAGE, action: action.trim() });
    setPages({ events: [], next: res.nextPageToken });
    return res.events;
  }, [action]);
  const older = useAction();
  const [open, setOpen] = useState<string | null>(null);

  const more = () =>
    older.act(async () => {
      const res = await tc.admin.listAuditEvents({ pageSize: AUDIT_PAGE, action: action.trim(), pageToken: pages.next });
      setPages((p) => ({ events: [...p.events, ...res.events], next: res.nextPageToken }));
    });
  const events = [...(first.data ?? []), ...pages.events];
  return (
    <div data-testid="audit">
      <div class="inline-form">
        <input name="audit-action" placeholder="Filter by action, e.g. flow.publish" value={action} onChange={(e) => setAction(e.currentTarget.value)} />
      </div>
      <ErrorBox error={first.error ?? older.error} onRetry={first.reload} />
      {first.data && events.length === 0 && <Empty title="Nothing recorded">No audit event matches.</Empty>}
      {events.length > 0 && (
        <table class="table">
          <tbody>
            {events.map((e) => (
              <Fragment key={e.id}>
                <tr data-testid="audit-event" data-action={e.action} onClick={() => setOpen(open === e.id ? null : e.id)} class="clickable">
                  <td class="faint">{fmtTime(e.time)}</td>
                  <td>{e.actorName || userName(e.actorId) || "system"}</td>
                  <td class="mono">{e.action}</td>
                  <td class="faint">
                    {e.resourceType} <span class="mono">{e.resourceId.slice(-8)}</span>
                  </td>
                  <td>{e.code ? <Badge tone="bad">code {e.code}</Badge> : null}</td>
                </tr>
                {open === e.id && (
                  <tr>
                    <td colSpan={5}>
                      <Json value={{ client_ip: e.clientIp, user_agent: e.userAgent, trace_id: e.traceId, api_key_id: e.apiKeyId, detail: e.detail ?? {} }} />
                    </td>
                  </tr>
                )}
              </Fragment>
            ))}
          </tbody>
        </table>
      )}
      {pages.next && (
        <button class="btn small" onClick={more} disabled={older.busy}>
          Older events
        </button>
      )}
    </div>
  );
}
