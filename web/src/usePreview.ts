// The mask preview of the current clicks: asked for a moment after the last change (debounced),
// a stale request cancelled when the clicks change again.
import { useEffect, useMemo, useState } from "react";
import { api, ApiError, type Box, type Point } from "./api";
import { previewRequest, requestKey, type PreviewState } from "./preview";

export const PREVIEW_DEBOUNCE_MS = 350;

export function useMaskPreview(videoId: string | null, points: Point[], box: Box | null, enabled: boolean): PreviewState {
  const body = useMemo(() => previewRequest(points, box), [points, box]);
  const key = requestKey(videoId ?? "", body);
  const [state, setState] = useState<PreviewState>({ kind: "idle" });

  useEffect(() => {
    if (!videoId || !body || !enabled) {
      setState({ kind: "idle" });
      return;
    }
    const ctl = new AbortController();
    setState({ kind: "loading" });
    const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const timer = window.setTimeout(async () => {
      for (let attempt = 0; ; attempt++) {
        try {
          const result = await api.preview(videoId, body, ctl.signal);
          if (!ctl.signal.aborted) setState({ kind: "ready", result });
          return;
        } catch (e) {
          if (ctl.signal.aborted) return;
          // Still validating (409) or busy (503): the API says when to come back.
          if (e instanceof ApiError && (e.status === 409 || e.status === 503) && attempt < 10) {
            await wait(1000);
            if (ctl.signal.aborted) return;
            continue;
          }
          setState({ kind: "error", message: e instanceof ApiError ? e.message : String(e) });
          return;
        }
      }
    }, PREVIEW_DEBOUNCE_MS);
    return () => {
      window.clearTimeout(timer);
      ctl.abort();
    };
    // `body` is what `key` names: the effect runs again only when the request changes.
  }, [key, enabled]);

  return state;
}
