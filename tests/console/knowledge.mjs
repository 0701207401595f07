// Create a knowledge base, upload a file with visible progress (the upload is throttled so it takes a while),
// watch it become ready without reloading, find it with a search, and chat with answers grounded on it.
import { assert, run, shot, signIn, sleep } from "./harness.mjs";

const FILE_NAME = "gull-island.md";
const FACT = "The lighthouse on Gull Island is painted in bright tangerine and teal stripes.";

// About 40 KiB of varied text with one distinctive fact in the middle.
function document() {
  const topics = ["tides", "gardens", "bridges", "libraries", "orchards", "railways", "markets", "observatories"];
  const parts = ["# Notes from the coast\n"];
  for (let i = 0; i < 80; i++) {
    const t = topics[i % topics.length];
    parts.push(
      `## Section ${i + 1}: ${t}\n\nThe ${t} of the northern villages change with the seasons. Visitors in section ${i + 1} ` +
        `often remark on how the ${t} are maintained by volunteers who meet every ${(i % 6) + 1} weeks. ` +
        `Records from year ${1900 + i} describe repairs, festivals and the occasional storm that closed the roads. ` +
        `Local guides recommend arriving early, bringing a warm coat and asking at the harbour office for maps.\n`,
    );
    if (i === 30) parts.push(`\n## Gull Island\n\n${FACT} Ships use the colours to find the harbour entrance at dusk.\n`);
  }
  return parts.join("\n");
}

run("knowledge", async (page, result, context) => {
  const t0 = Date.now();
  const lap = (name) => ((result.timings ??= {})[name] = Date.now() - t0);
  await signIn(page, "/knowledge");
  await page.getByText("Knowledge bases", { exact: true }).first().waitFor();
  await shot(page, "08-knowledge-empty");

  await page.fill("input[name=kb-name]", `Coast notes ${Date.now() % 100000}`);
  await page.fill("input[name=kb-description]", "Browser test knowledge base");
  await page.getByRole("button", { name: "Create knowledge base" }).click();
  await page.waitForURL(/\/knowledge\/[^/]+$/);
  result.kbId = new URL(page.url()).pathname.split("/").pop();
  await page.getByText("No files yet").waitFor();

  // Throttle uploads so the progress bar has time to move, and record every value it shows.
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 20, downloadThroughput: -1, uploadThroughput: 16 * 1024 });
  await page.evaluate(() => {
    window.__progress = [];
    window.__statuses = [];
    new MutationObserver(() => {
      for (const bar of document.querySelectorAll("[data-testid=uploads] [role=progressbar]")) {
        const v = Number(bar.getAttribute("aria-valuenow"));
        if (window.__progress[window.__progress.length - 1] !== v) window.__progress.push(v);
      }
      for (const row of document.querySelectorAll("tr[data-file-name]")) {
        const s = row.dataset.status;
        if (window.__statuses[window.__statuses.length - 1] !== s) window.__statuses.push(s);
      }
    }).observe(document.body, { subtree: true, childList: true, attributes: true });
  });

  const content = document();
  result.fileBytes = content.length;
  await page.setInputFiles("input[name=upload]", { name: FILE_NAME, mimeType: "text/markdown", buffer: Buffer.from(content) });
  await page.waitForFunction(() => window.__progress.some((v) => v > 0 && v < 100));
  await shot(page, "09-knowledge-uploading");
  lap("uploading");
  await page.waitForSelector(`tr[data-file-name="${FILE_NAME}"]`, { timeout: 30_000 });
  await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
  result.progress = await page.evaluate(() => window.__progress);
  assert(result.progress.some((v) => v > 0 && v < 100) && result.progress.includes(100), `the progress bar moved: ${result.progress}`);

  // The file's status follows processing live (no reload) until it is ready.
  await page.waitForSelector(`tr[data-file-name="${FILE_NAME}"][data-status=ready]`, { timeout: 90_000 });
  result.statuses = await page.evaluate(() => window.__statuses);
  result.chunks = Number(await page.textContent(`tr[data-file-name="${FILE_NAME}"] td.num`));
  assert(result.chunks > 1, `the file was cut into chunks (${result.chunks})`);
  await sleep(300); // let the sidebar counts refresh
  await shot(page, "10-knowledge-ready");
  lap("ready");

  // Hit test: the distinctive sentence is found, with its score.
  await page.fill("input[name=query]", "What colours is the Gull Island lighthouse painted?");
  await page.getByRole("button", { name: "Search" }).click();
  await page.getByTestId("hit").first().waitFor();
  result.hits = await page.$$eval("[data-testid=hit]", (hits) =>
    hits.map((h) => ({ score: h.querySelector(".score")?.textContent, file: h.querySelector("b")?.textContent, text: h.querySelector(".hit-text")?.textContent })),
  );
  assert(result.hits[0].file === FILE_NAME, `the first hit is from the uploaded file: ${result.hits[0].file}`);
  assert(result.hits.slice(0, 3).some((h) => h.text.includes("tangerine and teal")), "the fact is among the top hits");
  assert(/^\d\.\d{3}$/.test(result.hits[0].score), `hits show scores: ${result.hits[0].score}`);
  await page.getByTestId("search-results").scrollIntoViewIfNeeded();
  await shot(page, "11-knowledge-search");
  lap("searched");

  // A chat grounded on the knowledge base: the answer lists the passages it was given.
  const kbName = (await page.locator(".pane-head h2").textContent()).trim();
  await page.getByRole("link", { name: "Chat" }).click();
  await page.locator("details.options summary").click();
  await page.getByRole("checkbox", { name: kbName }).check();
  await page.getByRole("button", { name: "New chat" }).click();
  await page.waitForURL(/\/chat\/[^/]+$/);
  await page.getByText("answers from 1 knowledge base").waitFor();
  await page.fill("input[name=max-tokens]", "24");
  await page.fill("textarea[name=question]", "What colours is the Gull Island lighthouse painted?");
  await page.getByRole("button", { name: "Send" }).click();
  await page.waitForFunction(() => {
    const a = [...document.querySelectorAll("[data-testid=answer]")].pop();
    return a && a.dataset.status !== "streaming";
  }, null, { timeout: 60_000 });
  const citations = page.getByTestId("citations");
  result.citations = await citations.locator("li b").allTextContents();
  result.citedFact = (await citations.textContent()).includes("tangerine and teal");
  assert(result.citations.length > 0 && result.citations.every((n) => n === FILE_NAME), `the answer cites the file: ${result.citations}`);
  assert(result.citedFact, "the cited passages include the fact");
  result.groundedSessionId = new URL(page.url()).pathname.split("/").pop();
  await shot(page, "11b-knowledge-chat");
  lap("grounded chat");
});
