// The QA pairs panel: create a question-answer base, import a csv (the result shown), page through the pairs,
// filter by keyword, edit a pair's answer and similar questions, add one by hand, delete one, and import a bad
// table (the failing row shown).
import { assert, run, shot, signIn } from "./harness.mjs";

const GOOD_CSV = process.env.GOOD_CSV;
const BAD_CSV = process.env.BAD_CSV;
const EDIT_KEYWORD = process.env.EDIT_KEYWORD;
const EDITED_ANSWER = process.env.EDITED_ANSWER;
const EDITED_SIMILAR = process.env.EDITED_SIMILAR;
const DELETE_KEYWORD = process.env.DELETE_KEYWORD;

async function filter(panel, page, keyword, count) {
  await panel.locator("input[name=qa-keyword]").fill(keyword);
  await panel.getByRole("button", { name: "Filter" }).click();
  await page.waitForFunction(
    ([kw, n]) => {
      const items = [...document.querySelectorAll("[data-testid=qa-pairs] [data-testid=qa-pair]")];
      return items.length === n && items.every((i) => !kw || i.textContent.toLowerCase().includes(kw.toLowerCase()));
    },
    [keyword, count],
  );
}

async function importCsv(panel, name, csv) {
  await panel.locator("input[name=qa-import]").setInputFiles({ name, mimeType: "text/csv", buffer: Buffer.from(csv) });
  const shown = panel.getByTestId("qa-import-result").filter({ hasText: name });
  await shown.waitFor({ timeout: 90_000 });
  return { text: (await shown.textContent()).trim(), ok: await shown.getAttribute("data-ok") };
}

run("qa", async (page, result) => {
  await signIn(page, "/knowledge");
  const create = page.getByTestId("create-kb");
  await create.locator("input[name=kb-name]").fill("Office FAQ");
  await create.locator("select[name=kb-kind]").selectOption({ label: "Question-answer pairs" });
  await create.getByRole("button", { name: "Create knowledge base" }).click();
  await page.waitForURL(/\/knowledge\/[^/]+$/);
  result.kbId = new URL(page.url()).pathname.split("/").pop();
  const panel = page.getByTestId("qa-pairs");
  await panel.waitFor();

  result.imported = await importCsv(panel, "faq.csv", GOOD_CSV);
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=qa-pair]").length > 0);
  result.totalAfterImport = (await panel.getByTestId("qa-total").textContent()).trim();
  result.firstPage = await panel.getByTestId("qa-pair").count();
  await panel.getByRole("button", { name: "More pairs" }).click();
  await page.waitForFunction((n) => document.querySelectorAll("[data-testid=qa-pair]").length > n, result.firstPage);
  result.allPages = await panel.getByTestId("qa-pair").count();
  await shot(page, "qa-imported");

  // Edit one pair's answer and similar questions.
  await filter(panel, page, EDIT_KEYWORD, 1);
  const pair = panel.getByTestId("qa-pair").first();
  result.editedId = await pair.getAttribute("data-pair-id");
  await pair.getByRole("button", { name: "Edit" }).click();
  const form = pair.getByTestId("edit-qa-pair");
  await form.locator("textarea[name=qa-similar]").fill(EDITED_SIMILAR);
  await form.locator("textarea[name=qa-answer]").fill(EDITED_ANSWER);
  await form.getByRole("button", { name: "Save" }).click();
  await pair.getByTestId("qa-answer").filter({ hasText: EDITED_ANSWER }).waitFor();
  result.shownSimilar = (await pair.getByTestId("qa-similar").textContent()).trim();
  await shot(page, "qa-edited");

  // Add one by hand.
  await filter(panel, page, "", Math.min(result.allPages, 20));
  const add = panel.getByTestId("add-qa-pair");
  await add.locator("input[name=qa-question]").fill("Where is the lost property office?");
  await add.locator("textarea[name=qa-similar]").fill("I lost my umbrella, where do I look?\nWho keeps found items?");
  await add.locator("textarea[name=qa-answer]").fill("In the basement, next to the post room.");
  await add.getByRole("button", { name: "Add pair" }).click();
  await panel.getByTestId("qa-answer").filter({ hasText: "In the basement, next to the post room." }).waitFor();
  result.totalAfterAdd = (await panel.getByTestId("qa-total").textContent()).trim();

  // Delete one.
  await filter(panel, page, DELETE_KEYWORD, 1);
  const doomed = panel.getByTestId("qa-pair").first();
  result.deletedId = await doomed.getAttribute("data-pair-id");
  await doomed.getByRole("button", { name: "Delete…" }).click();
  await doomed.getByRole("button", { name: "Delete", exact: true }).click();
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=qa-pair]").length === 0);

  // A bad table: the failing row is shown.
  result.bad = await importCsv(panel, "bad.csv", BAD_CSV);
  await shot(page, "qa-bad-import");
  assert(result.bad.ok === "false", "the bad import is shown as failed");
});
