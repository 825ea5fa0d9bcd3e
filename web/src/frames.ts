// Pure helpers for frame-accurate scrubbing and click → pixel mapping (unit-tested).

/** Frames per second from the probed rational rate (25/1, 30000/1001 …). */
export function fpsOf(meta: { fps_num: number; fps_den: number }): number {
  return meta.fps_den > 0 && meta.fps_num > 0 ? meta.fps_num / meta.fps_den : 25;
}

/** The media time to seek to for `frame`: the middle of the frame's display interval, so
 * rounding in the decoder never lands on the neighbour. */
export function frameTime(frame: number, fps: number): number {
  return (frame + 0.5) / fps;
}

/** The frame shown at media time `t` (seconds). */
export function frameAt(t: number, fps: number, frameCount: number): number {
  return clampFrame(Math.floor(t * fps + 1e-6), frameCount);
}

export function clampFrame(frame: number, frameCount: number): number {
  return Math.max(0, Math.min(Math.max(0, frameCount - 1), Math.round(frame)));
}

/** "mm:ss.ff" for a frame, e.g. 00:01.12 = frame 12 of second 1 at 25 fps. */
export function timecode(frame: number, fps: number): string {
  const whole = Math.floor(frame / fps);
  const sub = Math.round(frame - whole * fps);
  const mm = String(Math.floor(whole / 60)).padStart(2, "0");
  const ss = String(whole % 60).padStart(2, "0");
  return `${mm}:${ss}.${String(sub).padStart(2, "0")}`;
}

export interface Rect {
  left: number;
  top: number;
  width: number;
  height: number;
}

/** Where a video of `videoW`×`videoH` is drawn inside an element of `box` with
 * `object-fit: contain` (letterboxing on two sides). */
export function containedRect(box: Rect, videoW: number, videoH: number): Rect {
  const scale = Math.min(box.width / videoW, box.height / videoH);
  const width = videoW * scale;
  const height = videoH * scale;
  return { left: box.left + (box.width - width) / 2, top: box.top + (box.height - height) / 2, width, height };
}

/** The size in which the browser displays a frame coded as `w`×`h` with a display rotation. */
export function displaySize(w: number, h: number, rotation: number): [number, number] {
  const r = ((Math.round(rotation / 90) * 90) % 360 + 360) % 360;
  return r === 90 || r === 270 ? [h, w] : [w, h];
}

/**
 * Where a pointer at (clientX, clientY) lands on the picture, in the video's display pixels
 * (the coordinates the API and the engine take: api/README.md, "Coordinates"). `element` is
 * the overlay's client rectangle; the picture of `dw`×`dh` display pixels (displaySize) is
 * drawn in it with `object-fit: contain`. Null in the letterbox bands; otherwise clamped into
 * [0, dw) × [0, dh). No rotation is undone here: the browser already shows the video rotated.
 */
export function clickToDisplay(clientX: number, clientY: number, element: Rect, dw: number, dh: number): [number, number] | null {
  const rect = containedRect(element, dw, dh);
  const dx = ((clientX - rect.left) / rect.width) * dw;
  const dy = ((clientY - rect.top) / rect.height) * dh;
  if (!(dx >= 0 && dy >= 0 && dx <= dw && dy <= dh)) return null;
  return [clampCoord(dx, dw), clampCoord(dy, dh)];
}

/** Clamp a display coordinate into [0, size - 0.01] (the API wants x < width). */
export function clampCoord(v: number, size: number): number {
  return Math.max(0, Math.min(size - 0.01, v));
}

/** The blur kernel must be odd (3–255). */
export function oddKernel(k: number): number {
  const n = Math.max(3, Math.min(255, Math.round(k)));
  return n % 2 === 1 ? n : n + 1 > 255 ? n - 1 : n + 1;
}

export function formatBytes(n: number | null | undefined): string {
  if (n == null || !Number.isFinite(n)) return "—";
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}
