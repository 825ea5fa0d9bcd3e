import { useEffect, useRef, useState } from "react";
import type { Box, Point, VideoMetadata } from "../api";
import { clampCoord, clampFrame, clickToDisplay, containedRect, displaySize, frameAt, frameTime, fpsOf, timecode } from "../frames";
import { describePreview, type PreviewState } from "../preview";

type Tool = "point" | "box";

interface Props {
  src: string | null;
  meta: VideoMetadata;
  frame: number;
  setFrame: (f: number) => void;
  points: Point[];
  setPoints: (p: Point[]) => void;
  box: Box | null;
  setBox: (b: Box | null) => void;
  /** The mask preview of the current clicks, and whether it is drawn. */
  preview?: PreviewState;
  showPreview?: boolean;
  setShowPreview?: (on: boolean) => void;
}

/** The clicked frame with its markers: frame-accurate scrubbing, click (shift-click) to
 * place positive (negative) points, or drag a box. Coordinates are display pixels (the picture as
 * shown, rotation applied: `dw`×`dh`), which is what the API and the engine take. */
export function Player({ src, meta, frame, setFrame, points, setPoints, box, setBox, preview = { kind: "idle" }, showPreview = true, setShowPreview }: Props) {
  const video = useRef<HTMLVideoElement>(null);
  const svg = useRef<SVGSVGElement>(null);
  const [tool, setTool] = useState<Tool>("point");
  const [playing, setPlaying] = useState(false);
  const [shownFrame, setShownFrame] = useState<number | null>(null);
  const [videoError, setVideoError] = useState("");
  const [drag, setDrag] = useState<{ x0: number; y0: number; x1: number; y1: number } | null>(null);
  const [kx, setKx] = useState("");
  const [ky, setKy] = useState("");
  const [kneg, setKneg] = useState(false);
  const fps = fpsOf(meta);
  const n = meta.frame_count;
  const rot = meta.rotation ?? 0;
  const [dw, dh] = displaySize(meta.width, meta.height, rot);
  // Markers keep about the same size on screen (a radius of 10 CSS pixels) at any width.
  const [cssWidth, setCssWidth] = useState(0);
  useEffect(() => {
    const el = svg.current;
    if (!el || typeof ResizeObserver === "undefined") return;
    const ro = new ResizeObserver(() => setCssWidth(containedRect(el.getBoundingClientRect(), dw, dh).width));
    ro.observe(el);
    return () => ro.disconnect();
  }, [dw, dh]);
  const r = cssWidth > 0 ? (10 * dw) / cssWidth : Math.max(dw, dh) / 70;

  // Seek to the middle of the chosen frame whenever it changes (not while playing).
  useEffect(() => {
    const v = video.current;
    if (!v || playing || !src) return;
    const t = frameTime(frame, fps);
    if (Math.abs(v.currentTime - t) > 1e-4) {
      setShownFrame(null);
      v.currentTime = t;
    } else setShownFrame(frame);
  }, [frame, fps, playing, src]);

  // While playing, follow the frames as they are presented.
  useEffect(() => {
    const v = video.current as (HTMLVideoElement & { requestVideoFrameCallback?: (cb: (now: number, m: { mediaTime: number }) => void) => number; cancelVideoFrameCallback?: (h: number) => void }) | null;
    if (!v || !playing) return;
    let handle = 0;
    let stop = false;
    const tick = (_: number, m: { mediaTime: number }) => {
      if (stop) return;
      setFrame(frameAt(m.mediaTime, fps, n));
      handle = v.requestVideoFrameCallback!(tick);
    };
    if (v.requestVideoFrameCallback) handle = v.requestVideoFrameCallback(tick);
    const onTime = () => setFrame(frameAt(v.currentTime, fps, n));
    if (!v.requestVideoFrameCallback) v.addEventListener("timeupdate", onTime);
    return () => {
      stop = true;
      if (v.cancelVideoFrameCallback && handle) v.cancelVideoFrameCallback(handle);
      v.removeEventListener("timeupdate", onTime);
    };
  }, [playing, fps, n, setFrame]);

  function go(f: number) {
    if (playing) video.current?.pause();
    setFrame(clampFrame(f, n));
  }

  function toDisplayCoords(e: React.PointerEvent): [number, number] | null {
    const el = svg.current;
    if (!el) return null;
    return clickToDisplay(e.clientX, e.clientY, el.getBoundingClientRect(), dw, dh);
  }

  function addPoint(x: number, y: number, negative: boolean) {
    if (playing) video.current?.pause();
    setPoints([...points, { x: Math.round(x * 10) / 10, y: Math.round(y * 10) / 10, frame, label: negative ? 0 : 1 }]);
  }

  function onDown(e: React.PointerEvent) {
    if (e.button !== 0) return;
    const p = toDisplayCoords(e);
    if (!p) return;
    if (tool === "box") {
      (e.target as Element).setPointerCapture?.(e.pointerId);
      setDrag({ x0: p[0], y0: p[1], x1: p[0], y1: p[1] });
    } else addPoint(p[0], p[1], e.shiftKey);
  }
  function onMove(e: React.PointerEvent) {
    if (!drag) return;
    const p = toDisplayCoords(e);
    if (p) setDrag({ ...drag, x1: p[0], y1: p[1] });
  }
  function onUp() {
    if (!drag) return;
    const b = { x0: Math.min(drag.x0, drag.x1), y0: Math.min(drag.y0, drag.y1), x1: Math.max(drag.x0, drag.x1), y1: Math.max(drag.y0, drag.y1) };
    setDrag(null);
    if (b.x1 - b.x0 >= 4 && b.y1 - b.y0 >= 4) setBox({ ...roundBox(b), frame });
  }

  function onKey(e: React.KeyboardEvent) {
    const step = e.shiftKey ? Math.max(1, Math.round(fps)) : 1;
    if (e.key === "ArrowRight" || e.key === ".") go(frame + step);
    else if (e.key === "ArrowLeft" || e.key === ",") go(frame - step);
    else if (e.key === "Home") go(0);
    else if (e.key === "End") go(n - 1);
    else if (e.key === " " || e.key === "k") togglePlay();
    else return;
    e.preventDefault();
  }

  function togglePlay() {
    const v = video.current;
    if (!v || !src) return;
    if (v.paused) {
      if (frame >= n - 1) v.currentTime = 0;
      v.play().catch(() => setPlaying(false));
    } else v.pause();
  }

  function addKeyboardPoint(e: React.FormEvent) {
    e.preventDefault();
    const x = Number(kx);
    const y = Number(ky);
    if (!Number.isFinite(x) || !Number.isFinite(y) || kx === "" || ky === "") return;
    addPoint(clampCoord(x, dw), clampCoord(y, dh), kneg);
  }

  const boxShown = drag ? { ...drag, frame } : box;
  const ready = shownFrame === frame;

  return (
    <div className="player">
      <div className="tools" role="radiogroup" aria-label="Tool">
        <label className={`chip${tool === "point" ? " on" : ""}`}>
          <input type="radio" name="tool" checked={tool === "point"} onChange={() => setTool("point")} /> Click points
        </label>
        <label className={`chip${tool === "box" ? " on" : ""}`}>
          <input type="radio" name="tool" checked={tool === "box"} onChange={() => setTool("box")} /> Drag a box
        </label>
        <span className="hint">Shift-click marks a spot that is <em>not</em> the object.</span>
      </div>
      <div className="stage" style={{ aspectRatio: `${dw} / ${dh}` }} data-frame={frame} data-ready={ready ? "true" : "false"} data-testid="stage">
        {src ? (
          <video
            ref={video}
            src={src}
            muted
            playsInline
            preload="auto"
            onSeeked={() => {
              const v = video.current;
              if (v) setShownFrame(frameAt(v.currentTime, fps, n));
            }}
            onLoadedData={() => {
              const v = video.current;
              if (v) v.currentTime = frameTime(frame, fps);
            }}
            onPlay={() => setPlaying(true)}
            onPause={() => {
              setPlaying(false);
              const v = video.current;
              if (v) setFrame(frameAt(v.currentTime, fps, n));
            }}
            onError={() => setVideoError("This browser cannot show this video's format, so the picture is blank; you can still place points on the frame.")}
          />
        ) : (
          <div className="no-preview">No preview in this browser: the original file is not here.</div>
        )}
        <svg
          ref={svg}
          viewBox={`0 0 ${dw} ${dh}`}
          preserveAspectRatio="xMidYMid meet"
          className={`overlay tool-${tool}`}
          tabIndex={0}
          role="application"
          aria-label={`Frame ${frame + 1} of ${n}. Click the object to place a point, Shift-click a spot that is not the object${tool === "box" ? ", or drag a box around it" : ""}. Arrow keys step one frame, Shift+arrow one second, Space plays.`}
          onPointerDown={onDown}
          onPointerMove={onMove}
          onPointerUp={onUp}
          onKeyDown={onKey}
          data-testid="overlay"
        >
          {showPreview && preview.kind === "ready" && preview.result.found && preview.result.frame === frame ? (
            <g className="mask-preview" data-testid="mask-preview" data-frame={preview.result.frame} data-area={preview.result.area} pointerEvents="none" aria-hidden="true">
              <defs>
                <mask id="tapmask-preview-mask" maskUnits="userSpaceOnUse" x={0} y={0} width={dw} height={dh}>
                  <image href={preview.result.mask} x={0} y={0} width={dw} height={dh} preserveAspectRatio="none" />
                </mask>
              </defs>
              <rect className="mask-fill" x={0} y={0} width={dw} height={dh} mask="url(#tapmask-preview-mask)" />
            </g>
          ) : null}
          {boxShown ? (
            (() => {
              const [ax, ay, bx, by] = [boxShown.x0, boxShown.y0, boxShown.x1, boxShown.y1];
              return (
                <rect
                  className={`box${boxShown.frame === frame ? "" : " other"}`}
                  x={Math.min(ax, bx)}
                  y={Math.min(ay, by)}
                  width={Math.abs(bx - ax)}
                  height={Math.abs(by - ay)}
                  strokeWidth={r / 4}
                />
              );
            })()
          ) : null}
          {points.map((p, i) => {
            const { x, y } = p;
            const here = p.frame === frame;
            return (
              <g key={i} className={`marker ${p.label ? "pos" : "neg"}${here ? "" : " other"}`} transform={`translate(${x} ${y})`} data-testid="marker">
                <circle r={r} strokeWidth={r / 4} />
                <path d={p.label ? `M ${-r / 2} 0 H ${r / 2} M 0 ${-r / 2} V ${r / 2}` : `M ${-r / 2} 0 H ${r / 2}`} strokeWidth={r / 4} />
                {!here ? (
                  <text y={-r * 1.4} fontSize={r * 1.2} textAnchor="middle">
                    f{p.frame + 1}
                  </text>
                ) : null}
              </g>
            );
          })}
        </svg>
      </div>
      <div className="preview-bar">
        <label className="inline">
          <input type="checkbox" checked={showPreview} onChange={(e) => setShowPreview?.(e.target.checked)} data-testid="preview-toggle" /> Show mask preview
        </label>
        <span role="status" aria-live="polite" className={`preview-status${preview.kind === "error" ? " bad" : ""}`} data-testid="preview-status" data-state={showPreview ? preview.kind : "off"}>
          {showPreview ? describePreview(preview, frame) : "Mask preview off."}
        </span>
        {showPreview && preview.kind === "ready" && preview.result.frame !== frame ? (
          <button type="button" className="link" onClick={() => go(preview.result.frame)}>
            Show frame {preview.result.frame + 1}
          </button>
        ) : null}
      </div>
      {videoError ? <p className="error" role="alert">{videoError}</p> : null}
      <div className="scrub">
        <button type="button" onClick={togglePlay} disabled={!src} aria-label={playing ? "Pause" : "Play"}>
          {playing ? "❚❚" : "▶"}
        </button>
        <button type="button" onClick={() => go(frame - 1)} disabled={frame <= 0} aria-label="Previous frame">
          ◀ 1
        </button>
        <input
          type="range"
          min={0}
          max={Math.max(0, n - 1)}
          step={1}
          value={frame}
          onChange={(e) => go(Number(e.target.value))}
          aria-label="Frame"
          aria-valuetext={`frame ${frame + 1} of ${n}, ${timecode(frame, fps)}`}
        />
        <button type="button" onClick={() => go(frame + 1)} disabled={frame >= n - 1} aria-label="Next frame">
          1 ▶
        </button>
        <output className="frame-label" data-testid="frame-label" aria-live="polite">
          Frame {frame + 1} / {n} · {timecode(frame, fps)}
        </output>
      </div>
      <details className="kbd-point">
        <summary>Place a point by coordinates (keyboard)</summary>
        <form onSubmit={addKeyboardPoint} className="row">
          <label>
            x (0–{dw - 1})
            <input type="number" inputMode="decimal" min={0} max={dw - 1} value={kx} onChange={(e) => setKx(e.target.value)} />
          </label>
          <label>
            y (0–{dh - 1})
            <input type="number" inputMode="decimal" min={0} max={dh - 1} value={ky} onChange={(e) => setKy(e.target.value)} />
          </label>
          <label className="inline">
            <input type="checkbox" checked={kneg} onChange={(e) => setKneg(e.target.checked)} /> not the object
          </label>
          <button type="submit">Add point on frame {frame + 1}</button>
        </form>
      </details>
      <PromptList points={points} setPoints={setPoints} box={box} setBox={setBox} go={go} />
    </div>
  );
}

function roundBox(b: { x0: number; y0: number; x1: number; y1: number }) {
  const q = (v: number) => Math.round(v * 10) / 10;
  return { x0: q(b.x0), y0: q(b.y0), x1: q(b.x1), y1: q(b.y1) };
}

function PromptList({ points, setPoints, box, setBox, go }: { points: Point[]; setPoints: (p: Point[]) => void; box: Box | null; setBox: (b: Box | null) => void; go: (f: number) => void }) {
  if (!points.length && !box) return <p className="hint" data-testid="no-points">No point yet: click the object in the picture.</p>;
  return (
    <ul className="prompts" aria-label="Points and box">
      {points.map((p, i) => (
        <li key={i} data-testid="point-item">
          <span className={`dot ${p.label ? "pos" : "neg"}`} aria-hidden="true">
            {p.label ? "+" : "−"}
          </span>
          {p.label ? "On the object" : "Not the object"} at ({p.x.toFixed(0)}, {p.y.toFixed(0)}),{" "}
          <button type="button" className="link" onClick={() => go(p.frame)}>
            frame {p.frame + 1}
          </button>
          <button type="button" className="small" onClick={() => setPoints(points.filter((_, j) => j !== i))} aria-label={`Remove point ${i + 1}`}>
            Remove
          </button>
        </li>
      ))}
      {box ? (
        <li>
          <span className="dot box" aria-hidden="true">▭</span>
          Box ({box.x0.toFixed(0)}, {box.y0.toFixed(0)})–({box.x1.toFixed(0)}, {box.y1.toFixed(0)}),{" "}
          <button type="button" className="link" onClick={() => go(box.frame)}>
            frame {box.frame + 1}
          </button>
          <button type="button" className="small" onClick={() => setBox(null)} aria-label="Remove the box">
            Remove
          </button>
        </li>
      ) : null}
    </ul>
  );
}
