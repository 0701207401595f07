// The "Share" dialog of a resource (knowledge bases, flows, assistants, tool providers: GroupService grants): lists its
// grants, grants it to a group or a user at use or edit, changes a level, revokes. Only the resource's owner and
// admins manage grants; anyone else gets the server's PERMISSION_DENIED/NOT_FOUND shown in the dialog.
import { GranteeType, ShareLevel, type Grant } from "@typecase/client/gen/typecase/v1/groups_pb.js";
import { useState } from "preact/hooks";
import { TypecaseError, tc } from "../api";
import { Empty, ErrorBox, Loading, fmtTime, useAction, useAsync } from "./ui";

/**
 * A user id for what a person typed: the username of an existing user (looked up with ListUsers, which admins
 * may call), else the text itself taken as a user id (the server answers NOT_FOUND if there is no such user).
 */
export async function resolveUserId(typed: string): Promise<string> {
  const text = typed.trim();
  try {
    const res = await tc.auth.listUsers({ keyword: text, pageSize: 50 });
    const hit = res.users.find((u) => u.username.toLowerCase() === text.toLowerCase() || u.id === text);
    if (hit) return hit.id;
  } catch (e) {
    // Not an admin: usernames cannot be looked up, so the text must be a user id.
    if (!(e instanceof TypecaseError && e.code === "PERMISSION_DENIED")) throw e;
  }
  return text;
}

const LEVELS: { value: ShareLevel; label: string }[] = [
  { value: ShareLevel.USE, label: "use" },
  { value: ShareLevel.EDIT, label: "edit" },
];

export function ShareDialog({ resourceType, resourceId, title, onClose, useOnly = false }: { resourceType: string; resourceId: string; title: string; onClose: () => void; useOnly?: boolean }) {
  // Models are shared at level use only (admins manage them).
  const levels = useOnly ? LEVELS.slice(0, 1) : LEVELS;
  const grants = useAsync(async () => (await tc.groups.listGrants({ resourceType, resourceId, pageSize: 500 })).grants, [resourceType, resourceId]);
  const groups = useAsync(async () => (await tc.groups.listGroups({ pageSize: 500 })).groups, []);
  // Usernames for user grants: admins may list users; anyone else sees user ids.
  const users = useAsync(async () => {
    try {
      return (await tc.auth.listUsers({ pageSize: 500 })).users;
    } catch (e) {
      if (e instanceof TypecaseError && e.code === "PERMISSION_DENIED") return [];
      throw e;
    }
  }, []);
  const [kind, setKind] = useState<GranteeType>(GranteeType.GROUP);
  const [groupId, setGroupId] = useState("");
  const [user, setUser] = useState("");
  const [level, setLevel] = useState<ShareLevel>(ShareLevel.USE);
  const { busy, error, act } = useAction();

  const groupName = (id: string) => groups.data?.find((g) => g.id === id)?.name;
  const granteeLabel = (g: Grant) =>
    g.granteeType === GranteeType.GROUP
      ? `group ${groupName(g.granteeId) ?? g.granteeId}`
      : `user ${users.data?.find((u) => u.id === g.granteeId)?.username ?? g.granteeId}`;

  const chosenGroup = groupId || groups.data?.[0]?.id || "";
  const ready = kind === GranteeType.GROUP ? !!chosenGroup : !!user.trim();

  return (
    <div class="card" role="dialog" aria-label={`Share ${title}`} data-testid="share-dialog" style={{ padding: "12px", margin: "8px 0 16px" }}>
      <div class="pane-head">
        <h3>Share {title}</h3>
        <button class="btn small ghost" onClick={onClose}>
          Close
        </button>
      </div>
      <ErrorBox error={error} />
      <ErrorBox error={grants.error} onRetry={grants.reload} />
      {grants.loading && !grants.data && <Loading />}
      {grants.data?.length === 0 && <Empty title="Not shared">Only you (and administrators) can see it.</Empty>}
      {!!grants.data?.length && (
        <table class="table" data-testid="grant-list">
          <tbody>
            {grants.data.map((g) => (
              <tr key={g.id} data-testid="grant" data-grantee={granteeLabel(g)} data-level={g.level === ShareLevel.EDIT ? "edit" : "use"}>
                <td>{granteeLabel(g)}</td>
                <td>
                  <select
                    name="grant-level"
                    aria-label="Level"
                    value={String(g.level === ShareLevel.EDIT ? ShareLevel.EDIT : ShareLevel.USE)}
                    disabled={busy}
                    onChange={(e) => {
                      const next = Number(e.currentTarget.value) as ShareLevel;
                      void act(async () => (await tc.groups.updateGrant({ grant: { id: g.id, level: next }, updateMask: { paths: ["level"] } }), await grants.reload()));
                    }}
                  >
                    {levels.map((l) => (
                      <option key={l.value} value={String(l.value)}>
                        {l.label}
                      </option>
                    ))}
                  </select>
                </td>
                <td class="faint">{fmtTime(g.createTime)}</td>
                <td class="actions">
                  <button class="btn small ghost" disabled={busy} onClick={() => act(async () => (await tc.groups.deleteGrant({ grantId: g.id }), await grants.reload()))}>
                    Revoke
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <form
        class="inline-form"
        data-testid="new-grant"
        style={{ marginTop: "10px" }}
        onSubmit={async (e) => {
          e.preventDefault();
          const ok = await act(async () => {
            const granteeId = kind === GranteeType.GROUP ? chosenGroup : await resolveUserId(user);
            await tc.groups.createGrant({ grant: { resourceType, resourceId, granteeType: kind, granteeId, level } });
            await grants.reload();
          });
          if (ok) setUser("");
        }}
      >
        <select name="grantee-type" aria-label="Share with" value={String(kind)} onChange={(e) => setKind(Number(e.currentTarget.value) as GranteeType)}>
          <option value={String(GranteeType.GROUP)}>group</option>
          <option value={String(GranteeType.USER)}>user</option>
        </select>
        {kind === GranteeType.GROUP ? (
          <select name="grantee-group" aria-label="Group" class="grow" value={chosenGroup} onChange={(e) => setGroupId(e.currentTarget.value)}>
            {groups.data?.length === 0 && <option value="">no groups</option>}
            {groups.data?.map((g) => (
              <option key={g.id} value={g.id}>
                {g.name}
              </option>
            ))}
          </select>
        ) : (
          <input name="grantee-user" class="grow" placeholder="Username or user id" value={user} onInput={(e) => setUser(e.currentTarget.value)} />
        )}
        <select name="grant-new-level" aria-label="Level" value={String(level)} onChange={(e) => setLevel(Number(e.currentTarget.value) as ShareLevel)}>
          {levels.map((l) => (
            <option key={l.value} value={String(l.value)}>
              {l.label}
            </option>
          ))}
        </select>
        <button class="btn primary" type="submit" disabled={busy || !ready}>
          Share
        </button>
      </form>
    </div>
  );
}
