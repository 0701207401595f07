// Chat workbench actions against a fake OpenAI upstream (deterministic answers): the session list pages in as it
// is scrolled (more chats than one page), an answer is regenerated, the question is edited and asked again
// (each replaces the last turn), and the final answer is liked, disliked with a comment and copied.
import { assert, run, shot, signIn } from "./harness.mjs";

const SESSION_ID = process.env.SESSION_ID;
const TOTAL = Number(process.env.TOTAL_SESSIONS);

const lastAnswer = (page) =>
  page.evaluate(() => {
    const a = [...document.querySelectorAll("[data-testid=answer]")].pop();
    return a ? { id: a.dataset.messageId, status: a.dataset.status } : null;
  });

async function answered(page, notId) {
  await page.waitForFunction(
    (old) => {
      const a = [...document.querySelectorAll("[data-testid=answer]")].pop();
      return a && a.dataset.status === "complete" && a.dataset.messageId !== old && !document.querySelector("[data-testid=stop]");
    },
    notId ?? "",
    { timeout: 30_000 },
  );
  return lastAnswer(page);
}

run("chatactions", async (page, result, context) => {
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: new URL(process.env.BASE_URL).origin });
  await signIn(page, `/chat/${SESSION_ID}`);
  const list = page.getByTestId("session-list").locator("li");
  await list.first().waitFor();
  result.firstPage = await list.count();

  // 1. Scroll the list to its end until every chat is there.
  for (let i = 0; i < 20 && (await list.count()) < TOTAL; i++) {
    await page.locator(".sidebar").evaluate((el) => el.scrollTo(0, el.scrollHeight));
    await page.waitForTimeout(300);
  }
  result.listed = await list.count();
  result.distinct = new Set(await page.getByTestId("session-list").locator("a.list-link").evaluateAll((as) => as.map((a) => a.getAttribute("href")))).size;
  assert(result.firstPage < TOTAL && result.listed === TOTAL && result.distinct === TOTAL, `paged in ${result.firstPage} -> ${result.listed} (${result.distinct} distinct) of ${TOTAL}`);
  assert((await page.getByTestId("more-sessions").count()) === 0, "no more pages to load at the end");

  // 2. A question, then Regenerate: the same question, a new answer in place of the old.
  await page.fill("textarea[name=question]", "first question");
  await page.getByRole("button", { name: "Send" }).click();
  const first = await answered(page);
  await page.getByRole("button", { name: "Regenerate" }).click();
  const regenerated = await answered(page, first.id);
  result.afterRegenerate = await page.locator("[data-testid=question] .bubble").allTextContents();
  assert(JSON.stringify(result.afterRegenerate) === JSON.stringify(["first question"]), `one question after regenerate: ${result.afterRegenerate}`);
  assert((await page.locator("[data-testid=answer]").count()) === 1, "one answer after regenerate");

  // 3. Edit the question and send it again.
  await page.locator("[data-testid=question]").getByRole("button", { name: "Edit" }).click();
  await page.fill("textarea[name=edit-question]", "edited question");
  await page.getByTestId("question-edit").getByRole("button", { name: "Send" }).click();
  const edited = await answered(page, regenerated.id);
  result.afterEdit = await page.locator("[data-testid=question] .bubble").allTextContents();
  assert(JSON.stringify(result.afterEdit) === JSON.stringify(["edited question"]), `the edited question replaced the old: ${result.afterEdit}`);
  result.finalAnswerId = edited.id;

  // 4. Feedback on the final answer: like, then dislike with a comment; copy.
  const actions = page.locator(`[data-message-id="${edited.id}"] [data-testid=answer-actions]`);
  await actions.getByRole("button", { name: "👍 Like", exact: true }).click();
  await page.waitForFunction((id) => document.querySelector(`[data-message-id="${id}"] [data-testid=answer-actions]`)?.dataset.rating === "like", edited.id);
  await actions.getByRole("button", { name: "👎 Dislike", exact: true }).click();
  await actions.locator("input[name=feedback-comment]").fill("too short");
  await actions.getByRole("button", { name: "Send" }).click();
  await page.waitForFunction((id) => document.querySelector(`[data-message-id="${id}"] [data-testid=answer-actions]`)?.dataset.rating === "dislike", edited.id);
  const copiedRecorded = page.waitForResponse((r) => r.url().endsWith(`/v1/messages/${edited.id}:feedback`) && r.request().postData().includes("COPIED"));
  await actions.getByRole("button", { name: "Copy" }).click();
  await actions.getByRole("button", { name: "Copied" }).waitFor();
  result.copiedStatus = (await copiedRecorded).status();
  result.clipboard = await page.evaluate(() => navigator.clipboard.readText());
  await shot(page, "23-chat-actions");
});
