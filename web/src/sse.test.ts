import { describe, expect, it } from "vitest";
import { parseSse } from "./sse";

describe("parseSse", () => {
  it("splits complete messages and keeps the unfinished rest", () => {
    const { messages, rest } = parseSse('event: status\ndata: {"percent":5}\n\n: keep-alive\n\nevent: end\ndata: {"st');
    expect(messages).toEqual([{ event: "status", data: '{"percent":5}' }]);
    expect(rest).toBe('event: end\ndata: {"st');
  });

  it("joins multi-line data, defaults the event name and accepts CRLF", () => {
    const { messages, rest } = parseSse("data: a\r\ndata: b\r\n\r\nevent:end\ndata:x\n\n");
    expect(messages).toEqual([
      { event: "message", data: "a\nb" },
      { event: "end", data: "x" },
    ]);
    expect(rest).toBe("");
  });

  it("gives nothing for a message without data", () => {
    expect(parseSse("event: ping\n\n").messages).toEqual([]);
  });
});
