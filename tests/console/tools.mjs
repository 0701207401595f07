// The Tools page: the built-ins are listed by category; a real OpenAPI service (started by the test, with an API
// key) is imported from its URL and three operations are tried through forms generated from their schemas (a
// path string, an object typed as JSON, an error with its reason); a real MCP server is added with a secret
// header, its tools tried (integers, an error), then it is deleted.
import { assert, run, shot, signIn } from "./harness.mjs";

const OPENAPI_URL = process.env.OPENAPI_URL;
const SERVICE_KEY = process.env.SERVICE_KEY;
const MCP_URL = process.env.MCP_URL;
const MCP_TOKEN = process.env.MCP_TOKEN;

async function tryTool(page, name, args) {
  const row = page.locator(`tr[data-tool-name="${name}"]`);
  await row.getByRole("button", { name: "Try" }).click();
  const panel = page.getByTestId("try-tool");
  await panel.waitFor();
  for (const [arg, value] of Object.entries(args)) await panel.locator(`[name="arg-${arg}"]`).fill(value);
  await panel.getByRole("button", { name: "Call" }).click();
  const outcome = panel.locator("[data-testid=tool-result], [data-testid=tool-error]");
  await outcome.waitFor({ timeout: 30_000 });
  const shown = {
    ok: (await outcome.getAttribute("data-outcome")) === "ok",
    reason: (await outcome.getAttribute("data-reason")) ?? "",
    text: (await outcome.textContent()).trim(),
  };
  await shot(page, `tools-try-${name}`);
  await row.getByRole("button", { name: "Close" }).click();
  return shown;
}

run("tools", async (page, result) => {
  await signIn(page, "/tools");
  const table = page.getByTestId("tool-table");
  await table.waitFor();
  result.builtinCategories = await table.locator("tr[data-tool-name=current_time] td").nth(1).textContent();
  result.currentTime = await tryTool(page, "current_time", {});
  await shot(page, "tools-all");

  // Import the OpenAPI service from its URL with its key in a header.
  await page.getByRole("link", { name: "Add tools…" }).click();
  const form = page.getByTestId("new-tool-provider");
  await form.locator("input[name=provider-name]").fill("Pets");
  await form.locator("input[name=document-url]").fill(OPENAPI_URL);
  await form.locator("select[name=auth-type]").selectOption({ label: "API key in a header" });
  await form.locator("input[name=auth-name]").fill("X-API-Key");
  await form.locator("input[name=auth-credential]").fill(SERVICE_KEY);
  await shot(page, "tools-import-openapi");
  await form.getByRole("button", { name: "Import" }).click();
  await page.waitForURL(/\/tools\/(?!new)[^/]+$/);
  result.openapiProviderId = new URL(page.url()).pathname.split("/").pop();
  await page.locator("tr[data-tool-name=getPet]").waitFor();
  result.openapiTools = await page.locator("tr[data-tool-name]").evaluateAll((rows) => rows.map((r) => r.dataset.toolName).sort());
  result.openapiCategory = (await page.locator("tr[data-tool-name=getPet] td").nth(1).textContent()).trim();
  assert(!(await page.content()).includes(SERVICE_KEY), "the service key is not on the page after the import");

  result.getPet = await tryTool(page, "getPet", { pet_id: "1" });
  result.createPet = await tryTool(page, "createPet", { body: '{"name": "Tom", "tag": "cat"}' });
  result.missingPet = await tryTool(page, "getPet", { pet_id: "404" });
  result.echoKey = await tryTool(page, "getPet", { pet_id: "echo-key" });
  assert(!(await page.content()).includes(SERVICE_KEY), "the service key is not on the page after the calls");

  // An MCP server with a bearer token in a header.
  await page.getByRole("link", { name: "Add tools…" }).click();
  await form.getByRole("tab", { name: "Add MCP server" }).click();
  await form.locator("input[name=provider-name]").fill("Calculator");
  await form.locator("input[name=mcp-url]").fill(MCP_URL);
  await form.getByRole("button", { name: "Add header" }).click();
  await form.locator("input[name=header-name-0]").fill("Authorization");
  await form.locator("input[name=header-value-0]").fill(`Bearer ${MCP_TOKEN}`);
  await form.getByRole("button", { name: "Add server" }).click();
  await page.waitForURL(/\/tools\/(?!new)[^/]+$/);
  result.mcpProviderId = new URL(page.url()).pathname.split("/").pop();
  await page.locator("tr[data-tool-name=add]").waitFor();
  result.mcpHeaderShown = await page.getByTestId("tool-provider").locator(".small").first().textContent();
  result.add = await tryTool(page, "add", { a: "2", b: "40" });
  result.explode = await tryTool(page, "explode", { why: "the fuse blew" });
  assert(!(await page.content()).includes(MCP_TOKEN), "the MCP token is not on the page");

  // Delete it: it leaves the list.
  await page.getByRole("button", { name: "Delete provider" }).click();
  await page.getByRole("button", { name: "Delete", exact: true }).click();
  await page.waitForURL(/\/tools$/);
  await page.getByTestId("tool-table").waitFor();
  result.providersAfterDelete = await page.getByTestId("tool-providers").locator("li[data-provider-name]").evaluateAll((items) => items.map((i) => i.dataset.providerName));
  await shot(page, "tools-after-delete");
});
