import { useRef, useState } from "react";
import { ApiError, upload } from "../api";
import { formatBytes } from "../frames";

const ACCEPT = ".mp4,.mov,.avi,.webm,video/mp4,video/quicktime,video/x-msvideo,video/webm";

/** Drag-and-drop or pick a file; uploads it with a progress bar; reports the video id. */
export function Upload({
  maxBytes,
  onUploaded,
  onError,
}: {
  maxBytes?: number | null;
  onUploaded: (file: File, videoId: string) => void;
  onError: (e: unknown) => void;
}) {
  const input = useRef<HTMLInputElement>(null);
  const abort = useRef<AbortController | null>(null);
  const [over, setOver] = useState(false);
  const [sent, setSent] = useState<[number, number] | null>(null);
  const [name, setName] = useState("");
  const [error, setError] = useState("");
  const [done, setDone] = useState(false);

  async function start(file: File) {
    setError("");
    setName(file.name);
    if (file.size === 0) {
      setError(`“${file.name}” is empty (0 bytes).`);
      return;
    }
    if (maxBytes && file.size > maxBytes) {
      setError(`“${file.name}” is ${formatBytes(file.size)}; your plan accepts videos up to ${formatBytes(maxBytes)}.`);
      return;
    }
    abort.current = new AbortController();
    setDone(false);
    setSent([0, file.size]);
    try {
      const res = await upload(file, (a, b) => setSent([a, b]), abort.current.signal);
      // Show the full bar with "Uploaded" for a moment before the page moves on to the
      // player (a fast upload would otherwise never show 100 %).
      setSent([file.size, file.size]);
      setDone(true);
      await new Promise((resolve) => window.setTimeout(resolve, 400));
      onUploaded(file, res.videoId);
    } catch (e) {
      setSent(null);
      onError(e);
      setError(`The upload of “${file.name}” was refused: ${e instanceof ApiError ? e.message : String(e)}`);
    } finally {
      abort.current = null;
      if (input.current) input.current.value = "";
    }
  }

  const busy = sent !== null && !done;
  const pct = sent ? Math.round((100 * sent[0]) / Math.max(1, sent[1])) : 0;
  return (
    <section className="card" aria-labelledby="upload-title">
      <h2 id="upload-title">1. Upload a video</h2>
      <div
        className={`drop${over ? " over" : ""}`}
        onDragOver={(e) => {
          e.preventDefault();
          setOver(true);
        }}
        onDragLeave={() => setOver(false)}
        onDrop={(e) => {
          e.preventDefault();
          setOver(false);
          const f = e.dataTransfer.files?.[0];
          if (f && !busy) start(f);
        }}
        data-testid="dropzone"
      >
        <p>
          <strong>Drop a video here</strong> or
        </p>
        <label className="button primary">
          Choose a file…
          <input
            ref={input}
            className="visually-hidden"
            type="file"
            accept={ACCEPT}
            disabled={busy}
            onChange={(e) => {
              const f = e.target.files?.[0];
              if (f) start(f);
            }}
            aria-describedby="upload-hint"
          />
        </label>
        <p id="upload-hint" className="hint">
          MP4, MOV, AVI or WebM{maxBytes ? `, up to ${formatBytes(maxBytes)}` : ""}. Uploads and results are deleted after 24 hours.
        </p>
      </div>
      {sent ? (
        <div className="progress-row" role="status" aria-live="polite">
          <label htmlFor="upload-progress">
            {done
              ? `Uploaded “${name}” (${formatBytes(sent[1])})`
              : `Uploading “${name}”: ${pct} % (${formatBytes(sent[0])} of ${formatBytes(sent[1])})`}
          </label>
          <progress id="upload-progress" max={100} value={pct} />
          {!done && (
            <button type="button" onClick={() => abort.current?.abort()}>
              Cancel
            </button>
          )}
        </div>
      ) : null}
      {error ? (
        <p className="error" role="alert" data-testid="upload-error">
          {error}
        </p>
      ) : null}
    </section>
  );
}
