// File uploads to client-streaming RPCs, as the gateway takes them: a multipart/form-data POST whose text
// fields (the request's populated fields as field paths, like query parameters) come before the one file part;
// the gateway streams the file into the request's bytes field chunk by chunk and fills file_name and
// content_type from the part when the form did not. Browsers send it with XMLHttpRequest for its upload
// progress events; elsewhere fetch sends a body built here, streamed slice by slice when progress is wanted.

import type { DescMethod, Message } from "@bufbuild/protobuf";
import { decode } from "../codec.js";
import { TypecaseError, errorFromBody, errorFromResponse } from "../errors.js";
import { buildRequest, formFields, routeOf } from "../route.js";
import { grpcTimeout, requestHeaders, send } from "./http.js";
import type { CallOptions, Transport } from "./http.js";
import { CallScope } from "./scope.js";

const SLICE_BYTES = 64 * 1024;

export async function upload(
  t: Transport,
  method: DescMethod,
  request: Message,
  file: Blob,
  options: CallOptions,
): Promise<Message> {
  const route = routeOf(method);
  const input = method.input;
  const data = input.fields.find((f) => f.fieldKind === "scalar" && f.name !== "" && isBytes(f));
  if (data === undefined) throw new Error(`${input.typeName} has no bytes field to upload into`);
  const path = buildRequest(route, request, t.registry).path.split("?")[0];
  const skip = new Set(route.variables.map((v) => v.names.join(".")));
  skip.add(data.name);
  const fields = formFields(input, request, skip, t.registry);
  const fileName =
    fields.find(([k]) => k === "file_name")?.[1] || (file as Partial<File>).name || "upload";
  const timeoutMs = options.timeoutMs ?? t.timeoutMs;
  const headers = { ...requestHeaders(t, options.headers), ...grpcTimeout(timeoutMs), accept: "application/json" };
  const scope = new CallScope(options.signal, timeoutMs);
  try {
    const json = t.useXhr
      ? await xhrUpload(t.baseUrl + path, headers, fields, file, fileName, scope, options.onProgress)
      : await fetchUpload(t, t.baseUrl + path, headers, fields, file, fileName, scope, options.onProgress);
    return decode(method.output, route.responseBody ? { [route.responseBody]: json } : json);
  } catch (e) {
    throw scope.fail(e);
  } finally {
    scope.close();
  }
}

function isBytes(field: { scalar?: unknown }): boolean {
  return field.scalar === 12; // ScalarType.BYTES
}

// Quotes and line breaks in a Content-Disposition parameter are percent-encoded, as browsers do.
const quoted = (s: string) => s.replace(/"/g, "%22").replace(/\r/g, "%0D").replace(/\n/g, "%0A");

async function fetchUpload(
  t: Transport,
  url: string,
  headers: Record<string, string>,
  fields: [string, string][],
  file: Blob,
  fileName: string,
  scope: CallScope,
  onProgress: CallOptions["onProgress"],
): Promise<unknown> {
  const boundary = `----typecase-${Math.random().toString(16).slice(2)}${Date.now().toString(16)}`;
  let head = "";
  for (const [name, value] of fields) {
    head += `--${boundary}\r\nContent-Disposition: form-data; name="${quoted(name)}"\r\n\r\n${value}\r\n`;
  }
  head += `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${quoted(fileName)}"\r\n`;
  // No Content-Type for an untyped Blob: the server then detects the type from the name and content.
  head += file.type ? `Content-Type: ${file.type}\r\n\r\n` : "\r\n";
  const tail = `\r\n--${boundary}--\r\n`;
  const encoder = new TextEncoder();
  const init: RequestInit & { duplex?: "half" } = {
    method: "POST",
    headers: { ...headers, "content-type": `multipart/form-data; boundary=${boundary}` },
    signal: scope.signal,
  };
  if (onProgress === undefined) {
    init.body = new Blob([encoder.encode(head), file, encoder.encode(tail)]);
  } else {
    // Pulled by fetch as it sends: each slice reported is one the network layer asked for.
    let offset = 0;
    let stage = 0;
    init.body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (stage === 0) {
          controller.enqueue(encoder.encode(head));
          onProgress(0, file.size);
          stage = 1;
        } else if (stage === 1 && offset < file.size) {
          const end = Math.min(file.size, offset + SLICE_BYTES);
          controller.enqueue(new Uint8Array(await file.slice(offset, end).arrayBuffer()));
          offset = end;
          onProgress(offset, file.size);
        } else {
          controller.enqueue(encoder.encode(tail));
          controller.close();
        }
      },
    });
    init.duplex = "half"; // required by fetch for a streamed request body
  }
  const response = await send(t, scope, url, init);
  if (!response.ok) throw await errorFromResponse(response);
  return await response.json();
}

function xhrUpload(
  url: string,
  headers: Record<string, string>,
  fields: [string, string][],
  file: Blob,
  fileName: string,
  scope: CallScope,
  onProgress: CallOptions["onProgress"],
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const [name, value] of fields) form.append(name, value);
    form.append("file", file, fileName);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    const onAbort = () => xhr.abort();
    scope.signal.addEventListener("abort", onAbort, { once: true });
    const done = () => scope.signal.removeEventListener("abort", onAbort);
    if (onProgress !== undefined) {
      // The event counts the whole multipart body: report the file's share of it.
      xhr.upload.onprogress = (e: ProgressEvent) => {
        const overhead = e.lengthComputable ? e.total - file.size : 0;
        onProgress(Math.max(0, Math.min(file.size, e.loaded - overhead)), file.size);
      };
    }
    xhr.onload = () => {
      done();
      const traceId = xhr.getResponseHeader("x-trace-id") ?? undefined;
      if (xhr.status < 200 || xhr.status >= 300) {
        reject(errorFromBody(xhr.status, xhr.responseText, { traceId }));
        return;
      }
      try {
        resolve(JSON.parse(xhr.responseText));
      } catch (e) {
        reject(new TypecaseError("INTERNAL", "the upload response is not JSON", { httpStatus: xhr.status, cause: e }));
      }
    };
    xhr.onerror = () => {
      done();
      reject(scope.fail(new Error("the upload failed")));
    };
    xhr.onabort = () => {
      done();
      reject(scope.fail(new Error("the upload was aborted")));
    };
    if (scope.aborted) {
      done();
      reject(scope.fail(undefined));
      return;
    }
    xhr.send(form);
  });
}
