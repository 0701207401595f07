// The Access page: add a user, create an API key for that user (its secret is shown once, and works), revoke it
// (the secret stops working), and find both in the audit log, filtered by action. Past a page of the log, a double
// click on "Older events" loads the next page once.
import { ADMIN_KEY, BASE_URL, assert, run, shot, signIn } from "./harness.mjs";

const AUDIT_PAGE = 50; // the console's page of audit events

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

  // One more key creation than a page holds (grace's laptop was the first); the events are the server's, not the page's.
  for (let i = 0; i < AUDIT_PAGE; i++) {
    const made = await fetch(`${BASE_URL}/v1/api-keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ name: `bulk key ${i}` }),
    });
    assert(made.ok, `bulk key ${i}: ${made.status}`);
  }
  await audit.locator("input[name=audit-action]").fill("api_key.create");
  await audit.locator("input[name=audit-action]").press("Enter");
  const older = audit.getByRole("button", { name: "Older events" });
  const olderLoads = [];
  page.on("request", (r) => r.url().includes("/v1/admin/audit?") && r.url().includes("page_token=") && olderLoads.push(r));
  await older.dblclick();
  await older.waitFor({ state: "detached" }); // the last page is in
  await Promise.all(olderLoads.map((r) => r.response()));
  result.olderLoads = olderLoads.length;
  assert(result.olderLoads === 1, `the next page was asked for once: ${result.olderLoads}`);
  result.createRows = await audit.locator("[data-testid=audit-event]").count();
  assert(result.createRows === AUDIT_PAGE + 1, `each key creation shown once: ${result.createRows} rows`);
  await shot(page, "52-access-audit-older");
});
