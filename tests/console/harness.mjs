// Shared by the browser scenarios: Debian's chromium through playwright-core (a devDependency of console/),
// a fresh profile per run, screenshots under test-artifacts/console/, and the result printed as one JSON line.
//
// Environment: BASE_URL (the server), ADMIN_KEY, ARTIFACTS (screenshot directory), CONSOLE_DIR (console/ with
// node_modules), and scenario-specific values (FLOW_ID, ...).
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";

const require = createRequire(join(process.env.CONSOLE_DIR, "package.json"));
const { chromium } = require("playwright-core");

export const BASE_URL = process.env.BASE_URL;
export const ADMIN_KEY = process.env.ADMIN_KEY;
const ARTIFACTS = process.env.ARTIFACTS;
mkdirSync(ARTIFACTS, { recursive: true });

const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** Runs `scenario(page, result)` in a fresh browser; prints {ok, result, error, console} as the last line. */
export async function run(name, scenario) {
  const profile = mkdtempSync(join(tmpdir(), `tc-console-${name}-`));
  const result = {};
  const consoleErrors = [];
  let context;
  let page;
  let failure;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: "/usr/bin/chromium",
      headless: true,
      args: ARGS,
      viewport: { width: 1280, height: 800 },
    });
    context.setDefaultTimeout(20_000);
    page = context.pages()[0] ?? (await context.newPage());
    page.on("console", (msg) => {
      if (msg.type() === "error") consoleErrors.push(msg.text());
    });
    page.on("pageerror", (err) => consoleErrors.push(`pageerror: ${err.message}`));
    await scenario(page, result, context);
  } catch (e) {
    failure = e;
    if (page) await shot(page, `${name}-FAILED`).catch(() => undefined);
  } finally {
    await context?.close().catch(() => undefined);
    rmSync(profile, { recursive: true, force: true });
  }
  const out = { ok: !failure, result, error: failure ? String(failure.stack || failure) : null, consoleErrors };
  console.log(JSON.stringify(out));
  process.exit(failure ? 1 : 0);
}

export async function shot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`) });
}

/** Opens the console, which shows the sign-in form, and signs in with the admin API key. */
export async function signIn(page, path = "/") {
  await page.goto(BASE_URL + path);
  await page.getByRole("tab", { name: "API key" }).waitFor();
  await page.fill("input[name=api-key]", ADMIN_KEY);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByTestId("whoami").waitFor();
}

export function assert(condition, message) {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
