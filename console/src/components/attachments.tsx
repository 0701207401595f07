// Files attached to a chat question: picked, dropped or pasted on the composer, sent inline (the server stores
// them; images go to a vision model, documents are read as text before the question). Images show as
// thumbnails: drawn from the bytes this tab sent (remembered by name and size), otherwise fetched from the server
// (ChatService.DownloadAttachment); documents are chips that download the file.
import type { Attachment } from "@typecase/client/gen/typecase/v1/chat_pb.js";
import { useEffect, useState } from "preact/hooks";
import { fetchAttachment, handleError, isAbort } from "../api";
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

/** The stored bytes of a message's attachment, as an object URL (for a thumbnail or a download). */
async function storedUrl(messageId: string, index: number, signal?: AbortSignal): Promise<string> {
  return URL.createObjectURL(await (await fetchAttachment(messageId, index, signal)).blob());
}

/** A question's attachments: images as thumbnails, other files as chips that download them. */
export function MessageAttachments({ messageId, attachments }: { messageId: string; attachments: Attachment[] }) {
  if (attachments.length === 0) return null;
  return (
    <ul class="attachments" data-testid="attachments">
      {attachments.map((a, i) => (
        <li key={i} class="attachment" data-name={a.name} data-type={a.mimeType}>
          {isImage(a.mimeType) ? <Thumbnail messageId={messageId} index={i} attachment={a} /> : <span class="file-icon" aria-hidden="true">📄</span>}
          {a.url.startsWith("object:") && !isImage(a.mimeType) ? (
            <button type="button" class="link-btn ellipsis" title="Download" onClick={() => void save(messageId, i, a.name)}>
              {a.name}
            </button>
          ) : (
            <span class="ellipsis">{a.name}</span>
          )}
          <span class="faint">{fmtBytes(a.sizeBytes)}</span>
        </li>
      ))}
    </ul>
  );
}

async function save(messageId: string, index: number, name: string): Promise<void> {
  try {
    const url = await storedUrl(messageId, index);
    const link = Object.assign(document.createElement("a"), { href: url, download: name });
    document.body.append(link);
    link.click();
    link.remove();
    window.setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (e) {
    window.alert(`Could not download ${name}: ${handleError(e)}`);
  }
}

function Thumbnail({ messageId, index, attachment: a }: { messageId: string; index: number; attachment: Attachment }) {
  const local = thumbnails.get(keyOf(a.name, a.sizeBytes));
  const stored = a.url.startsWith("object:");
  const [url, setUrl] = useState<string | undefined>(local);
  useEffect(() => {
    if (local || !stored) return;
    const ctrl = new AbortController();
    let made: string | undefined;
    storedUrl(messageId, index, ctrl.signal).then(
      (u) => setUrl((made = u)),
      (e) => !isAbort(e) && handleError(e),
    );
    return () => {
      ctrl.abort();
      if (made) URL.revokeObjectURL(made);
    };
  }, [messageId, index, local, stored]);
  if (!url) return <span class="file-icon" aria-hidden="true">🖼</span>;
  return (
    <a href={url} target="_blank" rel="noopener" title="Open the image">
      <img class="thumb" src={url} alt={a.name} />
    </a>
  );
}
