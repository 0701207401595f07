// Text lines of a response body as they arrive. A line ends at "\n", "\r\n" or "\r" (the SSE spec's rule; NDJSON
// only uses "\n"); a "\r\n" split across two chunks counts once.

export async function* bodyLines(body: ReadableStream<Uint8Array>): AsyncGenerator<string, void, undefined> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let skipLf = false; // the previous chunk ended with "\r": a leading "\n" belongs to it
  try {
    for (;;) {
      const { done, value } = await reader.read();
      let text = done ? decoder.decode() : decoder.decode(value, { stream: true });
      if (skipLf && text.startsWith("\n")) text = text.slice(1);
      if (text) skipLf = false;
      buffer += text;
      let start = 0;
      for (let i = 0; i < buffer.length; i++) {
        const c = buffer.charCodeAt(i);
        if (c !== 10 && c !== 13) continue;
        yield buffer.slice(start, i);
        if (c === 13) {
          if (i + 1 < buffer.length) {
            if (buffer.charCodeAt(i + 1) === 10) i++;
          } else {
            skipLf = true;
          }
        }
        start = i + 1;
      }
      buffer = buffer.slice(start);
      if (done) {
        if (buffer) yield buffer;
        return;
      }
    }
  } finally {
    reader.cancel().catch(() => undefined); // stops the download when the consumer leaves early
  }
}
