import { useEffect, useRef, useState } from "react";
import { api, ApiError, getToken, type JobStatus } from "../api";

/** A finished job: before/after comparison (a wipe slider or side by side) and downloads. */
export function Result({ job, beforeSrc, onError }: { job: JobStatus; beforeSrc: string | null; onError: (e: unknown) => void }) {
  const [afterUrl, setAfterUrl] = useState<string | null>(null);
  const [filename, setFilename] = useState<string>(`tapmask-${job.jobId}.mp4`);
  const [split, setSplit] = useState(50);
  const [layout, setLayout] = useState<"wipe" | "side">("wipe");
  const [msg, setMsg] = useState("");
  const [err, setErr] = useState("");
  const [busy, setBusy] = useState(false);
  const before = useRef<HTMLVideoElement>(null);
  const after = useRef<HTMLVideoElement>(null);

  useEffect(() => {
    let live = true;
    api
      .download(job.jobId)
      .then((d) => {
        if (!live) return;
        setAfterUrl(d.url);
        const f = (d as { filename?: string }).filename;
        if (f) setFilename(f);
      })
      .catch((e) => {
        onError(e);
        if (live) setErr(e instanceof ApiError ? e.message : String(e));
      });
    return () => {
      live = false;
    };
  }, [job.jobId, onError]);

  function playBoth() {
    const a = before.current;
    const b = after.current;
    if (!b) return;
    if (b.paused) {
      if (a) a.currentTime = b.currentTime;
      a?.play().catch(() => undefined);
      b.play().catch(() => undefined);
    } else {
      a?.pause();
      b.pause();
    }
  }

  // Keep the original in step with the result.
  function sync() {
    const a = before.current;
    const b = after.current;
    if (a && b && Math.abs(a.currentTime - b.currentTime) > 0.08) a.currentTime = b.currentTime;
  }

  async function downloadVideo() {
    setErr("");
    try {
      const d = await api.download(job.jobId);
      saveUrl(d.url, (d as { filename?: string }).filename ?? filename);
      setMsg("The download of the video has started.");
    } catch (e) {
      onError(e);
      setErr(e instanceof ApiError ? e.message : String(e));
    }
  }

  async function downloadMasks() {
    setErr("");
    setBusy(true);
    try {
      const res = await fetch(`/api/v1/download/${encodeURIComponent(job.jobId)}/masks`, { headers: { Authorization: `Bearer ${getToken()}` } });
      if (!res.ok) {
        const body = await res.json().catch(() => ({}));
        const why = typeof body.detail === "string" ? body.detail : `HTTP ${res.status}`;
        throw new ApiError(res.status, res.status === 404 ? `No masks to download: ${why}` : why);
      }
      const blob = await res.blob();
      const url = URL.createObjectURL(blob);
      saveUrl(url, `tapmask-masks-${job.jobId}.zip`);
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      setMsg("The masks archive has been downloaded.");
    } catch (e) {
      onError(e);
      setErr(e instanceof ApiError ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  }

  return (
    <section className="card result" aria-labelledby="result-title" data-testid="result">
      <h2 id="result-title">Done — compare and download</h2>
      <div className="row">
        <fieldset className="inline-fieldset">
          <legend className="visually-hidden">Comparison layout</legend>
          <label className={`chip${layout === "wipe" ? " on" : ""}`}>
            <input type="radio" name="layout" checked={layout === "wipe"} onChange={() => setLayout("wipe")} /> Slider
          </label>
          <label className={`chip${layout === "side" ? " on" : ""}`}>
            <input type="radio" name="layout" checked={layout === "side"} onChange={() => setLayout("side")} /> Side by side
          </label>
        </fieldset>
        <button type="button" onClick={playBoth} disabled={!afterUrl}>
          Play / pause both
        </button>
      </div>
      {!beforeSrc ? <p className="hint">The original is not in this browser (it was uploaded from another page), so only the result is shown.</p> : null}
      <div className={`compare ${layout}`} style={{ ["--split" as string]: `${split}%` }}>
        {beforeSrc ? (
          <figure className="before">
            <video ref={before} src={beforeSrc} muted playsInline preload="auto" aria-label="Before: the original video" />
            <figcaption>Before</figcaption>
          </figure>
        ) : null}
        <figure className={`after${beforeSrc ? "" : " alone"}`}>
          {afterUrl ? (
            <video ref={after} src={afterUrl} muted playsInline preload="auto" controls={layout === "side" || !beforeSrc} onTimeUpdate={sync} onSeeked={sync} aria-label="After: the processed video" data-testid="after-video" />
          ) : (
            <div className="no-preview">Loading the result…</div>
          )}
          <figcaption>After</figcaption>
        </figure>
      </div>
      {layout === "wipe" && beforeSrc ? (
        <label className="wipe-label">
          Before ◀ ▶ After
          <input type="range" min={0} max={100} value={split} onChange={(e) => setSplit(Number(e.target.value))} aria-label="Comparison: share of the picture showing the original" aria-valuetext={`${split} % original`} />
        </label>
      ) : null}
      <div className="row downloads">
        <button type="button" className="primary" onClick={downloadVideo}>
          ⬇ Download the video
        </button>
        <button type="button" onClick={downloadMasks} disabled={busy}>
          ⬇ Download the masks (.zip)
        </button>
      </div>
      <p role="status" className="hint" data-testid="download-status">
        {msg}
      </p>
      {err ? (
        <p className="error" role="alert">
          {err}
        </p>
      ) : null}
    </section>
  );
}

function saveUrl(url: string, filename: string) {
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  a.rel = "noopener";
  document.body.appendChild(a);
  a.click();
  a.remove();
}
