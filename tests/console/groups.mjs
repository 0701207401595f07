// Groups and sharing: create a group on the Groups page, describe it, add a member by username and make them a group admin,
// then open a knowledge base, share it with the group at use level in the Share dialog, see the grant listed and
// raise it to edit there;
// a second grant to the member directly is made and revoked.
import { assert, run, shot, signIn } from "./harness.mjs";

const MEMBER = process.env.MEMBER;
const KB_ID = process.env.KB_ID;

run("groups", async (page, result) => {
  await signIn(page, "/groups");
  await page.getByRole("link", { name: "Groups" }).waitFor();
  await page.locator("[data-testid=new-group] input[name=group-name]").fill("research");
  await page.getByRole("button", { name: "Create group" }).click();
  await page.waitForURL(/\/groups\/[^/]+$/);
  result.groupId = new URL(page.url()).pathname.split("/").pop();
  const detail = page.getByTestId("group-detail");
  await detail.getByRole("heading", { name: "research" }).waitFor();
  const edit = detail.getByTestId("edit-group");
  await edit.locator("input[name=group-edit-description]").fill("Reading group");
  await edit.getByRole("button", { name: "Save" }).click();
  await page.locator(`li[data-group-name="research"] .list-sub`).getByText("Reading group").waitFor();

  const add = detail.getByTestId("add-member");
  await add.locator("input[name=member-user]").fill(MEMBER);
  await add.getByRole("button", { name: "Add member" }).click();
  const row = detail.locator(`[data-testid=group-members] tr[data-member="${MEMBER}"]`);
  await row.waitFor();
  await row.locator("input[name=group-admin]").check();
  await row.getByText("group admin", { exact: true }).first().waitFor();
  await row.locator(".badge").waitFor();
  result.memberBadge = await row.locator(".badge").textContent();
  result.listSub = await page.locator(`li[data-group-name="research"] .list-sub`).textContent();
  await shot(page, "groups-detail");

  // Share the knowledge base with the group (edit), and with the member directly (use), then revoke the latter.
  await page.goto(`${process.env.BASE_URL}/knowledge/${KB_ID}`);
  await page.getByRole("button", { name: "Share" }).first().click();
  const dialog = page.getByTestId("share-dialog");
  await dialog.getByText("Not shared").waitFor();
  const form = dialog.getByTestId("new-grant");
  await form.locator("select[name=grantee-type]").selectOption({ label: "group" });
  await form.locator("select[name=grantee-group]").selectOption({ label: "research" });
  await form.locator("select[name=grant-new-level]").selectOption({ label: "use" });
  await form.getByRole("button", { name: "Share" }).click();
  const groupGrant = dialog.locator(`[data-testid=grant][data-grantee="group research"]`);
  await groupGrant.waitFor();
  result.groupLevelGranted = await groupGrant.getAttribute("data-level");
  // Raise the group's level in the list (UpdateGrant).
  await groupGrant.locator("select[name=grant-level]").selectOption({ label: "edit" });
  await dialog.locator(`[data-testid=grant][data-grantee="group research"][data-level=edit]`).waitFor();

  await form.locator("select[name=grantee-type]").selectOption({ label: "user" });
  await form.locator("input[name=grantee-user]").fill(MEMBER);
  await form.getByRole("button", { name: "Share" }).click();
  await dialog.locator("[data-testid=grant]").nth(1).waitFor();
  result.grantsBeforeRevoke = await dialog.locator("[data-testid=grant]").evaluateAll((rows) => rows.map((r) => ({ grantee: r.dataset.grantee, level: r.dataset.level })));
  await shot(page, "groups-share");
  const userGrant = dialog.locator(`[data-testid=grant][data-grantee^="user "]`);
  await userGrant.getByRole("button", { name: "Revoke" }).click();
  await userGrant.waitFor({ state: "detached" });
  result.grants = await dialog.locator("[data-testid=grant]").evaluateAll((rows) => rows.map((r) => ({ grantee: r.dataset.grantee, level: r.dataset.level })));
  assert(result.grants.length === 1, `one grant left: ${JSON.stringify(result.grants)}`);

  // The member (a group admin, not an admin) signs in with a password: sees the group and its members, without the
  // admin-only create and delete buttons.
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("tab", { name: "Username & password" }).click();
  await page.fill("input[name=username]", MEMBER);
  await page.fill("input[name=password]", process.env.PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByTestId("whoami").waitFor();
  await page.goto(`${process.env.BASE_URL}/groups/${result.groupId}`);
  await page.getByTestId("group-detail").getByRole("heading", { name: "research" }).waitFor();
  await page.getByTestId("group-members").waitFor();
  result.memberSeesCreate = await page.getByRole("button", { name: "Create group" }).count();
  result.memberSeesDelete = await page.getByRole("button", { name: "Delete group…" }).count();
  result.memberGroups = await page.locator("[data-testid=group-list] li").evaluateAll((xs) => xs.map((x) => x.dataset.groupName));
  await shot(page, "groups-member");
});
