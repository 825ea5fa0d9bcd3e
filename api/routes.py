"""The REST routes under /api/v1."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from api.auth import User, current_user
from api.models import SegmentIn
from producers.upload import UploadRejected, publish_uploaded, stream_multipart_to_s3
from schemas.topics import SEGMENT_REQUESTED
from tapmask.events import envelope, now_ms

router = APIRouter()
ID_CHARS = set("0123456789abcdef")


def _valid_id(value: str) -> bool:
    return 8 <= len(value) <= 64 and set(value) <= ID_CHARS


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


@router.post("/api/v1/upload", status_code=201, tags=["videos"])
async def upload(request: Request, user: User = Depends(current_user)) -> dict[str, Any]:
    """Upload a video (multipart/form-data, field ``file``), streamed to S3."""
    s = request.app.state.settings
    video_id = uuid.uuid4().hex
    key = f"uploads/{video_id}/source"
    try:
        stored = await stream_multipart_to_s3(
            request.stream(), request.headers.get("content-type", ""), request.app.state.s3, s.s3_bucket, key, s.max_upload_bytes
        )
    except UploadRejected as exc:
        raise HTTPException(status_code=exc.status, detail=exc.reason) from exc
    event = publish_uploaded(
        request.app.state.producer,
        video_id=video_id,
        owner_id=user.id,
        stored=stored,
        bucket=s.s3_bucket,
        correlation_id=request.state.request_id,
        region=user.region,
    )
    request.app.state.view.note_uploaded(event)
    return {
        "videoId": video_id,
        "statusUrl": f"/api/v1/videos/{video_id}",
        "container": stored.container,
        "sizeBytes": stored.size_bytes,
        "sha256": stored.sha256,
    }


def _own_video(request: Request, video_id: str, user: User):  # type: ignore[no-untyped-def]
    video = request.app.state.view.video(video_id) if _valid_id(video_id) else None
    if video is None:
        raise HTTPException(status_code=404, detail=f"unknown video id {video_id!r}")
    if video.owner_id != user.id:
        raise HTTPException(status_code=403, detail="this video belongs to another user")
    return video


@router.get("/api/v1/videos/{video_id}", tags=["videos"])
def video_status(video_id: str, request: Request, user: User = Depends(current_user)) -> dict[str, Any]:
    """A video's validation state and probed metadata."""
    v = _own_video(request, video_id, user)
    return {"videoId": v.video_id, "state": v.state, "reason": v.reason, "filename": v.filename, "sizeBytes": v.size_bytes, "metadata": v.metadata}


@router.post("/api/v1/segment", status_code=202, tags=["jobs"])
def segment(body: SegmentIn, request: Request, response: Response, user: User = Depends(current_user)) -> dict[str, Any]:
    """Ask for the clicked object to be masked in every frame."""
    video = _own_video(request, body.video_id, user)
    if video.state == "validating":
        response.headers["Retry-After"] = "1"
        raise HTTPException(status_code=409, detail="the video is still being validated; retry in a second", headers={"Retry-After": "1"})
    if video.state == "rejected":
        raise HTTPException(status_code=422, detail=f"the video was rejected: {video.reason}")
    meta = video.metadata or {}
    points = body.all_points()
    for p in points:
        if p.x >= meta.get("width", 0) or p.y >= meta.get("height", 0):
            raise HTTPException(status_code=422, detail=f"point ({p.x:g}, {p.y:g}) is outside the {meta.get('width')}x{meta.get('height')} frame")
        if p.frame >= meta.get("frame_count", 0):
            raise HTTPException(status_code=422, detail=f"frame {p.frame} is past the end of the video ({meta.get('frame_count')} frames)")
    job_id = uuid.uuid4().hex
    event = envelope(request.state.request_id) | {
        "job_id": job_id,
        "video_id": video.video_id,
        "owner_id": user.id,
        "tier": user.tier,
        "points": [p.model_dump() for p in points],
        "box": body.box.model_dump() if body.box else None,
        "mode": body.mode,
        "options": body.options.model_dump(),
    }
    request.app.state.producer.publish(SEGMENT_REQUESTED, job_id, event)
    now = now_ms()
    request.app.state.view.note_pending_job(
        {"job_id": job_id, "video_id": video.video_id, "owner_id": user.id, "state": "queued", "percent": 0.0,
         "frames_done": 0, "frames_total": 0, "attempt": 1, "mode": body.mode, "error_code": None, "error": None,
         "output_bucket": None, "output_key": None, "masks_key": None, "created_at": now, "updated_at": now}
    )
    return {"jobId": job_id, "statusUrl": f"/api/v1/status/{job_id}"}


def _own_job(request: Request, job_id: str, user: User) -> dict[str, Any]:
    job = request.app.state.view.job(job_id) if _valid_id(job_id) else None
    if job is None:
        raise HTTPException(status_code=404, detail=f"unknown job id {job_id!r}")
    if job["owner_id"] != user.id:
        raise HTTPException(status_code=403, detail="this job belongs to another user")
    return job


@router.get("/api/v1/status/{job_id}", tags=["jobs"])
def status(job_id: str, request: Request, user: User = Depends(current_user)) -> dict[str, Any]:
    """A job's state, stage, progress, attempt and error; the download URL once complete."""
    job = _own_job(request, job_id, user)
    out = {
        "jobId": job["job_id"],
        "videoId": job["video_id"],
        "state": job["state"],
        "percent": round(float(job["percent"]), 1),
        "framesDone": job["frames_done"],
        "framesTotal": job["frames_total"],
        "attempt": job["attempt"],
        "mode": job["mode"],
        "errorCode": job["error_code"],
        "error": job["error"],
        "createdAt": job["created_at"],
        "updatedAt": job["updated_at"],
    }
    if job["state"] == "complete":
        out["downloadUrl"] = f"/api/v1/download/{job_id}"
    return out


@router.get("/api/v1/download/{job_id}", tags=["jobs"])
def download(job_id: str, request: Request, user: User = Depends(current_user)) -> dict[str, Any]:
    """A presigned URL for the output video, valid 24 h."""
    from tapmask.storage import presigned_get

    job = _own_job(request, job_id, user)
    if job["state"] != "complete" or not job["output_key"]:
        raise HTTPException(status_code=409, detail=f"the job is {job['state']}, there is nothing to download yet")
    s = request.app.state.settings
    url = presigned_get(s, job["output_bucket"], job["output_key"], filename=f"tapmask-{job_id}.mp4")
    return {"url": url, "expiresIn": s.presign_ttl_s}
