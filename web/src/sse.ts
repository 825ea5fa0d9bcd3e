/**
 * Server-Sent Events over fetch(), so the page sends its token in the Authorization header
 * instead of the URL (EventSource cannot send headers, and URLs end up in browser history
 * and proxy logs). The API still accepts `?token=` for third-party EventSource clients.
 */

export interface SseMessage {
  event: string;
  data: string;
}

/** Splits a text/event-stream buffer into complete messages and the unfinished rest. */
export function parseSse(buffer: string): { messages: SseMessage[]; rest: string } {
  const messages: SseMessage[] = [];
  const text = buffer.replace(/\r\n?/g, "\n");
  const blocks = text.split("\n\n");
  const rest = blocks.pop() ?? "";
  for (const block of blocks) {
    let event = "message";
    const data: string[] = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue; // blank or a comment (keep-alive)
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    if (data.length) messages.push({ event, data: data.join("\n") });
  }
  return { messages, rest };
}

/**
 * Reads an SSE stream until it ends, the signal aborts, or `onMessage` returns false.
 * Rejects when the answer is not a 200 event stream or the connection breaks.
 */
export async function followSse(
  url: string,
  headers: Record<string, string>,
  signal: AbortSignal,
  onMessage: (m: SseMessage) => boolean | void,
): Promise<void> {
  const resp = await fetch(url, { headers: { Accept: "text/event-stream", ...headers }, signal });
  if (!resp.ok || !resp.body || !(resp.headers.get("content-type") ?? "").startsWith("text/event-stream")) {
    throw new Error(`live progress unavailable (HTTP ${resp.status})`);
  }
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    const parsed = parseSse(buffer + value);
    buffer = parsed.rest;
    for (const m of parsed.messages) {
      if (onMessage(m) === false) {
        await reader.cancel();
        return;
      }
    }
  }
}
