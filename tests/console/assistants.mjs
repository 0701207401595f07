// The assistant builder: create an assistant with the form (model, instructions with a variable and its default,
// two tools picked from the catalogue, a knowledge base, opening message, suggested questions, max steps, first
// step must call a tool), edit and save it, publish it, try it in the pane (a suggested question; its tool calls
// shown collapsed), then continue the same session on the chat page, where the tool calls show collapsed too.
import { assert, run, shot, signIn } from "./harness.mjs";

const KB_NAME = process.env.KB_NAME;

async function toolSteps(container) {
  const details = container.getByTestId("tool-steps").last();
  await details.locator("summary").click();
  return details.getByTestId("tool-step").evaluateAll((items) =>
    items.map((i) => ({
      name: i.dataset.tool,
      status: i.dataset.status,
      arguments: i.querySelector("[data-testid=tool-arguments]")?.textContent ?? "",
      result: i.querySelector("[data-testid=tool-result-preview]")?.textContent ?? "",
    })),
  );
}

run("assistants", async (page, result) => {
  await signIn(page, "/assistants");
  await page.getByRole("link", { name: "New assistant" }).click();
  const form = page.getByTestId("assistant-form");
  await form.locator("input[name=assistant-name]").fill("Calculator helper");
  await form.locator("input[name=assistant-description]").fill("Adds numbers");
  await form.locator("select[name=assistant-model]").selectOption({ label: "fake-gpt" });
  await form.locator("textarea[name=assistant-instructions]").fill("You add numbers as {{assistant_name}} for {{who}}.");
  await form.getByRole("button", { name: "Add variable" }).click();
  await form.locator("input[name=variable-name-0]").fill("who");
  await form.locator("input[name=variable-description-0]").fill("whom the numbers are for");
  await form.locator("input[name=variable-default-0]").fill("Ada");
  await form.locator("input[name=tool-filter]").fill("add");
  await form.locator("input[name=tool-add]").check();
  await form.locator("input[name=tool-filter]").fill("");
  await form.locator("input[name=tool-current_time]").check();
  await form.locator(`input[name="kb-${KB_NAME}"]`).check();
  await form.locator("textarea[name=assistant-opening]").fill("Hello! I add numbers.");
  await form.locator("textarea[name=assistant-suggestions]").fill("What is 2 + 40?\nWhat time is it?");
  await form.locator("input[name=assistant-max-steps]").fill("4");
  await form.locator("select[name=assistant-tool-choice]").selectOption({ label: "must call a tool" });
  await shot(page, "assistants-new");
  await form.getByRole("button", { name: "Create assistant" }).click();
  await page.waitForURL(/\/assistants\/(?!new)[^/]+$/);
  result.assistantId = new URL(page.url()).pathname.split("/").pop();

  // Edit and save: the form is the saved assistant's.
  const detail = page.getByTestId("assistant-detail");
  const edit = detail.getByTestId("assistant-form");
  await edit.locator("[data-testid=tool-picker] input[name=tool-add]:checked").waitFor();
  result.loadedTools = await edit.locator("[data-testid=tool-picker] input:checked").evaluateAll((xs) => xs.map((x) => x.name).sort());
  await edit.locator("input[name=assistant-description]").fill("Adds numbers, tells the time");
  await edit.getByRole("button", { name: "Save" }).click();
  await edit.getByText("saved").waitFor();

  await detail.getByRole("button", { name: "Publish", exact: true }).click();
  await page.locator("[data-testid=assistant-detail][data-status=online]").waitFor();
  result.listBadge = await page.locator(`li[data-assistant-name="Calculator helper"] .badge`).textContent();

  // Try it: the opening message, a suggested question, the tool calls.
  const pane = page.getByTestId("assistant-try");
  result.opening = await pane.locator(".msg.notice").textContent();
  await pane.getByRole("button", { name: "What is 2 + 40?" }).click();
  await page.waitForFunction(() => document.querySelector("[data-testid=try-answer]")?.dataset.status === "complete", null, { timeout: 30_000 });
  const answer = pane.getByTestId("try-answer").last();
  result.tryAnswer = (await answer.locator(".bubble").textContent()).trim();
  result.trySteps = await toolSteps(answer);
  await shot(page, "assistants-try");

  // The same session on the chat page.
  await pane.getByRole("link", { name: "Open in chat" }).click();
  await page.waitForURL(/\/chat\/[^/]+$/);
  result.sessionId = new URL(page.url()).pathname.split("/").pop();
  const chatAnswer = page.getByTestId("answer").last();
  await chatAnswer.getByTestId("tool-steps").waitFor();
  result.chatHeader = await page.locator(".conversation .pane-head .muted").first().textContent();
  result.chatSteps = await toolSteps(chatAnswer);
  // The list of assistants to talk to loads on its own: wait for it before reading it.
  const talkTo = page.locator("select[name=target] optgroup[label=Assistants] option");
  await talkTo.first().waitFor({ state: "attached" });
  result.talkTo = await talkTo.allTextContents();
  await shot(page, "assistants-chat-steps");
  assert(result.chatSteps.length > 0, "the chat page shows the tool calls");
});
