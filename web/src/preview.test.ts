import { describe, expect, it } from "vitest";
import { describePreview, percent, previewRequest, promptFrame, requestKey, type PreviewResult } from "./preview";

const pos = { x: 10, y: 20, frame: 7, label: 1 as const };
const neg = { x: 1, y: 2, frame: 3, label: 0 as const };
const box = { x0: 1, y0: 2, x1: 30, y1: 40, frame: 9 };

function result(over: Partial<PreviewResult> = {}): PreviewResult {
  return {
    videoId: "v", frame: 7, width: 480, height: 270, mask: "data:image/png;base64,", bbox: { x0: 1, y0: 2, x1: 3, y1: 4 },
    area: 4147, areaFraction: 4147 / (480 * 270), found: true, trackingSize: { width: 320, height: 180 }, ...over,
  };
}

describe("what is asked", () => {
  it("picks the frame as the engine does: first positive point, else the box", () => {
    expect(promptFrame([neg, pos], box)).toBe(7);
    expect(promptFrame([neg], box)).toBe(9);
    expect(promptFrame([neg], null)).toBeNull();
    expect(promptFrame([], null)).toBeNull();
  });
  it("asks nothing until a positive point or a box exists", () => {
    expect(previewRequest([neg], null)).toBeNull();
    expect(previewRequest([neg, pos], null)).toEqual({ points: [neg, pos] });
    expect(previewRequest([], box)).toEqual({ points: [], box });
  });
  it("keys requests by video and clicks", () => {
    const a = requestKey("v1", previewRequest([pos], null));
    expect(a).toBe(requestKey("v1", previewRequest([{ ...pos }], null)));
    expect(a).not.toBe(requestKey("v2", previewRequest([pos], null)));
    expect(a).not.toBe(requestKey("v1", previewRequest([pos], box)));
    expect(requestKey("v1", null)).toBe("");
  });
});

describe("what is said", () => {
  it("formats shares of the frame", () => {
    expect(percent(0.032)).toBe("3.2 %");
    expect(percent(0.0042)).toBe("0.42 %");
    expect(percent(0.00001)).toBe("< 0.01 %");
    expect(percent(0)).toBe("0 %");
  });
  it("says found, where and how big", () => {
    expect(describePreview({ kind: "ready", result: result({ areaFraction: 0.032 }) }, 7)).toBe("Preview: object found, 3.2 % of the frame.");
    expect(describePreview({ kind: "ready", result: result({ areaFraction: 0.032 }) }, 2)).toBe("Preview: object found on frame 8, 3.2 % of the frame.");
    expect(describePreview({ kind: "ready", result: result({ found: false, area: 0, areaFraction: 0, bbox: null }) }, 7)).toMatch(/^Preview: nothing found/);
  });
  it("puts errors in words", () => {
    expect(describePreview({ kind: "error", message: "point (500, 3) is outside the 480x270 frame" }, 0)).toBe(
      "Preview unavailable: point (500, 3) is outside the 480x270 frame",
    );
    expect(describePreview({ kind: "loading" }, 0)).toMatch(/finding/);
    expect(describePreview({ kind: "idle" }, 0)).toMatch(/click the object/);
  });
});
