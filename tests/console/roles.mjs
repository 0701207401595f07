// Roles: on the Roles page create a custom role, tick two permissions and save, untick one and save again; see a
// built-in role read-only; on the Access page give a user the new role with the role selector; then delete a role
// nobody holds.
import { run, shot, signIn } from "./harness.mjs";

const MEMBER = process.env.MEMBER;

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
});
