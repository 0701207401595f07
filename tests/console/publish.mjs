// An assistant's Share and Publish as API dialogs: share ASSISTANT_ID with user MEMBER at edit level, then create a
// key restricted to the assistant and read the iframe snippet shown (its key is checked by test_publish_browser.py).
import { run, shot, signIn } from "./harness.mjs";

run("publish", async (page, result) => {
  await signIn(page, `/assistants/${process.env.ASSISTANT_ID}`);
  const detail = page.getByTestId("assistant-detail");
  await detail.getByRole("button", { name: "Share" }).click();
  const dialog = page.getByTestId("share-dialog");
  await dialog.getByText("Not shared").waitFor();
  const form = dialog.getByTestId("new-grant");
  await form.locator("select[name=grantee-type]").selectOption({ label: "user" });
  await form.locator("input[name=grantee-user]").fill(process.env.MEMBER);
  await form.locator("select[name=grant-new-level]").selectOption({ label: "edit" });
  await form.getByRole("button", { name: "Share" }).click();
  await dialog.locator("[data-testid=grant][data-level=edit]").waitFor();
  result.grants = await dialog.locator("[data-testid=grant]").evaluateAll((rows) => rows.map((r) => ({ grantee: r.dataset.grantee, level: r.dataset.level })));
  await dialog.getByRole("button", { name: "Close" }).click();

  await detail.getByRole("button", { name: "Publish as API" }).click();
  const publish = page.getByTestId("publish-dialog");
  await publish.getByRole("button", { name: "Create key" }).click();
  await publish.getByTestId("publish-snippet").waitFor();
  result.snippet = await publish.getByTestId("publish-snippet").inputValue();
  result.secret = await publish.getByTestId("publish-secret").inputValue();
  await shot(page, "assistant-publish");
});
