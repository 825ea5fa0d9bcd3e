import { describe, expect, it } from "vitest";
import { clampFrame, clickToDisplay, containedRect, displaySize, frameAt, frameTime, fpsOf, oddKernel, timecode } from "./frames";

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
  it("swaps width and height for a quarter turn", () => {
    expect(displaySize(1280, 720, 90)).toEqual([720, 1280]);
    expect(displaySize(1280, 720, -90)).toEqual([720, 1280]);
    expect(displaySize(1280, 720, 270)).toEqual([720, 1280]);
    expect(displaySize(1280, 720, 180)).toEqual([1280, 720]);
    expect(displaySize(1280, 720, 0)).toEqual([1280, 720]);
  });
  it("maps a click to display pixels, never to the stored frame's", () => {
    // A phone video stored 1280x720 with rotation 90 is shown 720x1280, in a 400x400 overlay:
    // the picture is 225x400, centred (87.5 px bands left and right).
    const [dw, dh] = displaySize(1280, 720, 90);
    const el = { left: 10, top: 20, width: 400, height: 400 };
    const scale = 400 / 1280;
    // The pixel the user sees at display (600, 1000) is answered as (600, 1000), not turned.
    const at = (x: number, y: number) => clickToDisplay(10 + 87.5 + x * scale, 20 + y * scale, el, dw, dh);
    const [x, y] = at(600, 1000)!;
    expect(x).toBeCloseTo(600, 6);
    expect(y).toBeCloseTo(1000, 6);
    // Near the bottom of the shown picture y goes past the stored height (720), as it must.
    expect(at(100, 1279)![1]).toBeGreaterThan(720);
    // The far corners stay inside [0, dw) x [0, dh) (the API wants x < width).
    const [cx, cy] = at(720, 1280)!;
    expect(cx).toBeLessThan(dw);
    expect(cy).toBeLessThan(dh);
    expect(cx).toBeGreaterThan(dw - 0.1);
    expect(at(0, 0)).toEqual([0, 0]);
    // The letterbox bands are not the picture.
    expect(clickToDisplay(10 + 40, 20 + 200, el, dw, dh)).toBeNull();
    expect(clickToDisplay(10 + 400 - 40, 20 + 200, el, dw, dh)).toBeNull();
  });
  it("is the identity on an unrotated picture shown at its own size", () => {
    const el = { left: 0, top: 0, width: 640, height: 360 };
    expect(clickToDisplay(100, 50, el, 640, 360)).toEqual([100, 50]);
  });
  it("keeps the blur kernel odd and in range", () => {
    expect(oddKernel(98)).toBe(99);
    expect(oddKernel(1)).toBe(3);
    expect(oddKernel(999)).toBe(255);
  });
});
