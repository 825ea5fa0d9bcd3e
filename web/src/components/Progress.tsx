import { useEffect, useRef, useState } from "react";
import { api, eventsUrl, TERMINAL, type JobStatus } from "../api";

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
    let es: EventSource | null = null;
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
    if (typeof EventSource !== "undefined") {
      es = new EventSource(eventsUrl(jobId));
      setVia("sse");
      es.addEventListener("status", (e) => {
        try {
          take(JSON.parse((e as MessageEvent).data));
        } catch {
          /* ignore a malformed message */
        }
      });
      es.addEventListener("end", () => es?.close());
      es.addEventListener("deleted", () => {
        es?.close();
        setSt((s) => (s ? { ...s, state: "deleted" } : s));
      });
      es.onerror = () => {
        // The stream closed or never opened: fall back to polling unless we are done.
        es?.close();
        const cur = last as JobStatus | null;
        if (!cur || !TERMINAL.has(cur.state)) startPolling();
      };
    } else startPolling();
    return () => {
      stopped = true;
      es?.close();
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
