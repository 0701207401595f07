// Builds the console into dist/: dist/assets/main-<hash>.{js,css} and dist/index.html pointing at them.
// `node build.mjs` (production, minified); `node build.mjs --dev` (readable output, inline source maps).
// The SDK is the sibling package clients/typescript (built there by `make ts`), imported as @typecase/client.
import { build } from "esbuild";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const sdk = resolve(process.env.TYPECASE_SDK_DIR ?? join(here, "..", "clients", "typescript"), "dist");
const out = join(here, "dist");
const dev = process.argv.includes("--dev");

if (!existsSync(join(sdk, "index.js"))) {
  console.error(`console: the TypeScript SDK is not built (${sdk}/index.js is missing): run \`make ts\` first`);
  process.exit(1);
}

// @typecase/client -> <sdk>/dist/index.js, @typecase/client/gen/x -> <sdk>/dist/gen/x (its package exports).
const sdkAlias = {
  name: "typecase-sdk",
  setup(b) {
    b.onResolve({ filter: /^@typecase\/client(\/.*)?$/ }, (args) => {
      const sub = args.path.slice("@typecase/client".length);
      return { path: sub ? join(sdk, sub.replace(/^\//, "")) : join(sdk, "index.js") };
    });
  },
};

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "assets"), { recursive: true });
const result = await build({
  entryPoints: [join(here, "src", "main.tsx")],
  bundle: true,
  format: "esm",
  target: "es2022",
  outdir: join(out, "assets"),
  entryNames: "[name]-[hash]",
  assetNames: "[name]-[hash]",
  minify: !dev,
  sourcemap: dev ? "inline" : "linked",
  jsx: "automatic",
  jsxImportSource: "preact",
  metafile: true,
  legalComments: "none",
  logLevel: "warning",
  plugins: [sdkAlias],
  define: { "process.env.NODE_ENV": JSON.stringify(dev ? "development" : "production") },
});

const outputs = Object.keys(result.metafile.outputs).map((p) => basename(p));
const js = outputs.find((p) => p.endsWith(".js"));
const css = outputs.find((p) => p.endsWith(".css"));
const html = readFileSync(join(here, "src", "index.html"), "utf8")
  .replace("<!--CSS-->", css ? `<link rel="stylesheet" href="/assets/${css}">` : "")
  .replace("<!--JS-->", `<script type="module" src="/assets/${js}"></script>`);
writeFileSync(join(out, "index.html"), html);
const kib = (p) => (result.metafile.outputs[Object.keys(result.metafile.outputs).find((k) => k.endsWith(p))].bytes / 1024).toFixed(1);
console.log(`console: built dist/ (assets/${js} ${kib(js)} KiB${css ? `, assets/${css} ${kib(css)} KiB` : ""})`);
