// A knowledge file's original, previewed in the page (text: its first bytes through a range request; images and
// PDFs: the whole file inline) and downloadable. Used by the chunk editor and by a citation in chat.
import { useEffect, useState } from "preact/hooks";
import { fetchFile, handleError, isAbort } from "../api";
import { ErrorBox, Spinner, fmtBytes, useAction } from "./ui";

const PREVIEW_BYTES = 64 * 1024; // text previews show this much of the file (one range request)

type Preview =
  | { kind: "text"; text: string; shown: number; total: number | null }
  | { kind: "image" | "pdf"; url: string }
  | { kind: "none"; type: string };

function isText(type: string): boolean {
  return type.startsWith("text/") || /json|xml|yaml|markdown|csv/.test(type);
}

function totalSize(res: Response): number | null {
  const range = res.headers.get("content-range")?.split("/")[1];
  const size = res.headers.get("x-file-size") ?? range;
  return size && /^\d+$/.test(size) ? Number(size) : null;
}

/** Saves the whole file under its name (the browser's download). */
export async function downloadFile(fileId: string, name: string): Promise<void> {
  const blob = await (await fetchFile(fileId)).blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  window.setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function FilePreview({ fileId, name, page }: { fileId: string; name: string; page?: number }) {
  const [preview, setPreview] = useState<Preview | null>(null);
  const [error, setError] = useState<string | null>(null);
  const download = useAction(); // its own error: clearing the preview's would bring the spinner back

  useEffect(() => {
    const ctrl = new AbortController();
    let objectUrl: string | undefined;
    setPreview(null);
    setError(null);
    (async () => {
      try {
        const head = await fetchFile(fileId, { range: `bytes=0-${PREVIEW_BYTES - 1}`, inline: true, signal: ctrl.signal });
        const type = (head.headers.get("content-type") ?? "").toLowerCase();
        if (isText(type)) {
          const bytes = new Uint8Array(await head.arrayBuffer());
          const total = totalSize(head);
          // A range may end inside a multi-byte character: decoding drops the broken tail.
          setPreview({ kind: "text", text: new TextDecoder().decode(bytes), shown: bytes.length, total });
        } else if (type.startsWith("image/") || type === "application/pdf") {
          void head.body?.cancel();
          const whole = await (await fetchFile(fileId, { inline: true, signal: ctrl.signal })).blob();
          objectUrl = URL.createObjectURL(whole);
          setPreview({ kind: type === "application/pdf" ? "pdf" : "image", url: objectUrl });
        } else {
          void head.body?.cancel();
          setPreview({ kind: "none", type: type || "unknown type" });
        }
      } catch (e) {
        if (!isAbort(e)) setError(handleError(e));
      }
    })();
    return () => {
      ctrl.abort();
      if (objectUrl) URL.revokeObjectURL(objectUrl);
    };
  }, [fileId]);

  return (
    <div class="file-preview" data-testid="file-preview">
      <div class="row-actions">
        <b class="ellipsis">{name}</b>
        <button class="btn small" onClick={() => download.act(() => downloadFile(fileId, name))} disabled={download.busy}>
          {download.busy ? "Downloading…" : "Download"}
        </button>
      </div>
      <ErrorBox error={error ?? download.error} />
      {!preview && !error && <Spinner label="Loading the file…" />}
      {preview?.kind === "text" && (
        <>
          <pre class="file-text" data-testid="file-text">
            {preview.text}
          </pre>
          {preview.total !== null && preview.total > preview.shown && (
            <span class="faint small">
              First {fmtBytes(preview.shown)} of {fmtBytes(preview.total)}; download for the rest.
            </span>
          )}
        </>
      )}
      {preview?.kind === "image" && <img class="file-image" src={preview.url} alt={name} />}
      {preview?.kind === "pdf" && <iframe class="file-pdf" src={`${preview.url}#page=${page || 1}`} title={name} />}
      {preview?.kind === "none" && <p class="faint">No preview for {preview.type}; download the file to open it.</p>}
    </div>
  );
}
