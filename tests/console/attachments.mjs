// Chat attachments: an image picked with the Attach button and a text file dropped on the composer show before
// sending (the image as a thumbnail), are sent with the question, and stay on the question: the image as a
// thumbnail drawn from the bytes sent, the document as a named chip. After a reload the thumbnail comes from the
// server (DownloadAttachment) and the document's chip downloads it.
import { readFileSync } from "node:fs";
import { assert, run, shot, signIn } from "./harness.mjs";

const SESSION_ID = process.env.SESSION_ID;
const PNG_PATH = process.env.PNG_PATH;
const NOTES = process.env.NOTES_TEXT;

run("attachments", async (page, result) => {
  await signIn(page, `/chat/${SESSION_ID}`);
  await page.locator("textarea[name=question]").waitFor();

  await page.setInputFiles("input[name=attach]", PNG_PATH);
  const dropped = await page.evaluateHandle((text) => {
    const dt = new DataTransfer();
    dt.items.add(new File([text], "notes.txt", { type: "text/plain" }));
    return dt;
  }, NOTES);
  await page.dispatchEvent("[data-testid=composer]", "drop", { dataTransfer: dropped });
  const pending = page.getByTestId("pending-attachments");
  await pending.locator("li[data-name='notes.txt']").waitFor();
  result.pending = await pending.locator("li").evaluateAll((items) => items.map((i) => i.dataset.name));
  result.pendingThumb = await pending.locator("li[data-name='dot.png'] img.thumb").evaluate((img) => img.naturalWidth);
  await shot(page, "attachments-pending");

  await page.fill("textarea[name=question]", "What is in the picture and the notes?");
  await page.getByRole("button", { name: "Send" }).click();
  await page.waitForFunction(() => [...document.querySelectorAll("[data-testid=answer]")].pop()?.dataset.status === "complete", null, { timeout: 30_000 });
  assert((await page.getByTestId("pending-attachments").count()) === 0, "the composer is empty after sending");
  const question = page.getByTestId("question").last();
  const shown = question.getByTestId("attachments");
  await shown.locator("li[data-name='notes.txt']").waitFor();
  result.sent = await shown.locator("li").evaluateAll((items) => items.map((i) => ({ name: i.dataset.name, type: i.dataset.type })));
  const thumb = shown.locator("li[data-name='dot.png'] img.thumb");
  await page.waitForFunction((el) => el.complete && el.naturalWidth > 0, await thumb.elementHandle());
  result.sentThumb = await thumb.evaluate((img) => [img.naturalWidth, img.naturalHeight]);
  await shot(page, "attachments-sent");

  await page.reload();
  const after = page.getByTestId("question").last().getByTestId("attachments");
  await after.locator("li[data-name='notes.txt']").waitFor();
  result.afterReload = await after.locator("li").evaluateAll((items) => items.map((i) => i.dataset.name));
  const served = after.locator("li[data-name='dot.png'] img.thumb");
  await served.waitFor();
  await page.waitForFunction((el) => el.complete && el.naturalWidth > 0, await served.elementHandle());
  result.reloadedThumb = await served.evaluate((img) => [img.naturalWidth, img.naturalHeight]);
  const downloading = page.waitForEvent("download");
  await after.getByRole("button", { name: "notes.txt" }).click();
  const download = await downloading;
  result.downloadName = download.suggestedFilename();
  result.downloadText = readFileSync(await download.path(), "utf8");
  await shot(page, "attachments-after-reload");
});
