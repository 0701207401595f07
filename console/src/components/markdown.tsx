// Answers rendered as Markdown: markdown-it parses, highlight.js colours code blocks, DOMPurify sanitises.
//
// Answers are untrusted (a model repeats whatever a prompt or a document fed it), so three layers keep them
// inert: markdown-it runs with `html: false` (raw HTML is shown as text, never parsed), its link validator
// drops javascript:/vbscript:/data: URLs, and DOMPurify cleans the final HTML anyway (no handlers, no scripts,
// only http(s)/mailto links) before it reaches the DOM. Links open in a new tab without an opener.
//
// highlight.js is imported as its core plus a handful of common languages (the full build is ~1 MB minified);
// an unknown fence language is shown unhighlighted rather than auto-detected (auto-detection tries every
// grammar on every token of a streamed answer).
import DOMPurify from "dompurify";
import hljs from "highlight.js/lib/core";
import bash from "highlight.js/lib/languages/bash";
import css from "highlight.js/lib/languages/css";
import go from "highlight.js/lib/languages/go";
import java from "highlight.js/lib/languages/java";
import javascript from "highlight.js/lib/languages/javascript";
import json from "highlight.js/lib/languages/json";
import python from "highlight.js/lib/languages/python";
import rust from "highlight.js/lib/languages/rust";
import sql from "highlight.js/lib/languages/sql";
import typescript from "highlight.js/lib/languages/typescript";
import xml from "highlight.js/lib/languages/xml";
import yaml from "highlight.js/lib/languages/yaml";
import "highlight.js/styles/github.css";
import MarkdownIt from "markdown-it";
import { useEffect, useMemo, useRef } from "preact/hooks";

const LANGUAGES = { bash, css, go, java, javascript, json, python, rust, sql, typescript, xml, yaml };
for (const [name, grammar] of Object.entries(LANGUAGES)) hljs.registerLanguage(name, grammar);
hljs.registerAliases(["sh", "shell", "zsh"], { languageName: "bash" });
hljs.registerAliases(["js", "jsx", "mjs"], { languageName: "javascript" });
hljs.registerAliases(["ts", "tsx"], { languageName: "typescript" });
hljs.registerAliases(["py"], { languageName: "python" });
hljs.registerAliases(["html", "svg"], { languageName: "xml" });
hljs.registerAliases(["yml"], { languageName: "yaml" });

/** Longer answers are shown as plain text: parsing and highlighting run on every streamed token. */
export const MAX_MARKDOWN_CHARS = 200_000;

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const md = new MarkdownIt({
  html: false,
  linkify: true,
  breaks: false,
  highlight(code: string, lang: string): string {
    const language = lang.trim().split(/\s+/)[0]?.toLowerCase() ?? "";
    const body = language && hljs.getLanguage(language)
      ? hljs.highlight(code, { language, ignoreIllegals: true }).value
      : escapeHtml(code);
    return `<pre class="code-block" data-lang="${escapeHtml(language)}"><code class="hljs${language ? ` language-${escapeHtml(language)}` : ""}">${body}</code></pre>`;
  },
});

const SAFE_URL = /^(?:https?:|mailto:|#|\/(?!\/))/i;

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    const href = node.getAttribute("href") ?? "";
    if (!SAFE_URL.test(href)) node.removeAttribute("href");
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
  if (node.tagName === "IMG") {
    // An image in an answer would be a request to wherever the text points (a tracking pixel): no source.
    node.removeAttribute("src");
  }
});

/** Markdown text to sanitised HTML. */
export function renderMarkdown(text: string): string {
  return DOMPurify.sanitize(md.render(text), {
    USE_PROFILES: { html: true },
    FORBID_TAGS: ["style", "form", "input", "button", "iframe", "object", "embed"],
    FORBID_ATTR: ["style"],
  });
}

export async function copyText(text: string): Promise<void> {
  if (navigator.clipboard?.writeText) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = document.createElement("textarea");
  area.value = text;
  document.body.appendChild(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

/** A Markdown answer with a Copy button on every code block. */
export function Markdown({ text, class: className = "" }: { text: string; class?: string }) {
  const box = useRef<HTMLDivElement>(null);
  const html = useMemo(() => (text.length > MAX_MARKDOWN_CHARS ? null : renderMarkdown(text)), [text]);

  useEffect(() => {
    const root = box.current;
    if (!root) return;
    for (const pre of Array.from(root.querySelectorAll("pre.code-block"))) {
      if (pre.querySelector(".copy-code")) continue;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "copy-code btn small ghost";
      button.textContent = "Copy";
      button.addEventListener("click", () => {
        const code = pre.querySelector("code")?.textContent ?? "";
        copyText(code).then(
          () => (button.textContent = "Copied"),
          () => (button.textContent = "Copy failed"),
        );
        window.setTimeout(() => (button.textContent = "Copy"), 1500);
      });
      pre.prepend(button);
    }
  }, [html]);

  if (html === null) return <div class={`markdown plain ${className}`}>{text}</div>;
  return <div ref={box} class={`markdown ${className}`} dangerouslySetInnerHTML={{ __html: html }} />;
}
