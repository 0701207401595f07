// The embeddable chat page in a real browser: a host page on another origin (HOST_PAGE) frames
// BASE_URL/embed/assistants/<ASSISTANT_ID>#key=<KEY>; the scenario types a message inside the iframe and reports
// the answer shown, whether the key stayed in the frame's address, and what the API refused.
import { BASE_URL, run } from "./harness.mjs";

run("embed", async (page, result) => {
  const requests = [];
  page.on("request", (request) => requests.push(request.url()));
  await page.goto(process.env.HOST_PAGE);
  await page.evaluate(({ src }) => {
    const frame = document.createElement("iframe");
    frame.src = src;
    frame.width = "400";
    frame.height = "500";
    document.body.appendChild(frame);
  }, { src: `${BASE_URL}/embed/assistants/${process.env.ASSISTANT_ID}#key=${process.env.KEY}` });
  const frame = page.frameLocator("iframe");
  await frame.locator("#input").fill("Hello from the site");
  await frame.locator("#input").press("Enter");
  await frame.locator(".msg.assistant.done, #status:not(:empty)").first().waitFor({ timeout: 60_000 });
  result.status = await frame.locator("#status").textContent();
  result.answer = await frame.locator(".msg.assistant").last().textContent();
  result.user = await frame.locator(".msg.user").last().textContent();
  const inner = page.frames().find((f) => f.url().startsWith(BASE_URL));
  result.frameUrl = inner ? inner.url() : "";
  result.hostOrigin = await page.evaluate(() => location.origin);
  result.keyInRequests = requests.filter((url) => url.includes(process.env.KEY)).length;
});
