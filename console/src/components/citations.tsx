// The sources of a grounded answer: each passage with its file, page and score; the file opens in place (a
// preview of the original, downloadable) and its chunks in the knowledge base's chunk editor.
import type { Citation } from "@typecase/client/gen/typecase/v1/common_pb.js";
import { useState } from "preact/hooks";
import { linkClick } from "../router";
import { FilePreview } from "./file-preview";
import { plural } from "./ui";

export function Citations({ citations }: { citations: Citation[] }) {
  if (citations.length === 0) return null;
  return (
    <details class="citations" data-testid="citations">
      <summary>{plural(citations.length, "source")}</summary>
      <ol>
        {citations.map((c, i) => (
          <CitationItem key={i} citation={c} />
        ))}
      </ol>
    </details>
  );
}

function CitationItem({ citation: c }: { citation: Citation }) {
  const [open, setOpen] = useState(false);
  return (
    <li data-testid="citation">
      <b>
        {c.kbId ? (
          <a href={c.fileId ? `/knowledge/${c.kbId}/${c.fileId}` : `/knowledge/${c.kbId}`} onClick={linkClick} title="Open this file's chunks in its knowledge base">
            {c.fileName}
          </a>
        ) : (
          c.fileName
        )}
      </b>{" "}
      {c.page > 0 && <span class="faint">p. {c.page} · </span>}
      <span class="faint">score {c.score.toFixed(3)}</span>{" "}
      {c.fileId && (
        <button class="link-btn" aria-expanded={open} onClick={() => setOpen(!open)}>
          {open ? "Hide file" : "Preview file"}
        </button>
      )}
      <div class="cite-text">{c.text}</div>
      {open && <FilePreview fileId={c.fileId} name={c.fileName} page={c.page} />}
    </li>
  );
}
