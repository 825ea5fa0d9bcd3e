import { useEffect, useRef, useState } from "react";
import { api, authHeaders, eventsUrl, TERMINAL, type JobStatus } from "../api";
import { followSse } from "../sse";

export const STAGES: { id: string; name: string }[] = [
  { id: "queued", name: "Queued" },
  { id: "validating", name: "Checking the request" },
  { id: "extracting", name: "Reading the video" },
  { id: "tracking", name: "Tracking the object" },
  { id: "processing", name: "Applying the effect" },
  { id: "encoding", name: "Encoding" },
  { id: "complete", name: "Done" },
];

export function stageName(state: string): string {
  if (state === "failed") return "Failed";
  if (state === "interrupted") return "Interrupted — queued again";
  if (state === "deleted") return "Deleted";
  return STAGES.find((s) => s.id === state)?.name ?? state;
}

/** Follows a job live: Server-Sent Events first, polling every 2 s when SSE is unavailable. */
export function useJobStatus(jobId: string | null, onError: (e: unknown) => void): [JobStatus | null, "sse" | "poll" | ""] {
  const [st, setSt] = useState<JobStatus | null>(null);
  const [via, setVia] = useState<"sse" | "poll" | "">("");
  const errRef = useRef(onError);
  errRef.current = onError;

  useEffect(() => {
    if (!jobId) return;
    let stopped = false;
    const abort = new AbortController();
    let timer = 0;
    let last: JobStatus | null = null;
    const take = (s: JobStatus) => {
      last = s;
      setSt(s);
    };
    const poll = async () => {
      if (stopped) return;
      try {
        const s = await api.status(jobId);
        take(s);
        if (TERMINAL.has(s.state)) return;
      } catch (e) {
        errRef.current(e);
      }
      if (!stopped) timer = window.setTimeout(poll, 2000);
    };
    const startPolling = () => {
      if (stopped || timer) return;
      setVia("poll");
      poll();
    };
    if (typeof ReadableStream !== "undefined" && typeof TextDecoderStream !== "undefined") {
      // Live progress over SSE, the token in a header (never in the URL).
      setVia("sse");
      followSse(eventsUrl(jobId), authHeaders(), abort.signal, (m) => {
        if (m.event === "status") {
          try {
            take(JSON.parse(m.data));
          } catch {
            /* ignore a malformed message */
          }
        } else if (m.event === "deleted") {
          setSt((s) => (s ? { ...s, state: "deleted" } : s));
          return false;
        } else if (m.event === "end") return false;
      })
        .then(() => {
          // The stream ended: fall back to polling unless the job is done.
          const cur = last as JobStatus | null;
          if (!stopped && (!cur || !TERMINAL.has(cur.state)) && cur?.state !== "deleted") startPolling();
        })
        .catch(() => {
          const cur = last as JobStatus | null;
          if (!stopped && (!cur || !TERMINAL.has(cur.state))) startPolling();
        });
    } else startPolling();
    return () => {
      stopped = true;
      abort.abort();
      window.clearTimeout(timer);
    };
  }, [jobId]);
  return [st, via];
}

export function ProgressView({ status, via }: { status: JobStatus | null; via: string }) {
  const state = status?.state ?? "queued";
  const cur = STAGES.findIndex((s) => s.id === state);
  const pct = status ? Math.max(0, Math.min(100, status.percent ?? 0)) : 0;
  return (
    <div className="progress" data-testid="job-progress" data-state={state}>
      <ol className="stages" aria-label="Stages">
        {STAGES.map((s, i) => {
          const done = state === "complete" || (cur >= 0 && i < cur);
          const now = i === cur && state !== "complete";
          return (
            <li key={s.id} className={done ? "done" : now ? "now" : ""} aria-current={now ? "step" : undefined}>
              <span aria-hidden="true">{done ? "✓" : now ? "●" : "○"}</span> {s.name}
            </li>
          );
        })}
      </ol>
      <div role="status" aria-live="polite" className="progress-row">
        <label htmlFor="job-progress-bar">
          <strong data-testid="job-state">{stageName(state)}</strong>
          {status && state !== "failed" ? ` · ${pct.toFixed(0)} %` : ""}
          {status?.framesTotal ? ` · frame ${status.framesDone ?? 0} of ${status.framesTotal}` : ""}
          {status && (status.attempt ?? 1) > 1 ? ` · attempt ${status.attempt}` : ""}
        </label>
        <progress id="job-progress-bar" max={100} value={state === "complete" ? 100 : pct} />
      </div>
      {state === "interrupted" ? <p className="notice">The machine running this job was reclaimed; the job has been queued again and will resume on another one.</p> : null}
      <p className="hint">Live updates by {via === "sse" ? "server-sent events" : "polling every 2 seconds"}.</p>
    </div>
  );
}
