// The Access page: add a user, create an API key for that user (its secret is shown once, and works), revoke it
// (the secret stops working), and find both in the audit log, filtered by action.
import { BASE_URL, assert, run, shot, signIn } from "./harness.mjs";

const me = (secret) => fetch(`${BASE_URL}/v1/auth/me`, { headers: { authorization: `Bearer ${secret}` } });

run("access", async (page, result) => {
  await signIn(page, "/access");
  await page.getByTestId("users").waitFor();

  const newUser = page.getByTestId("new-user");
  await newUser.locator("input[name=new-username]").fill("grace");
  await newUser.locator("input[name=new-password]").fill("correct-horse-battery-staple");
  await newUser.getByRole("button", { name: "Add user" }).click();
  await page.getByTestId("user-grace").waitFor();

  const newKey = page.getByTestId("new-key");
  await newKey.locator("input[name=key-name]").fill("grace's laptop");
  await newKey.locator("select[name=key-owner]").selectOption({ label: "for grace" });
  await newKey.getByRole("button", { name: "Create key" }).click();
  const secretBox = page.getByTestId("new-secret");
  await secretBox.waitFor();
  result.secret = (await secretBox.locator("code").textContent()).trim();
  const mine = await me(result.secret);
  result.meStatus = mine.status;
  result.meUser = (await mine.json()).user?.username;
  assert(result.meUser === "grace", `the shown secret signs in as grace: ${result.meStatus} ${result.meUser}`);
  await shot(page, "50-access-key-created");
  await secretBox.getByRole("button", { name: "Done" }).click();
  assert((await page.getByTestId("new-secret").count()) === 0, "the secret is gone once dismissed");

  const row = page.getByTestId("key-grace's laptop");
  await row.getByRole("button", { name: "Revoke" }).click();
  await row.getByText("revoked").waitFor();
  result.afterRevoke = (await me(result.secret)).status;
  assert(result.afterRevoke === 401, `a revoked key is refused: ${result.afterRevoke}`);

  const audit = page.getByTestId("audit");
  await audit.locator("input[name=audit-action]").fill("api_key.revoke");
  await audit.locator("input[name=audit-action]").press("Enter");
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll("[data-testid=audit-event]")];
    return rows.length > 0 && rows.every((r) => r.dataset.action === "api_key.revoke");
  });
  result.auditActions = await audit.locator("[data-testid=audit-event]").evaluateAll((rows) => rows.map((r) => r.dataset.action));
  await audit.locator("[data-testid=audit-event]").first().click();
  await audit.locator("pre").first().waitFor();
  await shot(page, "51-access-audit");
});
