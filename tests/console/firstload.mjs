// The console's weight and first-load time on loopback, from a fresh browser profile (nothing cached):
// bytes of the console's own files on the first page, time until the sign-in form can be used, time until the
// chat view is shown after signing in, and the flow editor's on-demand chunk when a flow is opened.
import { ADMIN_KEY, BASE_URL, run } from "./harness.mjs";

const assetBytes = (page) =>
  page.evaluate(() =>
    performance
      .getEntriesByType("resource")
      .filter((r) => new URL(r.name).pathname.startsWith("/assets/"))
      .map((r) => ({ path: new URL(r.name).pathname, bytes: r.decodedBodySize })),
  );

run("firstload", async (page, result) => {
  const started = Date.now();
  await page.goto(BASE_URL + "/");
  await page.getByRole("tab", { name: "API key" }).waitFor();
  result.signInReadyMs = Date.now() - started;
  const nav = await page.evaluate(() => {
    const n = performance.getEntriesByType("navigation")[0];
    return { domContentLoadedMs: Math.round(n.domContentLoadedEventEnd), loadMs: Math.round(n.loadEventEnd), htmlBytes: n.decodedBodySize };
  });
  Object.assign(result, nav);
  const first = await assetBytes(page);
  result.firstLoadAssets = first;
  result.firstLoadBytes = first.reduce((n, a) => n + a.bytes, 0) + nav.htmlBytes;

  await page.fill("input[name=api-key]", ADMIN_KEY);
  const signingIn = Date.now();
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByTestId("whoami").waitFor();
  await page.getByRole("button", { name: "New chat" }).waitFor();
  result.chatShownMs = Date.now() - signingIn;

  const opening = Date.now();
  await page.goto(`${BASE_URL}/flows/${process.env.FLOW_ID}`);
  await page.getByTestId("canvas").locator(".fe-node").first().waitFor();
  result.editorShownMs = Date.now() - opening;
  const later = await assetBytes(page);
  result.editorChunkBytes = later.filter((a) => !first.some((f) => f.path === a.path) && a.path.endsWith(".js")).reduce((n, a) => n + a.bytes, 0);
});
