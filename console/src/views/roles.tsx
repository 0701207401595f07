// Roles: named permission sets (RoleService). Everyone may look; holders of roles.manage create custom roles with
// permission checkboxes, change them and delete them (others do not see those controls). Built-in roles (admin,
// group_admin, builder, user) are shown read-only. Users get a role on the Access page.
import type { Permission, Role } from "@typecase/client/gen/typecase/v1/roles_pb.js";
import { useState } from "preact/hooks";
import { tc } from "../api";
import { CreateByName, Directory, DirectoryEntry } from "../components/directory";
import { Badge, Empty, ErrorBox, plural, useAction, useAsync } from "../components/ui";
import { usePermissions } from "../permissions";
import { navigate } from "../router";

export function RolesView({ name }: { name?: string }) {
  const list = useAsync(async () => (await tc.roles.listRoles({})).roles, []);
  const perms = useAsync(async () => (await tc.roles.listPermissions({})).permissions, []);
  const current = list.data?.find((r) => r.name === name);
  const manage = usePermissions().has("roles.manage");
  return (
    <Directory
      create={
        manage && (
          <CreateByName
            testId="new-role"
            field="role-name"
            placeholder="New role name"
            label="Create role"
            create={async (roleName) => {
              const res = await tc.roles.createRole({ role: { name: roleName } });
              await list.reload();
              if (res.role) navigate(`/roles/${res.role.name}`);
            }}
          />
        )
      }
      list={list}
      loadingLabel="Loading roles…"
      listTestId="role-list"
      detail={
        <>
          {!name && (
            <Empty title="Roles">
              A role is a set of permissions; every user has one. Built-in roles cannot change; create a custom role to
              give a team exactly the permissions it needs.
            </Empty>
          )}
          {name && list.data && !current && <Empty title="Role not found">It may have been deleted.</Empty>}
          {current && perms.data && <RoleDetail key={current.name + current.updateTime?.seconds} role={current} editable={manage && !current.builtIn} permissions={perms.data} onChanged={list.reload} />}
        </>
      }
    >
      {list.data?.map((r) => (
        <DirectoryEntry
          key={r.name}
          href={`/roles/${r.name}`}
          active={r.name === name}
          data={{ "data-role-name": r.name }}
          title={
            <>
              {r.name} {r.builtIn && <Badge tone="info">built-in</Badge>}
            </>
          }
          sub={`${plural(r.permissions.length, "permission")} · ${plural(r.userCount, "user")}`}
        />
      ))}
    </Directory>
  );
}

function RoleDetail({ role: r, editable, permissions, onChanged }: { role: Role; editable: boolean; permissions: Permission[]; onChanged: () => Promise<void> }) {
  const [chosen, setChosen] = useState<string[]>(r.permissions);
  const [description, setDescription] = useState(r.description);
  const { busy, error, act } = useAction();
  const [confirm, setConfirm] = useState(false);

  const toggle = (p: string, on: boolean) => setChosen((prev) => (on ? [...prev.filter((x) => x !== p), p] : prev.filter((x) => x !== p)));
  const changed = description !== r.description || chosen.length !== r.permissions.length || chosen.some((p) => !r.permissions.includes(p));

  return (
    <div class="detail" data-testid="role-detail">
      <div class="pane-head">
        <div>
          <h2>{r.name}</h2>
          <span class="muted">
            {r.builtIn ? "Built-in role" : "Custom role"} · {plural(r.userCount, "user")}
          </span>
        </div>
        {editable &&
          (confirm ? (
            <span class="row-actions">
              <button class="btn small danger" disabled={busy} onClick={() => act(async () => (await tc.roles.deleteRole({ name: r.name }), navigate("/roles"), await onChanged()))}>
                Delete
              </button>
              <button class="btn small ghost" onClick={() => setConfirm(false)}>
                Keep
              </button>
            </span>
          ) : (
            <button class="btn small ghost" onClick={() => setConfirm(true)}>
              Delete role…
            </button>
          ))}
      </div>
      <ErrorBox error={error} />
      <form
        data-testid="edit-role"
        onSubmit={(e) => {
          e.preventDefault();
          void act(async () => {
            await tc.roles.updateRole({ role: { name: r.name, description, permissions: chosen }, updateMask: { paths: ["description", "permissions"] } });
            await onChanged();
          });
        }}
      >
        <input name="role-description" aria-label="Description" class="grow" placeholder="Description" disabled={!editable} value={description} onInput={(e) => setDescription(e.currentTarget.value)} />
        <table class="table" data-testid="role-permissions">
          <tbody>
            {permissions.map((p) => (
              <tr key={p.name} data-permission={p.name}>
                <td>
                  <label class="check">
                    <input type="checkbox" name={`perm-${p.name}`} checked={chosen.includes(p.name)} disabled={!editable || busy} onChange={(e) => toggle(p.name, e.currentTarget.checked)} />{" "}
                    <span class="mono">{p.name}</span>
                  </label>
                </td>
                <td class="faint">{p.description}</td>
              </tr>
            ))}
          </tbody>
        </table>
        {editable && (
          <button class="btn primary" type="submit" disabled={busy || !changed}>
            Save
          </button>
        )}
      </form>
    </div>
  );
}
