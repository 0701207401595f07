// Open a flow (created through the API by the test), run it from the run panel: node events stream in, the
// run stops at its input node and shows a form, and the answer resumes it to the end. Then publish it and chat
// with it: the chat shows the same form and the flow's answer.
import { assert, run, shot, signIn } from "./harness.mjs";

const FLOW_ID = process.env.FLOW_ID;

run("flow", async (page, result) => {
  await signIn(page, "/flows");
  await page.getByTestId("flow-list").getByText("Browser test flow").click();
  await page.waitForURL(new RegExp(`/flows/${FLOW_ID}$`));
  await page.getByTestId("canvas").locator(".fe-node").first().waitFor();
  result.graph = await page.$$eval("[data-testid=canvas] .fe-node-name", (bs) => bs.map((b) => b.textContent));
  assert(result.graph.length === 4, `the canvas shows the flow's four nodes: ${result.graph}`);
  result.runAs = await page.getByTestId("run-as").textContent();
  assert(result.runAs === "runs as caller", `the flow says whose rights its runs use: ${result.runAs}`);
  await shot(page, "12-flow-open");

  await page.fill("input[name=var-who]", "Ada");
  await page.getByRole("button", { name: "Run", exact: true }).click();
  const form = page.getByTestId("input-form");
  await form.waitFor();
  result.prompt = await form.locator(".input-prompt").textContent();
  assert(result.prompt === "Age of Ada?", `the form shows the node's prompt: ${result.prompt}`);
  assert((await page.getByTestId("run-status").textContent()) === "waiting for input", "the run waits for input");
  result.eventsBeforeInput = await page.$$eval("[data-testid=run-events] .event-text", (es) => es.map((e) => e.textContent));
  await shot(page, "13-flow-waiting-for-input");

  await form.locator("input[name=age]").fill("36");
  await form.getByRole("button", { name: "Continue" }).click();
  await page.waitForFunction(() => document.querySelector("[data-testid=run-status]")?.textContent === "finished");
  result.events = await page.$$eval("[data-testid=run-events] .event-text", (es) => es.map((e) => e.textContent));
  result.outputs = JSON.parse(await page.textContent("[data-testid=run-outputs] pre"));
  assert(result.outputs.text === "Ada is 36", `the run's outputs: ${JSON.stringify(result.outputs)}`);
  await page.getByTestId("runs").waitFor();
  await shot(page, "14-flow-finished");

  // A past run opens again from the list: its logged events are replayed into the panel.
  await page.getByTestId("runs").getByRole("button", { name: "Open" }).first().click();
  await page.waitForSelector("[data-testid=run-panel][data-replayed=true]");
  const replayed = await page.$$eval("[data-testid=run-events] .event-text", (es) => es.map((e) => e.textContent));
  assert(JSON.stringify(replayed) === JSON.stringify(result.events), `the replay shows the run as it went: ${JSON.stringify(replayed)}`);
  assert((await page.getByTestId("run-status").textContent()) === "finished", "the replayed run is finished");

  // Publish, then chat with the flow.
  await page.getByRole("button", { name: "Publish", exact: true }).click();
  await page.getByRole("button", { name: "Unpublish" }).waitFor();
  await page.getByRole("link", { name: "Chat" }).click();
  await page.selectOption("select[name=target]", { label: "Browser test flow" });
  await page.getByRole("button", { name: "New chat" }).click();
  await page.waitForURL(/\/chat\/[^/]+$/);
  result.chatSessionId = new URL(page.url()).pathname.split("/").pop();
  await page.fill("textarea[name=question]", "Grace");
  await page.getByRole("button", { name: "Send" }).click();
  const chatForm = page.getByTestId("input-form");
  await chatForm.waitFor();
  result.chatPrompt = await chatForm.locator(".input-prompt").textContent();
  assert(result.chatPrompt === "Age of Grace?", `the chat shows the flow's form: ${result.chatPrompt}`);
  await chatForm.locator("input[name=age]").fill("36");
  await chatForm.getByRole("button", { name: "Continue" }).click();
  await page.waitForFunction(() => {
    const a = [...document.querySelectorAll("[data-testid=answer]")].pop();
    return a?.dataset.status === "complete" && a.querySelector("[data-testid=answer-text]")?.dataset.source === "Grace is 36";
  });
  result.chatAnswer = "Grace is 36";
  await shot(page, "15-flow-chat");

  // A newcomer's first flow: one click creates a runnable example.
  await page.getByRole("link", { name: "Flows" }).click();
  await page.getByRole("button", { name: "New example flow" }).click();
  await page.waitForURL((url) => /^\/flows\/[^/]+$/.test(url.pathname) && !url.pathname.endsWith(FLOW_ID));
  await page.getByTestId("canvas").locator(".fe-node").nth(3).waitFor();
  result.exampleNodes = await page.$$eval("[data-testid=canvas] .fe-node-name", (bs) => bs.map((b) => b.textContent));
  assert(result.exampleNodes.length === 4, `the example flow's graph: ${result.exampleNodes}`);
  assert((await page.inputValue("input[name=var-who]")) === "Ada", "the run form is filled with the start node's default");
});
