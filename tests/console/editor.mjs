// A 5-node flow built with the mouse in the visual editor: nodes dragged from the palette, edges drawn handle to
// handle (a condition's "tea" case and its "else"), settings typed into the generated forms (one through the
// variable picker), problems shown on the nodes while it is incomplete, undo/redo, then saved, published and run
// twice from the run panel: each branch gives its answer and the nodes light up.
//
// Reports the graph as the canvas shows it (ids, positions, edges) so the test compares it with the saved one.
import { assert, run, shot, signIn, sleep } from "./harness.mjs";

const FLOW_NAME = "Tea router";

run("editor", async (page, result) => {
  await page.setViewportSize({ width: 1600, height: 1000 });
  await signIn(page, "/flows");
  await page.fill("input[name=new-flow-name]", FLOW_NAME);
  await page.getByRole("button", { name: "Create", exact: true }).click();
  await page.waitForURL(/\/flows\/[^/]+$/);
  result.flowId = new URL(page.url()).pathname.split("/").pop();
  const palette = page.getByTestId("palette");
  await palette.locator("[data-testid^=palette-]").first().waitFor();
  result.palette = await palette.locator("[data-testid^=palette-]").evaluateAll((els) => els.map((e) => e.dataset.testid.slice(8)));
  const canvas = page.getByTestId("canvas");
  const nodes = canvas.locator(".fe-node");

  // 1. Drag five nodes from the palette onto the canvas.
  await canvas.locator(".react-flow__pane").waitFor();
  async function place(kind, x, y) {
    const before = await nodes.count();
    // A synthetic HTML5 drag can be lost on a loaded machine before the drop lands: one more try then.
    for (let attempt = 0; attempt < 2; attempt++) {
      await page.dragAndDrop(`[data-testid=palette-${kind}]`, "[data-testid=canvas]", { targetPosition: { x, y } });
      const placed = await page
        .waitForFunction((n) => document.querySelectorAll("[data-testid=canvas] .fe-node").length === n, before + 1, { timeout: 5_000 })
        .then(() => true, () => false);
      if (placed) return;
    }
    throw new Error(`dropping a ${kind} node on the canvas added nothing`);
  }
  await place("start", 110, 110);
  await place("condition", 340, 110);
  await place("prompt", 600, 60);
  await place("end", 600, 260);
  await place("end", 340, 330);
  result.placed = await nodes.evaluateAll((els) => els.map((e) => e.dataset.testid.slice(5)));
  assert(JSON.stringify(result.placed) === JSON.stringify(["start", "condition", "prompt", "end", "end_2"]), `placed ${result.placed}`);

  // Undo removes the last node, redo brings it back.
  await page.getByRole("button", { name: "Undo" }).click();
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=canvas] .fe-node").length === 4);
  await page.getByRole("button", { name: "Redo" }).click();
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=canvas] .fe-node").length === 5);

  // Unconnected, the nodes carry ValidateFlow's problems.
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=canvas] [data-testid=node-problems]").length > 0);
  result.problemsWhileIncomplete = await canvas.locator("[data-testid=node-problems]").count();
  await shot(page, "30-editor-placed-with-problems");

  const panel = page.getByTestId("node-panel");
  const select = async (id) => {
    await canvas.locator(`[data-testid=node-${id}] .fe-node-name`).click();
    await panel.locator(`[data-node-id="${id}"]`).waitFor();
  };

  // 2. The condition's case: {{question}} contains "tea", through the branch named "tea".
  await select("condition");
  await panel.locator("input[name='param-cases.0.handle']").fill("tea");
  await panel.locator("select[name='param-cases.0.conditions.0.op']").selectOption("contains");
  await panel.locator("[name='param-cases.0.conditions.0.right']").fill("tea");
  await canvas.locator("[data-testid=node-condition] .react-flow__handle[data-handleid=tea]").waitFor();

  // 3. Edges, drawn handle to handle with the mouse.
  async function connect(source, handle, target) {
    const before = await canvas.locator(".react-flow__edge").count();
    const from = canvas.locator(`[data-testid=node-${source}] .react-flow__handle.source${handle ? `[data-handleid="${handle}"]` : ""}`);
    const to = canvas.locator(`[data-testid=node-${target}] .react-flow__handle.target`);
    const a = await from.boundingBox();
    const b = await to.boundingBox();
    await page.mouse.move(a.x + a.width / 2, a.y + a.height / 2);
    await page.mouse.down();
    await page.mouse.move((a.x + b.x) / 2, (a.y + b.y) / 2, { steps: 8 });
    await page.mouse.move(b.x + b.width / 2, b.y + b.height / 2, { steps: 8 });
    await page.mouse.up();
    await page.waitForFunction((n) => document.querySelectorAll("[data-testid=canvas] .react-flow__edge").length === n, before + 1);
  }
  await connect("start", null, "condition");
  await connect("condition", "tea", "prompt");
  await connect("condition", "else", "end_2");
  await connect("prompt", null, "end");

  // 4. Settings: the prompt's template partly through the variable picker, the two ends' outputs, a name.
  await select("prompt");
  await panel.locator("[name=param-template]").fill("Brewing: ");
  result.promptVariables = await panel.locator(".var-picker option").allTextContents();
  await panel.locator(".var-picker").first().selectOption("{{question}}");
  result.promptTemplate = await panel.locator("[name=param-template]").inputValue();
  assert(result.promptTemplate === "Brewing: {{question}}", `the picker inserted the variable: ${result.promptTemplate}`);
  await select("end");
  await panel.locator("[name='param-outputs.text']").fill("{{prompt.text}}");
  await select("end_2");
  await panel.locator("input[name=node-name]").fill("No tea");
  await panel.locator("[name='param-outputs.text']").fill("No tea today");
  const paneBox = await canvas.locator(".react-flow__pane").boundingBox();
  await canvas.locator(".react-flow__pane").click({ position: { x: paneBox.width - 30, y: 20 } });

  await page.waitForFunction(() => {
    const v = document.querySelector("[data-testid=validation]");
    return v && v.dataset.errors === "0" && !v.dataset.validating;
  }, null, { timeout: 10_000 });
  await sleep(600); // a last debounced validation
  result.validation = await page.getByTestId("validation").getAttribute("data-errors");
  assert(result.validation === "0", `the drawn flow is valid: ${result.validation} errors`);
  assert((await canvas.locator("[data-testid=node-problems]").count()) === 0, "no node shows a problem any more");
  await shot(page, "31-editor-flow-drawn");

  // What the canvas shows: node ids and positions, edges.
  result.drawn = await page.evaluate(() => ({
    nodes: [...document.querySelectorAll("[data-testid=canvas] .react-flow__node")].map((el) => {
      const m = /translate\(([-\d.]+)px, ?([-\d.]+)px\)/.exec(el.style.transform);
      return { id: el.dataset.id, x: Math.round(Number(m[1])), y: Math.round(Number(m[2])), name: el.querySelector(".fe-node-name").textContent };
    }),
    edges: [...document.querySelectorAll("[data-testid=canvas] .react-flow__edge")].map((el) => el.dataset.testid.replace(/^rf__edge-/, "")),
  }));

  // 5. Save a version, publish.
  await page.getByTestId("save-flow").click();
  await page.getByText("saved", { exact: true }).waitFor();
  await page.getByRole("button", { name: "Publish", exact: true }).click();
  await page.getByRole("button", { name: "Unpublish" }).waitFor();

  // 6. Run both branches from the run panel.
  async function runWith(question) {
    await page.fill("input[name=var-question]", question);
    await page.getByRole("button", { name: "Run", exact: true }).click();
    await page.waitForFunction(() => ["finished", "failed"].includes(document.querySelector("[data-testid=run-status]")?.textContent), null, { timeout: 30_000 });
    const status = await page.getByTestId("run-status").textContent();
    const outputs = JSON.parse(await page.getByTestId("run-outputs").locator("pre").textContent());
    const lit = await canvas.locator(".fe-node").evaluateAll((els) => Object.fromEntries(els.map((e) => [e.dataset.testid.slice(5), e.dataset.runStatus ?? ""])));
    return { status, outputs, lit };
  }
  result.teaRun = await runWith("green tea please");
  await shot(page, "32-editor-run-tea");
  assert(result.teaRun.status === "finished", `tea run ${result.teaRun.status}`);
  assert(result.teaRun.outputs.text === "Brewing: green tea please", `tea run outputs ${JSON.stringify(result.teaRun.outputs)}`);
  assert(result.teaRun.lit.prompt === "succeeded" && result.teaRun.lit.end === "succeeded", `nodes lit: ${JSON.stringify(result.teaRun.lit)}`);
  result.coffeeRun = await runWith("coffee");
  assert(result.coffeeRun.outputs.text === "No tea today", `coffee run outputs ${JSON.stringify(result.coffeeRun.outputs)}`);
  assert(result.coffeeRun.lit.end_2 === "succeeded" && result.coffeeRun.lit.prompt !== "succeeded", `nodes lit: ${JSON.stringify(result.coffeeRun.lit)}`);

  // 7. A second version (the flow stays online: a new version is made current), compared side by side with the
  //    first on the same inputs, then the first made current again.
  await select("prompt");
  await panel.locator("[name=param-template]").fill("Pouring: {{question}}");
  await page.getByTestId("save-flow").click();
  await page.getByText("saved", { exact: true }).waitFor();
  const versions = page.getByTestId("versions");
  await versions.locator("[data-testid=version-v3]").waitFor();
  result.versions = await versions.locator("tr").evaluateAll((rows) => rows.map((r) => r.dataset.testid.slice(8)));
  await page.fill("input[name=var-question]", "mint tea");
  await versions.locator("input[name=compare-v2]").check();
  await versions.locator("input[name=compare-v3]").check();
  await versions.getByRole("button", { name: /^Compare/ }).click();
  await page.waitForFunction(() => [...document.querySelectorAll("[data-testid=compare] .compare-col")].every((c) => c.dataset.status === "finished") && document.querySelectorAll("[data-testid=compare] .compare-col").length === 2, null, { timeout: 30_000 });
  result.compared = Object.fromEntries(await Promise.all(["v2", "v3"].map(async (v) => [v, JSON.parse(await page.getByTestId(`compare-${v}`).locator("pre").textContent())])));
  assert(result.compared.v2.text === "Brewing: mint tea" && result.compared.v3.text === "Pouring: mint tea", `compared ${JSON.stringify(result.compared)}`);
  await shot(page, "33-editor-versions-compared");
  await versions.locator("[data-testid=version-v2]").getByRole("button", { name: "Set current" }).click();
  await versions.locator("[data-testid=version-v2]").getByText("current").waitFor();
  const v2 = await versions.locator("[data-testid=version-v2]").getAttribute("data-version-id");
  await page.locator(`.flow-editor[data-version-id="${v2}"]`).waitFor(); // the editor reopened on v2's graph
  await select("prompt");
  result.templateAfterSetCurrent = await panel.locator("[name=param-template]").inputValue();
  result.serverFlow = await page.evaluate(async ([url, key]) => (await fetch(url, { headers: { authorization: `Bearer ${key}` } })).json(), [`${process.env.BASE_URL}/v1/flows/${result.flowId}`, process.env.ADMIN_KEY]);
  result.serverPrompt = JSON.stringify(result.serverFlow.flow.graph.nodes.find((n) => n.id === "prompt").params) + " " + result.serverFlow.flow.current_version_id;
  assert(result.templateAfterSetCurrent === "Brewing: {{question}}", `the editor shows the current version: ${result.templateAfterSetCurrent}; server: ${result.serverPrompt}`);
});
