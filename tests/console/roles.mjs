// Roles: on the Roles page create a custom role, tick two permissions and save, untick one and save again; see a
// built-in role read-only; on the Access page give a user the new role with the role selector; then delete a role
// nobody holds. Then a group admin (a builder who may look users up, without roles.manage or users.manage) signs in:
// the same pages show roles and users without the controls that create, change, delete or assign roles.
import { run, shot, signIn } from "./harness.mjs";

const MEMBER = process.env.MEMBER;
const GUEST = process.env.GUEST;

/** How many of the role controls the page shows now. */
async function roleControls(page) {
  const detail = page.getByTestId("role-detail");
  return {
    create: await page.getByRole("button", { name: "Create role" }).count(),
    remove: await detail.getByRole("button", { name: "Delete role…" }).count(),
    save: await detail.getByRole("button", { name: "Save" }).count(),
    enabledBoxes: await detail.locator("input[type=checkbox]:not([disabled])").count(),
  };
}

run("roles", async (page, result) => {
  await signIn(page, "/roles");
  await page.locator(`li[data-role-name="builder"]`).click();
  const detail = page.getByTestId("role-detail");
  await detail.getByRole("heading", { name: "builder" }).waitFor();
  result.builtInDisabled = await detail.locator("input[name='perm-flows.create']").isDisabled();

  await page.locator("[data-testid=new-role] input[name=role-name]").fill("auditors");
  await page.getByRole("button", { name: "Create role" }).click();
  await page.waitForURL(/\/roles\/auditors$/);
  await detail.getByRole("heading", { name: "auditors" }).waitFor();
  await detail.locator("input[name=role-description]").fill("Read the audit log");
  await page.getByRole("button", { name: "Delete role…" }).waitFor();
  result.adminControls = await roleControls(page);
  await detail.locator("input[name='perm-audit.read']").check();
  await detail.locator("input[name='perm-knowledge.create']").check();
  await detail.getByRole("button", { name: "Save" }).click();
  await page.locator(`li[data-role-name="auditors"] .list-sub`).getByText("2 permissions").waitFor();
  await detail.locator("input[name='perm-knowledge.create']").uncheck();
  await detail.getByRole("button", { name: "Save" }).click();
  await page.locator(`li[data-role-name="auditors"] .list-sub`).getByText("1 permission ").waitFor();
  await shot(page, "roles-detail");

  // A throwaway role, deleted.
  await page.locator("[data-testid=new-role] input[name=role-name]").fill("scratch");
  await page.getByRole("button", { name: "Create role" }).click();
  await page.waitForURL(/\/roles\/scratch$/);
  await detail.getByRole("button", { name: "Delete role…" }).click();
  await detail.getByRole("button", { name: "Delete", exact: true }).click();
  await page.waitForURL(/\/roles$/);
  await page.locator(`li[data-role-name="scratch"]`).waitFor({ state: "detached" });
  result.roles = await page.locator("[data-testid=role-list] li").evaluateAll((rows) => rows.map((r) => r.dataset.roleName));

  // The role selector on the Access page.
  await page.getByRole("link", { name: "Access" }).click();
  const select = page.locator(`select[name="role-${MEMBER}"]`);
  await select.waitFor();
  await select.selectOption("auditors");
  await page.waitForFunction((name) => document.querySelector(`select[name="role-${name}"]`)?.value === "auditors", MEMBER);
  await shot(page, "roles-assign");

  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("tab", { name: "Username & password" }).click();
  await page.fill("input[name=username]", GUEST);
  await page.fill("input[name=password]", process.env.PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByTestId("whoami").waitFor();
  await page.goto(`${process.env.BASE_URL}/roles/auditors`);
  await detail.getByRole("heading", { name: "auditors" }).waitFor();
  await page.waitForLoadState("networkidle"); // the role's permissions are known: nothing more will appear
  result.guestControls = await roleControls(page);
  result.guestSeesPermissions = await detail.locator("[data-permission]").count();
  await shot(page, "roles-guest");
  await page.goto(`${process.env.BASE_URL}/access`);
  await page.getByTestId(`role-of-${MEMBER}`).waitFor();
  await page.waitForLoadState("networkidle");
  result.guestRoleSelects = await page.locator("select[name^='role-']").count();
  result.guestSeesRoleOf = await page.getByTestId(`role-of-${MEMBER}`).textContent();
});
