import { useCallback, useEffect, useRef, useState } from "react";
import { api, ApiError, TERMINAL, type Box, type JobStatus, type Me, type Point, type Video } from "../api";
import { formatBytes, fpsOf } from "../frames";
import { Upload } from "./Upload";
import { Player } from "./Player";
import { Options, type EffectOptions } from "./Options";
import { ProgressView, useJobStatus } from "./Progress";
import { Result } from "./Result";
import { useMaskPreview } from "../usePreview";

/** The main journey: upload → click the object → choose the effect → progress → result. */
export function Workspace({
  me,
  openJobId,
  onError,
  onJobFinished,
  onNew,
}: {
  me: Me | null;
  openJobId: string | null;
  onError: (e: unknown) => void;
  onJobFinished: () => void;
  onNew: () => void;
}) {
  const [file, setFile] = useState<File | null>(null);
  const [src, setSrc] = useState<string | null>(null);
  const [videoId, setVideoId] = useState<string | null>(null);
  const [video, setVideo] = useState<Video | null>(null);
  const [checkError, setCheckError] = useState("");
  const [frame, setFrame] = useState(0);
  const [points, setPoints] = useState<Point[]>([]);
  const [box, setBox] = useState<Box | null>(null);
  const [opts, setOpts] = useState<EffectOptions>({ mode: "blur", blurKernel: 99, marginPx: 8 });
  const [jobId, setJobId] = useState<string | null>(openJobId);
  const [submitError, setSubmitError] = useState("");
  const [submitting, setSubmitting] = useState(false);
  const [status, via] = useJobStatus(jobId, onError);
  const [showPreview, setShowPreview] = useState(true);
  const finished = useRef<string | null>(null);

  // The object URL of the local file plays in the player and as "before".
  useEffect(() => {
    if (!file) return;
    const url = URL.createObjectURL(file);
    setSrc(url);
    return () => URL.revokeObjectURL(url);
  }, [file]);

  // A job opened from the dashboard: find its video.
  useEffect(() => {
    if (!openJobId) return;
    api
      .status(openJobId)
      .then((s) => setVideoId(s.videoId))
      .catch((e) => {
        onError(e);
        setCheckError(e instanceof ApiError ? e.message : String(e));
      });
  }, [openJobId, onError]);

  // Wait for validation to decide.
  useEffect(() => {
    if (!videoId) return;
    let stop = false;
    let timer = 0;
    const started = Date.now();
    const check = async () => {
      try {
        const v = await api.video(videoId);
        if (stop) return;
        setVideo(v);
        if (v.sourceUrl && !file) setSrc(v.sourceUrl);
        if (v.state === "validating") {
          if (Date.now() - started > 180_000) setCheckError("The video is taking unusually long to be checked. Please try again later.");
          else timer = window.setTimeout(check, 700);
        }
      } catch (e) {
        onError(e);
        if (!stop) setCheckError(e instanceof ApiError ? e.message : String(e));
      }
    };
    check();
    return () => {
      stop = true;
      window.clearTimeout(timer);
    };
  }, [videoId, file, onError]);

  useEffect(() => {
    if (status && jobId && TERMINAL.has(status.state) && finished.current !== jobId) {
      finished.current = jobId;
      onJobFinished();
    }
  }, [status, jobId, onJobFinished]);

  const submit = useCallback(async () => {
    if (!videoId) return;
    setSubmitError("");
    if (!points.some((p) => p.label === 1)) {
      setSubmitError("Click on the object first: at least one point on it (a plain click) is needed.");
      return;
    }
    setSubmitting(true);
    const body = {
      videoId,
      points,
      box,
      mode: opts.mode,
      options: { blur_kernel: opts.blurKernel, margin_px: opts.marginPx, export_masks: true },
    };
    try {
      for (let i = 0; ; i++) {
        try {
          const res = await api.segment(body);
          setJobId(res.jobId);
          break;
        } catch (e) {
          if (e instanceof ApiError && e.status === 409 && i < 30) await new Promise((r) => setTimeout(r, 1000));
          else throw e;
        }
      }
    } catch (e) {
      onError(e);
      setSubmitError(e instanceof ApiError ? (e.status === 402 ? `Quota reached: ${e.message}` : e.message) : String(e));
    } finally {
      setSubmitting(false);
    }
  }, [videoId, points, box, opts, onError]);

  function reset() {
    setFile(null);
    setSrc(null);
    setVideoId(null);
    setVideo(null);
    setCheckError("");
    setPoints([]);
    setBox(null);
    setFrame(0);
    setJobId(null);
    setSubmitError("");
    onNew();
  }

  const meta = video?.state === "valid" ? video.metadata : null;
  const jobState = status?.state;
  const preview = useMaskPreview(meta && !jobId ? videoId : null, points, box, showPreview);

  if (!videoId) {
    return (
      <>
        <Upload
          maxBytes={typeof me?.maxUploadBytes === "number" ? (me.maxUploadBytes as number) : null}
          onError={onError}
          onUploaded={(f, id) => {
            setFile(f);
            setVideoId(id);
          }}
        />
        <HowItWorks />
      </>
    );
  }

  return (
    <>
      <section className="card" aria-labelledby="video-title">
        <div className="row spread">
          <h2 id="video-title">{jobId ? "Your video" : "2. Click the object"}</h2>
          <button type="button" onClick={reset}>
            New video
          </button>
        </div>
        <VideoSummary video={video} file={file} />
        {checkError ? <p className="error" role="alert">{checkError}</p> : null}
        {video?.state === "validating" ? (
          <p role="status" className="notice" data-testid="validating">
            Checking the video…
          </p>
        ) : null}
        {video?.state === "rejected" ? (
          <p role="alert" className="error" data-testid="rejected">
            The video was rejected: {video.reason ?? "it cannot be read"}.
          </p>
        ) : null}
        {meta && !jobId ? (
          <Player
            src={src}
            meta={meta}
            frame={frame}
            setFrame={setFrame}
            points={points}
            setPoints={setPoints}
            box={box}
            setBox={setBox}
            preview={preview}
            showPreview={showPreview}
            setShowPreview={setShowPreview}
          />
        ) : null}
      </section>

      {meta && !jobId ? (
        <section className="card" aria-labelledby="opts-title">
          <h2 id="opts-title">3. Choose the effect</h2>
          <Options value={opts} onChange={setOpts} />
          <div className="row">
            <button type="button" className="primary big" onClick={submit} disabled={submitting} data-testid="start">
              {submitting ? "Starting…" : `Start — ${labelOf(opts.mode)} in every frame`}
            </button>
          </div>
          {submitError ? (
            <p className="error" role="alert" data-testid="submit-error">
              {submitError}
            </p>
          ) : null}
        </section>
      ) : null}

      {jobId ? (
        <section className="card" aria-labelledby="progress-title">
          <h2 id="progress-title">4. Progress</h2>
          <ProgressView status={status} via={via} />
          {jobState === "failed" ? (
            <div className="error" role="alert" data-testid="job-failed">
              <p>
                <strong>The job failed:</strong> {status?.error ?? "no reason was given"}
                {status?.errorCode ? <span className="code"> ({status.errorCode})</span> : null}
              </p>
              {meta ? (
                <button type="button" onClick={() => setJobId(null)}>
                  Change the points or settings and try again
                </button>
              ) : null}
            </div>
          ) : null}
          {jobState === "deleted" ? <p className="notice">This job was deleted.</p> : null}
          {jobState === "complete" && meta ? (
            <div className="row">
              <button type="button" onClick={() => setJobId(null)}>
                Run again with other settings
              </button>
            </div>
          ) : null}
        </section>
      ) : null}

      {jobState === "complete" && status ? <Result job={status as JobStatus} beforeSrc={src} onError={onError} /> : null}
    </>
  );
}

function labelOf(mode: string): string {
  return { blur: "blur it", pixelate: "pixelate it", fill: "cover it", erase: "erase it" }[mode] ?? mode;
}

function VideoSummary({ video, file }: { video: Video | null; file: File | null }) {
  const m = video?.metadata;
  const name = file?.name ?? video?.filename ?? "video";
  return (
    <p className="summary" data-testid="video-summary">
      <strong>{name}</strong>
      {m ? ` · ${m.width}×${m.height} · ${fpsOf(m).toFixed(fpsOf(m) % 1 ? 2 : 0)} fps · ${m.frame_count} frames · ${m.duration_s.toFixed(1)} s` : ""}
      {video?.sizeBytes ? ` · ${formatBytes(video.sizeBytes)}` : ""}
    </p>
  );
}

function HowItWorks() {
  return (
    <section className="card how" aria-labelledby="how-title">
      <h2 id="how-title">How it works</h2>
      <ol>
        <li>Upload a video (MP4, MOV, AVI or WebM).</li>
        <li>Find a frame where the object shows and click it. Shift-click spots that are not the object if the guess needs help.</li>
        <li>Choose privacy blur, pixelate or erase, then start: TapMask follows the object through every frame, before and after the one you clicked.</li>
        <li>Compare before and after, then download the video and its per-frame masks.</li>
      </ol>
    </section>
  );
}
