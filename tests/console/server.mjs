// The Server page: find a setting, change it, have the server check it, save it; the recent request errors
// are listed.
import { assert, run, shot, signIn } from "./harness.mjs";

const KEY = process.env.CONFIG_KEY;
const VALUE = process.env.CONFIG_VALUE;

run("server", async (page, result) => {
  await signIn(page, "/server");
  await page.fill("input[name=config-filter]", KEY);
  const row = page.getByTestId(`config-${KEY}`);
  await row.waitFor();
  result.before = await row.locator(`input[name="config-${KEY}"]`).inputValue();
  await row.locator(`input[name="config-${KEY}"]`).fill(VALUE);
  await page.getByRole("button", { name: "Check" }).click();
  result.checked = await page.getByTestId("config-notice").textContent();
  assert(/accepts/.test(result.checked), `the server checked the value: ${result.checked}`);
  await page.getByTestId("save-config").click();
  await page.getByTestId("config-notice").getByText("Saved").waitFor();
  result.saved = await page.getByTestId("config-notice").textContent();
  result.after = await row.locator(`input[name="config-${KEY}"]`).inputValue();
  result.errorRows = await page.getByTestId("errors").locator("[data-testid=error-row]").count();
  result.errorPaths = await page.getByTestId("errors").locator("[data-testid=error-row] td.mono").allTextContents();
  await shot(page, "60-server-settings");
});
