// Pure helpers of the mask preview (unit-tested): what to ask the API for, and what to say.
import type { Box, Point } from "./api";

/** Body of POST /api/v1/videos/{id}/preview: the clicks and the box, as /segment takes them. */
export interface PreviewRequest {
  points: Point[];
  box?: Box;
}

/** The API's answer (api/README.md). */
export interface PreviewResult {
  videoId: string;
  frame: number;
  width: number;
  height: number;
  mask: string; // data:image/png;base64,… (255 = the object), width × height
  bbox: { x0: number; y0: number; x1: number; y1: number } | null;
  area: number;
  areaFraction: number;
  found: boolean;
  trackingSize: { width: number; height: number };
}

/** The frame the object is designated on, as the engine picks it: the first positive
 * point's, else the box's; null when neither exists (nothing to preview). */
export function promptFrame(points: Point[], box: Box | null): number | null {
  const pos = points.find((p) => p.label === 1);
  if (pos) return pos.frame;
  return box ? box.frame : null;
}

/** The preview request for these clicks, or null when nothing designates the object yet. */
export function previewRequest(points: Point[], box: Box | null): PreviewRequest | null {
  if (promptFrame(points, box) === null) return null;
  return box ? { points, box } : { points };
}

/** A stable key of a request: the same clicks ask only once. */
export function requestKey(videoId: string, req: PreviewRequest | null): string {
  return req ? `${videoId}:${JSON.stringify(req)}` : "";
}

/** "3.2 %", "0.04 %", "< 0.01 %": a share of the frame, readable at any size. */
export function percent(fraction: number): string {
  const p = Math.max(0, fraction) * 100;
  if (p === 0) return "0 %";
  if (p < 0.01) return "< 0.01 %";
  return `${p < 1 ? p.toFixed(2) : p.toFixed(1)} %`;
}

/** The status line read to everyone (and by screen readers). */
export function describePreview(state: PreviewState, shownFrame: number): string {
  switch (state.kind) {
    case "idle":
      return "Preview: click the object to see the mask here before the job runs.";
    case "loading":
      return "Preview: finding the object…";
    case "error":
      return `Preview unavailable: ${state.message}`;
    case "ready": {
      const r = state.result;
      const where = r.frame === shownFrame ? "" : ` on frame ${r.frame + 1}`;
      if (!r.found) return `Preview: nothing found${where}; add a point on the object or draw a box.`;
      return `Preview: object found${where}, ${percent(r.areaFraction)} of the frame.`;
    }
  }
}

export type PreviewState =
  | { kind: "idle" }
  | { kind: "loading" }
  | { kind: "ready"; result: PreviewResult }
  | { kind: "error"; message: string };
