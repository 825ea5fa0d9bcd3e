// The TapMask REST API as the page uses it. Every call carries the bearer token (when signed
// in) and turns an error answer into an ApiError whose message is a sentence a person can read.
import type { PreviewRequest, PreviewResult } from "./preview";

export const TOKEN_KEY = "tapmask.token";

export class ApiError extends Error {
  constructor(public status: number, message: string, public code?: string) {
    super(message);
  }
}

export interface VideoMetadata {
  container?: string;
  codec?: string;
  width: number;
  height: number;
  fps_num: number;
  fps_den: number;
  frame_count: number;
  duration_s: number;
  rotation?: number;
  has_audio?: boolean;
}

export interface Video {
  videoId: string;
  state: "validating" | "valid" | "rejected" | string;
  reason?: string | null;
  filename?: string | null;
  sizeBytes?: number | null;
  metadata?: VideoMetadata | null;
  sourceUrl?: string | null;
  createdAt?: number | null;
}

export interface JobStatus {
  jobId: string;
  videoId: string;
  state: string;
  stage?: string | null;
  percent: number;
  framesDone?: number;
  framesTotal?: number;
  attempt?: number;
  mode?: string;
  errorCode?: string | null;
  error?: string | null;
  createdAt?: number;
  updatedAt?: number;
  downloadUrl?: string;
  masksUrl?: string | null;
}

export interface Me {
  userId?: string;
  id?: string;
  tier: string;
  region?: string;
  quota?: { limit?: number | null; used?: number; left?: number | null; resetsAt?: string | number | null } | null;
  [k: string]: unknown;
}

export interface Point {
  x: number;
  y: number;
  frame: number;
  label: 0 | 1;
}

export interface Box {
  x0: number;
  y0: number;
  x1: number;
  y1: number;
  frame: number;
}

export interface SegmentRequest {
  videoId: string;
  points: Point[];
  box?: Box | null;
  mode: string;
  options: { blur_kernel: number; margin_px: number; export_masks?: boolean };
}

export const TERMINAL = new Set(["complete", "failed"]);

export function getToken(): string {
  try {
    return localStorage.getItem(TOKEN_KEY) ?? "";
  } catch {
    return "";
  }
}

export function setToken(token: string | null): void {
  try {
    if (token === null) localStorage.removeItem(TOKEN_KEY);
    else localStorage.setItem(TOKEN_KEY, token);
  } catch {
    /* private mode: the token lives for this page only */
  }
}

/** The API's `detail` (a string, or FastAPI's list of field errors) as one sentence. */
export function describeDetail(status: number, body: unknown, fallback: string): string {
  const detail = (body && typeof body === "object" ? (body as Record<string, unknown>).detail : undefined) ?? body;
  if (typeof detail === "string" && detail.trim()) return detail;
  if (Array.isArray(detail)) {
    const parts = detail.map((d) => {
      if (d && typeof d === "object") {
        const e = d as { loc?: unknown[]; msg?: string };
        const where = (e.loc ?? []).filter((p) => p !== "body").join(".");
        return where ? `${where}: ${e.msg ?? "invalid"}` : e.msg ?? "invalid";
      }
      return String(d);
    });
    if (parts.length) return parts.join("; ");
  }
  if (status === 401) return "You are not signed in, or your sign-in has expired. Please sign in again.";
  if (status === 403) return "That belongs to another account.";
  if (status === 404) return "Not found.";
  if (status === 413) return "The file is too large for your plan.";
  if (status === 429) return "Too many requests; please wait a moment and try again.";
  if (status >= 500) return `The server had a problem (HTTP ${status}). Please try again.`;
  return fallback || `HTTP ${status}`;
}

export function authHeaders(): Record<string, string> {
  const t = getToken();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

/** One JSON call. With `signal`, an aborted call rejects with the fetch's AbortError. */
export async function request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
  let resp: Response;
  let text: string;
  try {
    resp = await fetch(path, {
      method,
      headers: { Accept: "application/json", ...(body !== undefined ? { "Content-Type": "application/json" } : {}), ...authHeaders() },
      body: body !== undefined ? JSON.stringify(body) : undefined,
      signal,
    });
    text = await resp.text();
  } catch (e) {
    if (signal?.aborted) throw e;
    throw new ApiError(0, "The server cannot be reached. Check your connection and try again.");
  }
  let parsed: unknown = undefined;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = text;
  }
  if (!resp.ok) {
    const code = parsed && typeof parsed === "object" ? ((parsed as Record<string, unknown>).code as string | undefined) : undefined;
    throw new ApiError(resp.status, describeDetail(resp.status, parsed, resp.statusText), code);
  }
  return parsed as T;
}

/** Upload with XMLHttpRequest so the bytes sent can drive a progress bar. */
export function upload(
  file: File,
  onProgress: (sent: number, total: number) => void,
  signal?: AbortSignal,
): Promise<{ videoId: string; statusUrl: string }> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/v1/upload");
    const t = getToken();
    if (t) xhr.setRequestHeader("Authorization", `Bearer ${t}`);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onload = () => {
      let body: unknown = xhr.responseText;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        /* keep the text */
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body as { videoId: string; statusUrl: string });
      else reject(new ApiError(xhr.status, describeDetail(xhr.status, body, xhr.statusText)));
    };
    xhr.onerror = () => reject(new ApiError(0, "The upload was interrupted: the server cannot be reached."));
    xhr.onabort = () => reject(new ApiError(0, "The upload was cancelled."));
    signal?.addEventListener("abort", () => xhr.abort());
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

export const api = {
  devToken: () => request<{ token?: string; access_token?: string; accessToken?: string }>("POST", "/api/v1/dev/token", {}),
  me: () => request<Me>("GET", "/api/v1/me"),
  video: (id: string) => request<Video>("GET", `/api/v1/videos/${encodeURIComponent(id)}`),
  videos: () => request<unknown>("GET", "/api/v1/videos"),
  jobs: () => request<unknown>("GET", "/api/v1/jobs"),
  preview: (id: string, body: PreviewRequest, signal?: AbortSignal) =>
    request<PreviewResult>("POST", `/api/v1/videos/${encodeURIComponent(id)}/preview`, body, signal),
  segment: (body: SegmentRequest) => request<{ jobId: string; statusUrl: string }>("POST", "/api/v1/segment", body),
  status: (id: string) => request<JobStatus>("GET", `/api/v1/status/${encodeURIComponent(id)}`),
  download: (id: string) => request<{ url: string }>("GET", `/api/v1/download/${encodeURIComponent(id)}`),
  deleteVideo: (id: string) => request<unknown>("DELETE", `/api/v1/video/${encodeURIComponent(id)}`),
};

/** A paginated list answer ({items: [...]}, {jobs: [...]}, or a bare array) as an array. */
export function itemsOf<T>(answer: unknown, ...keys: string[]): T[] {
  if (Array.isArray(answer)) return answer as T[];
  if (answer && typeof answer === "object") {
    for (const k of [...keys, "items", "data", "results"]) {
      const v = (answer as Record<string, unknown>)[k];
      if (Array.isArray(v)) return v as T[];
    }
  }
  return [];
}

/** The SSE URL of a job. The page sends its token in the Authorization header (see sse.ts);
 * `?token=` exists for third-party EventSource clients only. */
export function eventsUrl(jobId: string): string {
  return `/api/v1/events/${encodeURIComponent(jobId)}`;
}
