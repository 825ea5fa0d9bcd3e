import { useCallback, useEffect, useState } from "react";
import { api, ApiError, itemsOf, type JobStatus, type Me, type Video } from "../api";
import { formatBytes } from "../frames";
import { MODES } from "./Options";
import { stageName } from "./Progress";

function when(ms?: number | null): string {
  if (!ms) return "—";
  return new Date(ms).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

/** Tier, quota, job history and videos (with deletion). */
export function Dashboard({ me, onError, onChanged, onOpenJob }: { me: Me | null; onError: (e: unknown) => void; onChanged: () => void; onOpenJob: (id: string) => void }) {
  const [jobs, setJobs] = useState<JobStatus[] | null>(null);
  const [videos, setVideos] = useState<Video[] | null>(null);
  const [err, setErr] = useState("");
  const [confirm, setConfirm] = useState<string | null>(null);
  const [msg, setMsg] = useState("");

  const load = useCallback(async () => {
    setErr("");
    try {
      const [j, v] = await Promise.all([api.jobs(), api.videos()]);
      setJobs(itemsOf<JobStatus>(j, "jobs"));
      setVideos(itemsOf<Video>(v, "videos"));
    } catch (e) {
      onError(e);
      setErr(e instanceof ApiError ? e.message : String(e));
    }
  }, [onError]);

  useEffect(() => {
    load();
  }, [load]);

  async function remove(id: string) {
    setConfirm(null);
    try {
      await api.deleteVideo(id);
      setMsg("The video, its results and its masks were deleted.");
      onChanged();
      await load();
    } catch (e) {
      onError(e);
      setErr(e instanceof ApiError ? e.message : String(e));
    }
  }

  const q = me?.quota;
  const names = new Map((videos ?? []).map((v) => [v.videoId, v.filename ?? v.videoId.slice(0, 8)]));
  return (
    <>
      <section className="card" aria-labelledby="acct-title">
        <h2 id="acct-title">Your account</h2>
        {me ? (
          <dl className="stats" data-testid="account">
            <div>
              <dt>Plan</dt>
              <dd data-testid="tier">{me.tier === "pro" ? "Pro" : "Free"}</dd>
            </div>
            <div>
              <dt>Jobs this month</dt>
              <dd data-testid="quota-used">{q?.used ?? 0}</dd>
            </div>
            <div>
              <dt>Jobs left</dt>
              <dd data-testid="quota-left">{q?.limit == null ? "Unlimited" : `${q.left ?? Math.max(0, q.limit - (q.used ?? 0))} of ${q.limit}`}</dd>
            </div>
            {q?.resetsAt ? (
              <div>
                <dt>Quota resets</dt>
                <dd>{typeof q.resetsAt === "number" ? when(q.resetsAt) : new Date(q.resetsAt).toLocaleDateString(undefined, { dateStyle: "medium" })}</dd>
              </div>
            ) : null}
            {typeof me.maxUploadBytes === "number" ? (
              <div>
                <dt>Largest upload</dt>
                <dd>{formatBytes(me.maxUploadBytes as number)}</dd>
              </div>
            ) : null}
          </dl>
        ) : (
          <p className="hint">Loading…</p>
        )}
        {q?.limit != null && q.limit > 0 ? (
          <div className="progress-row">
            <label htmlFor="quota-bar">Quota used</label>
            <progress id="quota-bar" max={q.limit} value={Math.min(q.limit, q.used ?? 0)} />
          </div>
        ) : null}
      </section>

      <section className="card" aria-labelledby="jobs-title">
        <div className="row spread">
          <h2 id="jobs-title">Job history</h2>
          <button type="button" onClick={load}>
            Refresh
          </button>
        </div>
        {err ? <p className="error" role="alert">{err}</p> : null}
        {jobs === null ? (
          <p className="hint">Loading…</p>
        ) : jobs.length === 0 ? (
          <p className="hint">No jobs yet.</p>
        ) : (
          <div className="table-wrap">
            <table data-testid="jobs-table">
              <caption className="visually-hidden">Your jobs, newest first</caption>
              <thead>
                <tr>
                  <th scope="col">Started</th>
                  <th scope="col">Video</th>
                  <th scope="col">Effect</th>
                  <th scope="col">State</th>
                  <th scope="col">
                    <span className="visually-hidden">Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {jobs.map((j) => (
                  <tr key={j.jobId} data-testid="job-row" data-state={j.state}>
                    <td>{when(j.createdAt)}</td>
                    <td className="name">{names.get(j.videoId) ?? j.videoId.slice(0, 8)}</td>
                    <td>{MODES.find((m) => m.id === j.mode)?.name ?? j.mode}</td>
                    <td>
                      <span className={`badge s-${j.state}`}>{stageName(j.state)}</span>
                      {j.state !== "complete" && j.state !== "failed" ? ` ${Math.round(j.percent ?? 0)} %` : ""}
                      {j.state === "failed" && j.error ? <div className="why">{j.error}</div> : null}
                    </td>
                    <td>
                      <button type="button" className="small" onClick={() => onOpenJob(j.jobId)} aria-label={`Open the job on ${names.get(j.videoId) ?? "this video"}`}>
                        Open
                      </button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </section>

      <section className="card" aria-labelledby="videos-title">
        <h2 id="videos-title">Your videos</h2>
        <p role="status" className="notice-inline" data-testid="dashboard-status">
          {msg}
        </p>
        {videos === null ? (
          <p className="hint">Loading…</p>
        ) : videos.length === 0 ? (
          <p className="hint">No videos. Uploads are deleted after 24 hours.</p>
        ) : (
          <ul className="videos" data-testid="videos">
            {videos.map((v) => (
              <li key={v.videoId} data-testid="video-row">
                <div>
                  <strong className="name">{v.filename ?? v.videoId}</strong>
                  <div className="hint">
                    {v.state === "rejected" ? `rejected: ${v.reason}` : v.state} · {formatBytes(v.sizeBytes)} · uploaded {when((v as { uploadedAt?: number }).uploadedAt)}
                  </div>
                </div>
                {confirm === v.videoId ? (
                  <span className="row">
                    <button type="button" className="danger" onClick={() => remove(v.videoId)}>
                      Yes, delete everything
                    </button>
                    <button type="button" onClick={() => setConfirm(null)}>
                      Keep it
                    </button>
                  </span>
                ) : (
                  <button type="button" className="small" onClick={() => setConfirm(v.videoId)} aria-label={`Delete ${v.filename ?? "the video"} and all its results`}>
                    Delete
                  </button>
                )}
              </li>
            ))}
          </ul>
        )}
      </section>
    </>
  );
}
