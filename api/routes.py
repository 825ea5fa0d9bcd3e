"""The REST routes under /api/v1 (api/README.md lists them with their shapes)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials

from api.auth import User, authenticate, bearer, current_user, mint_token
from api.guards import Idempotency, check_rate, fingerprint
from api.masks import list_masks, zip_stream
from api.models import ClicksIn, DevTokenIn, SegmentIn
from api.view import VIDEO_DELETED, month_of
from gpu_consumers.engine.prompts import display_size
from producers.upload import UploadRejected, publish_uploaded, stream_multipart_to_s3
from schemas.topics import AUDIT, JOB_STATUS, SEGMENT_REQUESTED
from tapmask.events import envelope, now_ms
from tapmask.storage import delete_prefix

router = APIRouter()
ID_CHARS = set("0123456789abcdef")
TERMINAL = ("complete", "failed")
RUNNING_STAGES = ("validating", "extracting", "tracking", "processing", "encoding")
JSON_MULTIPART_SLACK = 64 * 1024  # multipart headers and boundaries around the file
IdemHeader = Header(default=None, alias="Idempotency-Key", max_length=128,
                    description="retry-safe: the same key (same user) replays the first answer for 24 h")


def _valid_id(value: str) -> bool:
    return 8 <= len(value) <= 64 and set(value) <= ID_CHARS


# ---- who is calling ----------------------------------------------------------------------
async def upload_user(request: Request, user: User = Depends(current_user)) -> User:
    """The caller of an upload, also counted against the upload limit."""
    await check_rate(request.app.state.redis, user.id, "upload", request.app.state.settings.upload_rate_limit_per_minute)
    return user


async def sse_user(request: Request, _cred: HTTPAuthorizationCredentials | None = Depends(bearer),
                   token: str | None = Query(default=None, description="the JWT, for EventSource (cannot send headers)")) -> User:
    """Like ``current_user``, but the token may also come as ``?token=``."""
    user = authenticate(request, allow_query=True)
    await check_rate(request.app.state.redis, user.id, "api", request.app.state.settings.rate_limit_per_minute)
    return user


def _in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return asyncio.to_thread(fn, *args, **kwargs)


def _audit(request: Request, user: User, action: str, rtype: str, rid: str, detail: str | None = None) -> tuple[str, str, dict[str, Any]]:
    return (AUDIT, user.id, envelope(request.state.request_id) | {
        "user_id": user.id, "action": action, "resource_type": rtype, "resource_id": rid, "detail": detail})


# ---- health --------------------------------------------------------------------------------
@router.get("/healthz", tags=["health"])
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"])
def readyz(request: Request, response: Response) -> dict[str, Any]:
    """Readiness: the status view has caught up with the status topic."""
    view = request.app.state.view
    if not view.ready:
        response.status_code = 503
    return {"ready": view.ready, "jobs": len(view.jobs), "videos": len(view.videos)}


# ---- accounts ------------------------------------------------------------------------------
@router.post("/api/v1/dev/token", tags=["accounts"])
def dev_token(request: Request, body: DevTokenIn | None = None) -> dict[str, Any]:
    """Development sign-in: mint a token. Only when TAPMASK_DEV_MODE=true; 404 otherwise."""
    s = request.app.state.settings
    if not s.dev_mode:
        raise HTTPException(status_code=404, detail="Not Found")
    body = body or DevTokenIn()
    token = mint_token(s, body.user, body.tier, body.region)
    return {"token": token, "tokenType": "Bearer", "expiresIn": s.jwt_ttl_s,
            "user": {"userId": body.user, "tier": body.tier, "region": body.region}}


def _next_month(now: datetime) -> datetime:
    return datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=timezone.utc)


def _quota(request: Request, user: User) -> dict[str, Any]:
    s = request.app.state.settings
    now = datetime.now(timezone.utc)
    used = request.app.state.view.jobs_used(user.id, now.strftime("%Y-%m"))
    limit = None if user.tier == "pro" else s.free_jobs_per_month
    return {"limit": limit, "used": used, "left": None if limit is None else max(0, limit - used),
            "resetsAt": _next_month(now).strftime("%Y-%m-%dT%H:%M:%SZ")}


def _max_upload(request: Request, user: User) -> int:
    s = request.app.state.settings
    tier_limit = s.pro_max_upload_bytes if user.tier == "pro" else s.free_max_upload_bytes
    return min(tier_limit, s.max_upload_bytes)


@router.get("/api/v1/me", tags=["accounts"])
async def me(request: Request, user: User = Depends(current_user)) -> dict[str, Any]:
    """The caller: tier, region, quota used and left this month, reset date, upload limit."""
    return {"userId": user.id, "tier": user.tier, "region": user.region, "quota": _quota(request, user),
            "maxUploadBytes": _max_upload(request, user)}


# ---- videos --------------------------------------------------------------------------------
@router.post("/api/v1/upload", status_code=201, tags=["videos"])
async def upload(request: Request, user: User = Depends(upload_user), idempotency_key: str | None = IdemHeader) -> Any:
    """Upload a video (multipart/form-data, field ``file``), streamed to S3."""
    s = request.app.state.settings
    limit = _max_upload(request, user)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + JSON_MULTIPART_SLACK:
        raise HTTPException(status_code=413, detail=f"file is larger than the {limit // (1024 * 1024)} MB limit of the {user.tier} tier")
    idem: Idempotency = request.app.state.idempotency
    claim = await idem.claim(user.id, "upload", idempotency_key, None)
    if claim.replay:
        return JSONResponse(status_code=claim.replay["status"], content=claim.replay["body"], headers={"Idempotent-Replayed": "true"})
    try:
        video_id = uuid.uuid4().hex
        key = f"uploads/{video_id}/source"
        try:
            stored = await stream_multipart_to_s3(
                request.stream(), request.headers.get("content-type", ""), request.app.state.s3, s.s3_bucket, key, limit)
        except UploadRejected as exc:
            detail = exc.reason + (f" of the {user.tier} tier" if exc.status == 413 else "")
            raise HTTPException(status_code=exc.status, detail=detail) from exc
        event = await _in_thread(
            publish_uploaded, request.app.state.producer, video_id=video_id, owner_id=user.id, stored=stored,
            bucket=s.s3_bucket, correlation_id=request.state.request_id, region=user.region,
            extra=[_audit(request, user, "upload", "video", video_id, f"{stored.size_bytes} bytes, sha256 {stored.sha256}")])
        request.app.state.view.note_uploaded(event)
        body = {"videoId": video_id, "statusUrl": f"/api/v1/videos/{video_id}", "container": stored.container,
                "sizeBytes": stored.size_bytes, "sha256": stored.sha256}
    except BaseException:
        await idem.release(claim)
        raise
    await idem.finish(claim, 201, body)
    return body


def _own_video(request: Request, video_id: str, user: User):  # type: ignore[no-untyped-def]
    video = request.app.state.view.video(video_id) if _valid_id(video_id) else None
    if video is None:
        raise HTTPException(status_code=404, detail=f"unknown video id {video_id[:64]!r}")
    if video.owner_id != user.id:
        raise HTTPException(status_code=403, detail="this video belongs to another user")
    return video


def _video_body(request: Request, v: Any) -> dict[str, Any]:
    return {"videoId": v.video_id, "state": v.state, "reason": v.reason, "filename": v.filename, "sizeBytes": v.size_bytes,
            "sha256": v.sha256, "container": v.container, "uploadedAt": v.uploaded_at, "metadata": v.metadata,
            "jobs": request.app.state.view.job_ids_of_video(v.video_id)}


def _page(items: list[Any], limit: int, offset: int) -> dict[str, Any]:
    page = items[offset : offset + limit]
    nxt = offset + limit if offset + limit < len(items) else None
    return {"items": page, "total": len(items), "limit": limit, "offset": offset, "nextOffset": nxt}


@router.get("/api/v1/videos", tags=["videos"])
async def list_videos(request: Request, user: User = Depends(current_user), limit: int = Query(20, ge=1, le=100),
                offset: int = Query(0, ge=0, le=1_000_000)) -> dict[str, Any]:
    """The caller's videos, newest first, paginated."""
    vids = request.app.state.view.videos_of(user.id)
    page = _page(vids, limit, offset)
    page["items"] = [_video_body(request, v) for v in page["items"]]
    return page


@router.get("/api/v1/videos/{video_id}", tags=["videos"])
async def video_status(video_id: str, request: Request, user: User = Depends(current_user)) -> dict[str, Any]:
    """A video's validation state and probed metadata."""
    return _video_body(request, _own_video(request, video_id, user))


def _delete_prefixes(s3: Any, bucket: str, prefixes: list[str]) -> int:
    return sum(delete_prefix(s3, bucket, prefix) for prefix in prefixes)


@router.delete("/api/v1/video/{video_id}", tags=["videos"])
@router.delete("/api/v1/videos/{video_id}", tags=["videos"], include_in_schema=False)
async def delete_video(video_id: str, request: Request, user: User = Depends(current_user)) -> dict[str, Any]:
    """Delete a video and all its data: upload, outputs and masks in S3; its jobs are tombstoned."""
    s = request.app.state.settings
    view = request.app.state.view
    video = _own_video(request, video_id, user)
    job_ids = view.job_ids_of_video(video_id)
    prefixes = [f"uploads/{video_id}/"] + [f"outputs/{j}/" for j in job_ids]
    removed = await _in_thread(_delete_prefixes, request.app.state.s3, video.s3_bucket or s.s3_bucket, prefixes)
    if video.s3_key and not video.s3_key.startswith(f"uploads/{video_id}/"):
        await _in_thread(request.app.state.s3.delete_object, Bucket=video.s3_bucket, Key=video.s3_key)
        removed += 1
    deleted = envelope(request.state.request_id) | {
        "video_id": video_id, "owner_id": user.id, "job_ids": job_ids, "objects_deleted": removed}
    items: list[tuple[str, str, dict[str, Any] | None]] = [(JOB_STATUS, j, None) for j in job_ids]
    items += [(VIDEO_DELETED, video_id, deleted),
              _audit(request, user, "delete", "video", video_id, f"{len(job_ids)} jobs, {removed} objects")]
    await _in_thread(request.app.state.producer.publish_many, items)
    view.note_deleted(deleted)
    return {"videoId": video_id, "deleted": True, "jobIds": job_ids, "objectsDeleted": removed}


# ---- jobs ----------------------------------------------------------------------------------
@router.post("/api/v1/segment", status_code=202, tags=["jobs"])
async def segment(body: SegmentIn, request: Request, user: User = Depends(current_user),
                  idempotency_key: str | None = IdemHeader) -> Any:
    """Ask for the clicked object to be masked in every frame."""
    idem: Idempotency = request.app.state.idempotency
    fp = fingerprint(body.model_dump(by_alias=True))
    claim = await idem.claim(user.id, "segment", idempotency_key, fp)
    if claim.replay:
        return JSONResponse(status_code=claim.replay["status"], content=claim.replay["body"], headers={"Idempotent-Replayed": "true"})
    try:
        out = await _segment(body, request, user)
    except BaseException:
        await idem.release(claim)
        raise
    await idem.finish(claim, 202, out, fp)
    return JSONResponse(status_code=202, content=out)


def frame_size_for_clicks(meta: dict[str, Any]) -> tuple[int, int]:
    """The (width, height) that clicks are checked against: the video's *display* size, as a
    player shows it (stored width and height swapped for a rotation of 90 or 270 degrees).
    Points and boxes are in display pixels (api/README.md, "Coordinates"), which is what the
    validation agent and the engine's `Prompt` take."""
    return display_size(int(meta.get("width") or 0), int(meta.get("height") or 0), int(meta.get("rotation") or 0))


def clicks_problem(body: ClicksIn, meta: dict[str, Any]) -> str | None:
    """Why the clicks and box of `body` do not fit the video `meta` describes (a point or box
    outside the display frame, a frame past the end), or None. `/segment` and `/preview`
    answer it with a 422."""
    (w, h), n = frame_size_for_clicks(meta), meta.get("frame_count", 0)
    for p in body.all_points():
        if p.x >= w or p.y >= h:
            return f"point ({p.x:g}, {p.y:g}) is outside the {w}x{h} frame"
        if p.frame >= n:
            return f"frame {p.frame} is past the end of the video ({n} frames)"
    if body.box is not None:
        b = body.box
        if not (0 <= b.x0 < b.x1 <= w and 0 <= b.y0 < b.y1 <= h):
            return f"box ({b.x0:g},{b.y0:g})-({b.x1:g},{b.y1:g}) must be a non-empty box inside the {w}x{h} frame"
        if b.frame >= n:
            return f"box frame {b.frame} is past the end of the video ({n} frames)"
    return None


def _check_against_metadata(body: ClicksIn, meta: dict[str, Any]) -> None:
    problem = clicks_problem(body, meta)
    if problem is not None:
        raise HTTPException(status_code=422, detail=problem)


async def _segment(body: SegmentIn, request: Request, user: User) -> dict[str, Any]:
    video = _own_video(request, body.video_id, user)
    if video.state == "validating":
        raise HTTPException(status_code=409, detail="the video is still being validated; retry in a second", headers={"Retry-After": "1"})
    if video.state == "rejected":
        raise HTTPException(status_code=422, detail=f"the video was rejected: {video.reason}")
    meta = video.metadata or {}
    _check_against_metadata(body, meta)
    if user.tier == "free":
        if max(meta.get("width", 0), meta.get("height", 0)) > 2560:
            raise HTTPException(status_code=402, detail="4K videos are a Pro feature; upgrade to Pro or upload at most 2560 px wide")
        q = _quota(request, user)
        if q["left"] == 0:
            raise HTTPException(status_code=402, detail=f"quota_exceeded: the free tier allows {q['limit']} jobs a month and you "
                                f"have used {q['used']}; it resets at {q['resetsAt']}, or upgrade to Pro")
    job_id = uuid.uuid4().hex
    points = body.all_points()
    event = envelope(request.state.request_id) | {
        "job_id": job_id, "video_id": video.video_id, "owner_id": user.id, "tier": user.tier,
        "points": [p.model_dump() for p in points], "box": body.box.model_dump() if body.box else None,
        "mode": body.mode, "options": body.options.model_dump(),
    }
    await _in_thread(request.app.state.producer.publish_many, [
        (SEGMENT_REQUESTED, job_id, event), _audit(request, user, "segment", "video", video.video_id, f"job {job_id}")])
    now = now_ms()
    request.app.state.view.note_pending_job(
        {"job_id": job_id, "video_id": video.video_id, "owner_id": user.id, "state": "queued", "percent": 0.0,
         "frames_done": 0, "frames_total": 0, "attempt": 1, "mode": body.mode, "error_code": None, "error": None,
         "output_bucket": None, "output_key": None, "masks_key": None, "created_at": now, "updated_at": now})
    return {"jobId": job_id, "statusUrl": f"/api/v1/status/{job_id}"}


def _own_job(request: Request, job_id: str, user: User) -> dict[str, Any]:
    job = request.app.state.view.job(job_id) if _valid_id(job_id) else None
    if job is None:
        raise HTTPException(status_code=404, detail=f"unknown job id {job_id[:64]!r}")
    if job["owner_id"] != user.id:
        raise HTTPException(status_code=403, detail="this job belongs to another user")
    return job


def status_body(job: dict[str, Any]) -> dict[str, Any]:
    """The public shape of a job snapshot."""
    state = job["state"]
    out = {
        "jobId": job["job_id"], "videoId": job["video_id"], "state": state,
        "stage": state if state in RUNNING_STAGES else None,
        "percent": round(float(job["percent"]), 1), "progress": round(float(job["percent"]) / 100.0, 4),
        "framesDone": job["frames_done"], "framesTotal": job["frames_total"], "attempt": job["attempt"],
        "mode": job["mode"], "errorCode": job["error_code"], "error": job["error"],
        "createdAt": job["created_at"], "updatedAt": job["updated_at"],
    }
    if state == "complete":
        out["downloadUrl"] = f"/api/v1/download/{job['job_id']}"
        out["masksUrl"] = f"/api/v1/download/{job['job_id']}/masks"
    return out


@router.get("/api/v1/jobs", tags=["jobs"])
async def list_jobs(request: Request, user: User = Depends(current_user), limit: int = Query(20, ge=1, le=100),
              offset: int = Query(0, ge=0, le=1_000_000), video_id: str | None = Query(None, alias="videoId", max_length=64)) -> dict[str, Any]:
    """The caller's jobs (optionally of one video), newest first, paginated."""
    jobs = request.app.state.view.jobs_of(user.id, video_id)
    page = _page(jobs, limit, offset)
    page["items"] = [status_body(j) for j in page["items"]]
    return page


@router.get("/api/v1/status/{job_id}", tags=["jobs"])
async def status(job_id: str, request: Request, user: User = Depends(current_user)) -> dict[str, Any]:
    """A job's state, stage, progress, attempt, error and timestamps; the download URL once complete."""
    return status_body(_own_job(request, job_id, user))


@router.get("/api/v1/events/{job_id}", tags=["jobs"], response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}})
async def events(job_id: str, request: Request, user: User = Depends(sse_user)) -> StreamingResponse:
    """Live progress as Server-Sent Events (``event: status`` per change, ``event: end`` when done)."""
    _own_job(request, job_id, user)
    s = request.app.state.settings
    view = request.app.state.view

    async def stream():  # type: ignore[no-untyped-def]
        last: Any = None
        beat = time.monotonic()
        give_up = time.monotonic() + 3600
        while time.monotonic() < give_up:
            job = view.job(job_id)
            if job is None:
                yield "event: deleted\ndata: {}\n\n"
                return
            mark = (job["state"], job["percent"], job["attempt"], job["updated_at"])
            if mark != last:
                last, beat = mark, time.monotonic()
                yield f"event: status\ndata: {json.dumps(status_body(job))}\n\n"
            if job["state"] in TERMINAL:
                yield f"event: end\ndata: {json.dumps({'state': job['state']})}\n\n"
                return
            if time.monotonic() - beat > s.sse_heartbeat_s:
                beat = time.monotonic()
                yield ": keep-alive\n\n"
            if await request.is_disconnected():
                return
            await asyncio.sleep(s.sse_poll_s)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _complete_job(request: Request, job_id: str, user: User) -> dict[str, Any]:
    job = _own_job(request, job_id, user)
    if job["state"] != "complete" or not job["output_key"]:
        raise HTTPException(status_code=409, detail=f"the job is {job['state']}, there is nothing to download yet")
    return job


@router.get("/api/v1/download/{job_id}", tags=["jobs"])
async def download(job_id: str, request: Request, user: User = Depends(current_user)) -> dict[str, Any]:
    """A presigned URL for the output video, valid 24 h; each call is audited."""
    job = _complete_job(request, job_id, user)
    s = request.app.state.settings
    filename = f"tapmask-{job_id}.mp4"
    url = request.app.state.s3_public.generate_presigned_url(
        "get_object", ExpiresIn=s.presign_ttl_s,
        Params={"Bucket": job["output_bucket"], "Key": job["output_key"],
                "ResponseContentDisposition": f'attachment; filename="{filename}"'})
    await _in_thread(request.app.state.producer.publish_many, [_audit(request, user, "download", "job", job_id, "output")])
    return {"url": url, "expiresIn": s.presign_ttl_s, "filename": filename}


@router.get("/api/v1/download/{job_id}/masks", tags=["jobs"], response_class=StreamingResponse,
            responses={200: {"content": {"application/zip": {}}, "description": "a zip of the per-frame masks"}})
async def download_masks(job_id: str, request: Request, user: User = Depends(current_user)) -> StreamingResponse:
    """The per-frame masks as a zip archive, streamed; each call is audited."""
    job = _complete_job(request, job_id, user)
    bucket = job["output_bucket"]
    masks_key = job.get("masks_key") or ""
    if masks_key.endswith(".zip"):  # the consumer uploaded an archive: hand out a presigned URL to it
        await _in_thread(request.app.state.producer.publish_many, [_audit(request, user, "download", "job", job_id, "masks")])
        url = request.app.state.s3_public.generate_presigned_url(
            "get_object", ExpiresIn=request.app.state.settings.presign_ttl_s, Params={"Bucket": bucket, "Key": masks_key})
        return RedirectResponse(url, status_code=307)  # type: ignore[return-value]
    keys = await _in_thread(list_masks, request.app.state.s3, bucket, job_id, job.get("masks_key"))
    if not keys:
        raise HTTPException(status_code=404, detail="this job exported no masks")
    await _in_thread(request.app.state.producer.publish_many, [_audit(request, user, "download", "job", job_id, "masks")])
    return StreamingResponse(zip_stream(request.app.state.s3, bucket, keys, f"masks-{job_id}/"), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="tapmask-{job_id}-masks.zip"'})
