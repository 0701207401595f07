// Builds the console into dist/: dist/assets/main-<hash>.{js,css} and dist/index.html pointing at them.
//   node build.mjs           production build (minified, linked source maps)
//   node build.mjs --watch   readable output, rebuilt on every change (reload the page to see it)
// The SDK is the sibling package clients/typescript (built there by `make ts`), imported as @typecase/client.
import { context } from "esbuild";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const sdk = resolve(process.env.TYPECASE_SDK_DIR ?? join(here, "..", "clients", "typescript"), "dist");
const out = join(here, "dist");
const watch = process.argv.includes("--watch");

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

// After each build: index.html names the hashed files, and older hashed files go.
const writeIndex = {
  name: "index-html",
  setup(b) {
    b.onEnd((result) => {
      if (result.errors.length || !result.metafile) return;
      const outputs = result.metafile.outputs;
      const names = Object.keys(outputs).map((p) => basename(p));
      // The entry's own files; views loaded on demand (the flow editor) are chunks beside them.
      const entry = Object.keys(outputs).find((k) => outputs[k].entryPoint && k.endsWith(".js"));
      const js = basename(entry);
      const css = outputs[entry].cssBundle ? basename(outputs[entry].cssBundle) : undefined;
      const html = readFileSync(join(here, "src", "index.html"), "utf8")
        .replace("<!--CSS-->", css ? `<link rel="stylesheet" href="/assets/${css}">` : "")
        .replace("<!--JS-->", `<script type="module" src="/assets/${js}"></script>`);
      writeFileSync(join(out, "index.html"), html);
      for (const old of readdirSync(join(out, "assets"))) {
        if (!names.includes(old)) rmSync(join(out, "assets", old));
      }
      const kib = (name) => (outputs[Object.keys(outputs).find((k) => k.endsWith(name))].bytes / 1024).toFixed(1);
      // First load: the entry, the chunks it imports statically, the CSS. The rest comes when a view needs it.
      const first = new Set([entry]);
      for (const k of first) for (const i of outputs[k].imports) if (i.kind === "import-statement") first.add(i.path);
      const bytes = (keys) => keys.reduce((n, k) => n + outputs[k].bytes, 0);
      const later = Object.keys(outputs).filter((k) => k.endsWith(".js") && !first.has(k));
      const firstKiB = ((bytes([...first]) + (css ? outputs[outputs[entry].cssBundle].bytes : 0)) / 1024).toFixed(1);
      console.log(`console: built dist/ (first load ${firstKiB} KiB: assets/${js} and ${first.size - 1} chunk(s)` +
        `${css ? ` + ${css}` : ""}; on demand ${(bytes(later) / 1024).toFixed(1)} KiB in ${later.length} chunk(s))`);
    });
  },
};

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "assets"), { recursive: true });
const ctx = await context({
  entryPoints: [join(here, "src", "main.tsx")],
  bundle: true,
  format: "esm",
  target: "es2022",
  outdir: join(out, "assets"),
  entryNames: "[name]-[hash]",
  chunkNames: "[name]-[hash]",
  splitting: true,
  assetNames: "[name]-[hash]",
  minify: !watch,
  sourcemap: watch ? "inline" : "linked",
  jsx: "automatic",
  jsxImportSource: "preact",
  // @xyflow/react (the flow editor) is written for React: Preact's compat layer stands in for it at about half
  // the bundle size of react-dom (see src/views/flow-editor/editor.tsx).
  alias: {
    react: "preact/compat",
    "react-dom": "preact/compat",
    "react-dom/client": "preact/compat/client",
    "react/jsx-runtime": "preact/jsx-runtime",
  },
  define: { "process.env.NODE_ENV": watch ? '"development"' : '"production"' },
  metafile: true,
  legalComments: "none",
  logLevel: "warning",
  plugins: [sdkAlias, writeIndex],
});
if (watch) {
  await ctx.watch();
  console.log("console: watching src/ (Ctrl-C to stop)");
} else {
  const result = await ctx.rebuild().catch(() => null);
  await ctx.dispose();
  if (!result) process.exit(1);
}
