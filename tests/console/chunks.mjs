// The chunk editor: open a processed file's chunks, filter by keyword, edit one (the search then finds the new
// text and no longer the old), add a chunk, delete one, preview and download the original; then a grounded chat
// answer's citation previews the file in place.
import { readFileSync } from "node:fs";
import { assert, run, shot, signIn } from "./harness.mjs";

const KB_ID = process.env.KB_ID;
const FILE_NAME = process.env.FILE_NAME;
const SESSION_ID = process.env.SESSION_ID;
const OLD = process.env.OLD_PHRASE;
const NEW = process.env.NEW_PHRASE;
const ADDED = process.env.ADDED_TEXT;

async function keywordSearch(page, query) {
  const form = page.getByTestId("search-form");
  await form.locator("input[name=query]").fill(query);
  await form.locator("select[name=mode]").selectOption({ label: "Keyword" });
  const answered = page.waitForResponse((r) => r.url().includes("/v1/knowledge-bases:search"));
  await form.getByRole("button", { name: "Search" }).click();
  await answered;
  await page.getByTestId("search-results").waitFor();
  await page.waitForFunction(() => !document.querySelector(".search-panel [role=status]"));
  return page.locator("[data-testid=hit] .hit-text").allTextContents();
}

run("chunks", async (page, result) => {
  await signIn(page, `/knowledge/${KB_ID}`);
  await page.getByRole("link", { name: `Chunks of ${FILE_NAME}` }).click();
  await page.waitForURL(new RegExp(`/knowledge/${KB_ID}/[^/]+$`));
  result.fileId = new URL(page.url()).pathname.split("/").pop();
  const editor = page.getByTestId("chunk-editor");
  await editor.getByTestId("chunk").first().waitFor();
  result.totalBefore = (await editor.getByTestId("chunk-total").textContent()).trim();

  // Filter to the chunk holding the old phrase and edit it.
  await editor.locator("input[name=chunk-keyword]").fill(OLD);
  await editor.getByRole("button", { name: "Filter" }).click();
  await page.waitForFunction((old) => {
    const items = [...document.querySelectorAll("[data-testid=chunk-editor] [data-testid=chunk-text]")];
    return items.length === 1 && items[0].textContent.includes(old);
  }, OLD);
  const chunk = editor.getByTestId("chunk").first();
  result.editedIndex = Number(await chunk.getAttribute("data-chunk-index"));
  await chunk.getByRole("button", { name: "Edit" }).click();
  const textarea = chunk.locator("textarea[name=chunk-text]");
  const before = await textarea.inputValue();
  await textarea.fill(before.replace(OLD, NEW));
  await chunk.getByRole("button", { name: "Save" }).click();
  await chunk.getByTestId("chunk-text").filter({ hasText: NEW }).waitFor();
  result.editedBadge = (await chunk.locator(".badge").allTextContents()).join(" ");
  await shot(page, "chunks-edited");

  // The search finds the new text, not the old.
  result.hitsNew = await keywordSearch(page, NEW);
  result.hitsOld = await keywordSearch(page, OLD);
  await shot(page, "chunks-search-after-edit");

  // Add a chunk, delete the first one.
  await editor.locator("input[name=chunk-keyword]").fill("");
  await editor.getByRole("button", { name: "Filter" }).click();
  await editor.locator("[data-testid=chunk][data-chunk-index='0']").waitFor();
  await editor.getByTestId("add-chunk").locator("textarea").fill(ADDED);
  await editor.getByRole("button", { name: "Add chunk" }).click();
  await editor.getByTestId("chunk-text").filter({ hasText: ADDED }).waitFor();
  const first = editor.locator("[data-testid=chunk][data-chunk-index='0']");
  await first.getByRole("button", { name: "Delete…" }).click();
  await first.getByRole("button", { name: "Delete", exact: true }).click();
  await first.waitFor({ state: "detached" });
  result.totalAfter = (await editor.getByTestId("chunk-total").textContent()).trim();

  // The original: a text preview (a range request) and a download of the whole file.
  const ranged = page.waitForRequest((r) => r.url().includes(":download") && r.url().includes("range="));
  await editor.getByRole("button", { name: "Original file" }).click();
  result.previewRequest = (await ranged).url();
  result.previewText = (await editor.getByTestId("file-text").textContent()).slice(0, 200);
  const downloading = page.waitForEvent("download");
  await editor.getByTestId("file-preview").getByRole("button", { name: "Download" }).click();
  const download = await downloading;
  result.downloadName = download.suggestedFilename();
  result.downloadBytes = readFileSync(await download.path()).length;
  await shot(page, "chunks-preview");

  // A grounded answer: its citation previews the file in place.
  await page.goto(`${process.env.BASE_URL}/chat/${SESSION_ID}`);
  await page.fill("textarea[name=question]", `Where is the ${NEW}?`);
  await page.getByRole("button", { name: "Send" }).click();
  await page.waitForFunction(() => [...document.querySelectorAll("[data-testid=answer]")].pop()?.dataset.status === "complete", null, { timeout: 60_000 });
  const citations = page.getByTestId("citations").last();
  await citations.locator("summary").click();
  const citation = citations.getByTestId("citation").first();
  result.citationFile = await citation.locator("b").textContent();
  await citation.getByRole("button", { name: "Preview file" }).click();
  result.citationPreview = (await citation.getByTestId("file-text").textContent()).slice(0, 200);
  result.citationLink = await citation.locator("b a").getAttribute("href");
  await shot(page, "chunks-citation-preview");
  assert(result.citationPreview.length > 0, "the citation's file preview shows text");
});
