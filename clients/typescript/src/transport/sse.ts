// Server-Sent Events (the WHATWG event-stream format): `data:` lines joined by "\n", `event:` and `id:`
// fields, comment lines (the server's keep-alives) skipped, an event dispatched at each blank line.

import { bodyLines } from "./lines.js";

export interface SseEvent {
  event: string;
  data: string;
  id?: string;
}

export async function* sseEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent, void, undefined> {
  let data: string[] = [];
  let event = "";
  let id: string | undefined;
  for await (const line of bodyLines(body)) {
    if (line === "") {
      if (data.length > 0) yield { event: event || "message", data: data.join("\n"), id };
      data = [];
      event = "";
      id = undefined;
      continue;
    }
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "data") data.push(value);
    else if (name === "event") event = value;
    else if (name === "id" && !value.includes("\0")) id = value;
  }
  // A last event without its blank line was cut off in transit: it is not dispatched (the spec's rule too).
}
