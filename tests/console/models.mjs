// The Models page: add an OpenAI-compatible provider (a fake upstream started by the test) with its key, add a
// model, test it, make it the default chat model, restrict it, then chat through it (as an admin). The answer is
// the fake upstream's.
import { assert, run, shot, signIn } from "./harness.mjs";

const FAKE_URL = process.env.FAKE_URL;
const FAKE_KEY = process.env.FAKE_KEY;

run("models", async (page, result) => {
  await signIn(page, "/models");
  await page.getByTestId("providers").waitFor();

  const provider = page.getByTestId("new-provider");
  await provider.locator("input[name=provider-name]").fill("Fake OpenAI");
  await provider.locator("select[name=provider-type]").selectOption({ label: "OpenAI-compatible" });
  await provider.locator("input[name=provider-base-url]").fill(`${FAKE_URL}/v1`);
  await provider.locator("input[name=provider-api-key]").fill(FAKE_KEY);
  await provider.getByRole("button", { name: "Add provider" }).click();
  const row = page.getByTestId("providers").locator("tr", { hasText: "Fake OpenAI" });
  await row.waitFor();
  result.providerRow = (await row.locator("td").allTextContents()).map((t) => t.trim());
  assert(!result.providerRow.join(" ").includes(FAKE_KEY), `the key is not shown: ${result.providerRow}`);

  const model = page.getByTestId("new-model");
  await model.locator("select[name=model-provider]").selectOption({ label: "Fake OpenAI" });
  await model.locator("input[name=model-name]").fill("fake-gpt");
  await model.locator("input[name=model-upstream]").fill("gpt-fake-1");
  await model.getByRole("button", { name: "Add model" }).click();
  const modelRow = page.getByTestId("model-fake-gpt");
  await modelRow.waitFor();

  await modelRow.getByRole("button", { name: "Test" }).click();
  const test = modelRow.getByTestId("test-result");
  await test.waitFor({ timeout: 30_000 });
  result.test = (await test.textContent()).trim();
  assert(result.test.startsWith("ok"), `the model test passed: ${result.test}`);

  const defaults = page.getByTestId("defaults");
  const responded = page.waitForResponse((r) => r.url().includes("/v1/llm/defaults") && r.request().method() === "PATCH");
  await defaults.locator("select[name=default-chat_model_id]").selectOption({ label: "fake-gpt" });
  result.defaultsStatus = (await responded).status();
  await shot(page, "40-models-page");

  // Restrict it (admins still use it) and open its Share dialog: models are shared at level use only.
  const restricted = page.waitForResponse((r) => r.url().includes("/v1/models/") && r.request().method() === "PATCH");
  await modelRow.locator("input[name=restricted-fake-gpt]").check();
  result.restrictStatus = (await restricted).status();
  await modelRow.getByRole("button", { name: "Share" }).click();
  const dialog = page.getByTestId("share-dialog");
  await dialog.waitFor();
  result.shareLevels = await dialog.locator("select[name=grant-new-level] option").allTextContents();
  await dialog.getByRole("button", { name: "Close" }).click();

  // Chat through it.
  await page.getByRole("link", { name: "Chat" }).click();
  await page.locator("select[name=target]").selectOption({ label: "fake-gpt" });
  await page.getByRole("button", { name: "New chat" }).click();
  await page.waitForURL(/\/chat\/[^/]+$/);
  result.sessionId = new URL(page.url()).pathname.split("/").pop();
  await page.fill("textarea[name=question]", "Say something");
  await page.getByRole("button", { name: "Send" }).click();
  await page.waitForFunction(() => [...document.querySelectorAll("[data-testid=answer]")].pop()?.dataset.status === "complete", null, { timeout: 30_000 });
  result.answer = await page.locator("[data-testid=answer-text]").last().getAttribute("data-source");
  result.header = await page.locator(".conversation .pane-head .muted").first().textContent();
  await shot(page, "41-chat-through-new-provider");
});
