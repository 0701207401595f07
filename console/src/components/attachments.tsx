// Files attached to a chat question: picked, dropped or pasted on the composer, sent inline (the server stores
// them; images go to a vision model, documents are read as text before the question). Images show as
// thumbnails. The server keeps attachments as objects without a download route, so a thumbnail is drawn from
// the bytes this tab sent (remembered by name and size); other messages' attachments show as named chips.
import type { Attachment } from "@typecase/client/gen/typecase/v1/chat_pb.js";
import { useState } from "preact/hooks";
import { fmtBytes } from "./ui";

/** Local object URLs of images this tab attached, by "name|size". */
const thumbnails = new Map<string, string>();
const keyOf = (name: string, size: number | bigint) => `${name}|${Number(size)}`;
const isImage = (type: string) => type.startsWith("image/");

export type Pending = { file: File; url?: string };

/** The files waiting to be sent with the next question. */
export function usePendingFiles() {
  const [files, setFiles] = useState<Pending[]>([]);
  return {
    files,
    add(list: FileList | File[]) {
      const added = Array.from(list).map((file) => ({ file, url: isImage(file.type) ? URL.createObjectURL(file) : undefined }));
      setFiles((prev) => [...prev, ...added]);
    },
    remove(i: number) {
      setFiles((prev) => {
        const gone = prev[i];
        if (gone?.url) URL.revokeObjectURL(gone.url);
        return prev.filter((_, j) => j !== i);
      });
    },
    /** Empties the list, keeping the images' thumbnails for the messages they were sent with. */
    take(): Pending[] {
      for (const f of files) if (f.url) thumbnails.set(keyOf(f.file.name, f.file.size), f.url);
      setFiles([]);
      return files;
    },
  };
}

/** ChatRequest.attachments for the files: inline data, the browser's MIME type. */
export async function toAttachments(files: Pending[]) {
  return Promise.all(
    files.map(async ({ file }) => ({ name: file.name, mimeType: file.type || "application/octet-stream", data: new Uint8Array(await file.arrayBuffer()) })),
  );
}

/** What a question's attachments look like before the server has stored them (for the message shown at once). */
export function asShown(files: Pending[]): Attachment[] {
  return files.map(({ file }) => ({ name: file.name, mimeType: file.type, sizeBytes: BigInt(file.size), url: "", fileId: "" }) as unknown as Attachment);
}

/** Files on the composer before sending, each removable. */
export function PendingFiles({ files, onRemove }: { files: Pending[]; onRemove: (i: number) => void }) {
  if (files.length === 0) return null;
  return (
    <ul class="attachments pending" data-testid="pending-attachments">
      {files.map((f, i) => (
        <li key={i} class="attachment" data-name={f.file.name}>
          {f.url ? <img class="thumb" src={f.url} alt={f.file.name} /> : <span class="file-icon" aria-hidden="true">📄</span>}
          <span class="ellipsis">{f.file.name}</span>
          <span class="faint">{fmtBytes(f.file.size)}</span>
          <button type="button" class="icon-btn" aria-label={`Remove ${f.file.name}`} onClick={() => onRemove(i)}>
            ×
          </button>
        </li>
      ))}
    </ul>
  );
}

/** A question's attachments: thumbnails for images this tab sent, named chips otherwise. */
export function MessageAttachments({ attachments }: { attachments: Attachment[] }) {
  if (attachments.length === 0) return null;
  return (
    <ul class="attachments" data-testid="attachments">
      {attachments.map((a, i) => {
        const thumb = isImage(a.mimeType) ? thumbnails.get(keyOf(a.name, a.sizeBytes)) : undefined;
        return (
          <li key={i} class="attachment" data-name={a.name} data-type={a.mimeType}>
            {thumb ? (
              <a href={thumb} target="_blank" rel="noopener" title="Open the image">
                <img class="thumb" src={thumb} alt={a.name} />
              </a>
            ) : (
              <span class="file-icon" aria-hidden="true">
                {isImage(a.mimeType) ? "🖼" : "📄"}
              </span>
            )}
            <span class="ellipsis">{a.name}</span>
            <span class="faint">{fmtBytes(a.sizeBytes)}</span>
          </li>
        );
      })}
    </ul>
  );
}
