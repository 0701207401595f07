// Groups: the teams that sharing grants open resources to. Holders of groups.manage create and delete groups; an
// admin or a group admin manages a group's members (added by username, or by user id when the caller may not list
// users) and whether each member is a group admin. Non-admins see only the groups they belong to.
import type { Group, GroupMember } from "@typecase/client/gen/typecase/v1/groups_pb.js";
import { useState } from "preact/hooks";
import { tc } from "../api";
import { CreateByName, Directory, DirectoryEntry } from "../components/directory";
import { resolveUserId } from "../components/share-dialog";
import { Badge, Empty, ErrorBox, Loading, fmtTime, plural, useAction, useAsync } from "../components/ui";
import { usePermissions } from "../permissions";
import { navigate } from "../router";

export function GroupsView({ groupId }: { groupId?: string }) {
  const list = useAsync(async () => (await tc.groups.listGroups({ pageSize: 500 })).groups, []);
  const current = list.data?.find((g) => g.id === groupId);
  // Creating and deleting groups takes groups.manage: others do not get the buttons (the server refuses them anyway).
  const manage = usePermissions().has("groups.manage");

  return (
    <Directory
      create={
        manage && (
          <CreateByName
            testId="new-group"
            field="group-name"
            placeholder="New group name"
            label="Create group"
            create={async (name) => {
              const res = await tc.groups.createGroup({ group: { name } });
              await list.reload();
              if (res.group) navigate(`/groups/${res.group.id}`);
            }}
          />
        )
      }
      list={list}
      loadingLabel="Loading groups…"
      listTestId="group-list"
      empty={<Empty title="No groups yet">Administrators create groups; share resources with a group to open them to its members.</Empty>}
      detail={
        <>
          {!groupId && (
            <Empty title="Groups">
              A group is a set of users. Share a knowledge base, flow, tool provider, model or assistant with a group to
              open it to every member, at use or edit level.
            </Empty>
          )}
          {groupId && list.data && !current && <Empty title="Group not found">It may have been deleted, or you are not a member.</Empty>}
          {current && <GroupDetail key={current.id} group={current} manage={manage} onChanged={list.reload} />}
        </>
      }
    >
      {list.data?.map((g) => (
        <DirectoryEntry
          key={g.id}
          href={`/groups/${g.id}`}
          active={g.id === groupId}
          data={{ "data-group-name": g.name }}
          title={g.name}
          sub={`${plural(g.memberCount, "member")} · ${g.description || "no description"}`}
        />
      ))}
    </Directory>
  );
}

function GroupDetail({ group: g, manage, onChanged }: { group: Group; manage: boolean; onChanged: () => Promise<void> }) {
  const members = useAsync(async () => (await tc.groups.listGroupMembers({ groupId: g.id, pageSize: 500 })).members, [g.id]);
  const { busy, error, act } = useAction();
  const [who, setWho] = useState("");
  const [asAdmin, setAsAdmin] = useState(false);
  const [confirm, setConfirm] = useState(false);
  const [name, setName] = useState(g.name);
  const [description, setDescription] = useState(g.description);

  const refresh = async () => {
    await members.reload();
    await onChanged();
  };

  // The checkbox follows the click at once; a refusal puts it back (with the server's reason shown).
  async function setMember(m: GroupMember, groupAdmin: boolean) {
    const put = (value: boolean) => members.setData((prev) => (prev ?? []).map((x) => (x.userId === m.userId ? ({ ...x, groupAdmin: value } as GroupMember) : x)));
    put(groupAdmin);
    if (!(await act(async () => void (await tc.groups.addGroupMember({ groupId: g.id, member: { userId: m.userId, groupAdmin } }))))) put(m.groupAdmin);
  }

  return (
    <div class="detail" data-testid="group-detail">
      <div class="pane-head">
        <div>
          <h2>{g.name}</h2>
          <span class="muted">
            {g.description || "No description"} · {plural(g.memberCount, "member")} · created {fmtTime(g.createTime)}
          </span>
        </div>
        {confirm ? (
          <span class="row-actions">
            <span class="muted">Delete the group and the grants made to it?</span>
            <button
              class="btn small danger"
              onClick={() =>
                act(async () => {
                  await tc.groups.deleteGroup({ groupId: g.id });
                  await onChanged();
                  navigate("/groups");
                })
              }
            >
              Delete
            </button>
            <button class="btn small ghost" onClick={() => setConfirm(false)}>
              Keep
            </button>
          </span>
        ) : (
          manage && (
            <button class="btn small ghost" onClick={() => setConfirm(true)}>
              Delete group…
            </button>
          )
        )}
      </div>
      <ErrorBox error={error} />
      <form
        class="inline-form"
        data-testid="edit-group"
        style={{ marginBottom: "12px" }}
        onSubmit={async (e) => {
          e.preventDefault();
          await act(async () => {
            await tc.groups.updateGroup({ group: { id: g.id, name: name.trim(), description }, updateMask: { paths: ["name", "description"] } });
            await onChanged();
          });
        }}
      >
        <input name="group-edit-name" aria-label="Name" required value={name} onInput={(e) => setName(e.currentTarget.value)} />
        <input name="group-edit-description" aria-label="Description" class="grow" placeholder="Description" value={description} onInput={(e) => setDescription(e.currentTarget.value)} />
        <button class="btn small" type="submit" disabled={busy || !name.trim() || (name.trim() === g.name && description === g.description)}>
          Save
        </button>
      </form>
      <h3>Members</h3>
      <ErrorBox error={members.error} onRetry={members.reload} />
      {members.loading && !members.data && <Loading />}
      {members.data?.length === 0 && <Empty title="No members yet">Add users below.</Empty>}
      {!!members.data?.length && (
        <table class="table" data-testid="group-members">
          <thead>
            <tr>
              <th>User</th>
              <th>Group admin</th>
              <th>Joined</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {members.data.map((m) => (
              <tr key={m.userId} data-member={m.username || m.userId}>
                <td>
                  <b>{m.username || m.userId}</b> {m.groupAdmin && <Badge tone="info">group admin</Badge>}
                  <div class="mono faint">{m.userId}</div>
                </td>
                <td>
                  <label class="check">
                    <input type="checkbox" name="group-admin" checked={m.groupAdmin} disabled={busy} onChange={(e) => setMember(m, e.currentTarget.checked)} /> group admin
                  </label>
                </td>
                <td class="faint">{fmtTime(m.createTime)}</td>
                <td class="actions">
                  <button
                    class="btn small ghost"
                    disabled={busy}
                    onClick={() => act(async () => (await tc.groups.removeGroupMember({ groupId: g.id, userId: m.userId }), await refresh()))}
                  >
                    Remove
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <form
        class="inline-form"
        data-testid="add-member"
        style={{ marginTop: "12px" }}
        onSubmit={async (e) => {
          e.preventDefault();
          const ok = await act(async () => {
            const userId = await resolveUserId(who);
            await tc.groups.addGroupMember({ groupId: g.id, member: { userId, groupAdmin: asAdmin } });
            await refresh();
          });
          if (ok) {
            setWho("");
            setAsAdmin(false);
          }
        }}
      >
        <input name="member-user" class="grow" placeholder="Username or user id" required value={who} onInput={(e) => setWho(e.currentTarget.value)} />
        <label class="check">
          <input type="checkbox" name="member-admin" checked={asAdmin} onChange={(e) => setAsAdmin(e.currentTarget.checked)} /> group admin
        </label>
        <button class="btn primary" type="submit" disabled={busy || !who.trim()}>
          Add member
        </button>
      </form>
    </div>
  );
}
