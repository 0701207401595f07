// Username + password sign-in: the tokens are kept, an access token about to expire is refreshed with the
// refresh token (which rotates), a non-admin sees a clear error on the admin-only proxy view, and sign-out
// forgets everything.
import { BASE_URL, assert, run, shot, sleep } from "./harness.mjs";

const USERNAME = process.env.USERNAME_;
const PASSWORD = process.env.PASSWORD_;
const stored = (page) => page.evaluate(() => JSON.parse(localStorage.getItem("typecase.console.auth") || "null"));

run("password", async (page, result) => {
  await page.goto(BASE_URL + "/knowledge");
  await page.getByRole("tab", { name: "Username & password" }).click();
  await page.fill("input[name=username]", USERNAME);
  await page.fill("input[name=password]", "not-the-password");
  await page.getByRole("button", { name: "Sign in" }).click();
  result.refusal = await page.getByRole("alert").textContent();
  assert(/could not sign in/i.test(result.refusal), `a wrong password is refused: ${result.refusal}`);

  await page.fill("input[name=password]", PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  result.whoami = await page.getByTestId("whoami").textContent();
  assert(result.whoami.includes("Ada Lovelace") && result.whoami.includes("(builder)"), `signed in as ${result.whoami}`);
  assert(new URL(page.url()).pathname === "/knowledge", "stays on the page that asked for sign-in");
  const first = await stored(page);
  assert(first.kind === "password" && first.accessToken && first.refreshToken, "tokens are kept in localStorage");
  result.firstRefreshToken = first.refreshToken;

  // The access token is about to expire: the next page load refreshes it before anything else. (A second
  // passes first: tokens issued within the same second may be byte-identical.)
  await sleep(1100);
  await page.evaluate(() => {
    const c = JSON.parse(localStorage.getItem("typecase.console.auth"));
    c.expiresAt = Date.now() + 2000;
    localStorage.setItem("typecase.console.auth", JSON.stringify(c));
  });
  await page.reload();
  await page.getByTestId("whoami").waitFor();
  const second = await stored(page);
  assert(second.accessToken !== first.accessToken, "a new access token");
  assert(second.refreshToken !== first.refreshToken, "a rotated refresh token");
  assert(second.expiresAt > Date.now() + 60_000, "the new token lives longer");
  await page.getByText("No knowledge bases yet").waitFor();

  // Admin-only view, regular user: the server's reason is shown.
  await page.getByRole("link", { name: "Proxy" }).click();
  result.proxyError = await page.locator(".empty").textContent();
  assert(/PERMISSION_DENIED|admin/i.test(result.proxyError), `a clear error for non-admins: ${result.proxyError}`);
  await shot(page, "18-proxy-as-non-admin");

  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("tab", { name: "API key" }).waitFor();
  assert((await stored(page)) === null, "sign-out forgets the tokens");
});
