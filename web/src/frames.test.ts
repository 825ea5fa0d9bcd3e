import { describe, expect, it } from "vitest";
import { clampFrame, containedRect, displaySize, displayToFrame, frameAt, frameTime, frameToDisplay, fpsOf, oddKernel, timecode } from "./frames";

describe("frame-accurate scrubbing", () => {
  it("seeks to the middle of a frame and maps back to the same frame", () => {
    for (const fps of [25, 30000 / 1001, 24, 60]) {
      for (let f = 0; f < 500; f += 7) expect(frameAt(frameTime(f, fps), fps, 1000)).toBe(f);
    }
  });
  it("reads the rational rate", () => {
    expect(fpsOf({ fps_num: 30000, fps_den: 1001 })).toBeCloseTo(29.97, 2);
    expect(fpsOf({ fps_num: 0, fps_den: 0 })).toBe(25);
  });
  it("clamps frames into the video", () => {
    expect(clampFrame(-3, 75)).toBe(0);
    expect(clampFrame(80, 75)).toBe(74);
    expect(frameAt(99, 25, 75)).toBe(74);
  });
  it("formats a timecode", () => {
    expect(timecode(37, 25)).toBe("00:01.12");
    expect(timecode(25 * 61, 25)).toBe("01:01.00");
  });
});

describe("click mapping", () => {
  it("accounts for letterboxing", () => {
    const r = containedRect({ left: 0, top: 0, width: 400, height: 400 }, 640, 360);
    expect(r.width).toBe(400);
    expect(r.height).toBeCloseTo(225);
    expect(r.top).toBeCloseTo(87.5);
  });
  it("round-trips every rotation", () => {
    for (const rot of [0, 90, 180, 270, -90]) {
      const [dw, dh] = displaySize(640, 360, rot);
      expect(dw * dh).toBe(640 * 360);
      const [dx, dy] = frameToDisplay(100, 50, 640, 360, rot);
      expect(dx).toBeGreaterThanOrEqual(0);
      expect(dx).toBeLessThanOrEqual(dw);
      expect(dy).toBeLessThanOrEqual(dh);
      expect(displayToFrame(dx, dy, 640, 360, rot)).toEqual([100, 50]);
    }
  });
  it("keeps the blur kernel odd and in range", () => {
    expect(oddKernel(98)).toBe(99);
    expect(oddKernel(1)).toBe(3);
    expect(oddKernel(999)).toBe(255);
  });
});
