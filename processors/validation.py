"""The validation agents.

``validate_uploads``: probes each uploaded video in S3 (ranged reads) and publishes
``video.validated`` with its metadata or a readable rejection; keeps the metadata in a
global table every worker can read.

``validate_requests``: checks each segmentation request against that metadata (points inside
the frame, frames in range, a known and valid video) and passes it on to the quota agent as a
complete job spec, or fails the job with the reason. A request whose video has no verdict in
the table yet (table lag: the API only accepts requests for validated videos) is not waited
for in the agent: it fails its attempt and is retried after 2 s, then 4 s, like any failure
(processors/app.py); still unknown after that, the job fails as an invalid request.
"""

from __future__ import annotations

import asyncio
from functools import lru_cache
from typing import Any

import structlog

from processors.app import app, emit, guarded, handler, json_schema, settings, topic
from processors.probe import ProbeRejected, probe_video
from schemas.topics import JOB_COMPLETED, SEGMENT_ACCEPTED, SEGMENT_REQUESTED, VIDEO_UPLOADED, VIDEO_VALIDATED
from tapmask.events import envelope, job_failed
from tapmask.storage import S3RangeReader, s3_client

log = structlog.get_logger()

videos = app.GlobalTable("video-metadata", default=None, partitions=8, schema=json_schema())


@lru_cache(maxsize=1)
def _s3() -> Any:
    return s3_client(settings)  # boto3 clients are thread-safe; build it once


def _probe_in_s3(bucket: str, key: str, container: str) -> dict[str, Any]:
    reader = S3RangeReader(_s3(), bucket, key)
    return probe_video(reader, container)


async def _validate_upload(up: dict[str, Any]) -> None:
    try:
        meta = await asyncio.to_thread(_probe_in_s3, up["s3_bucket"], up["s3_key"], up["container"])
        verdict: dict[str, Any] = {"valid": True, "reason": None, "metadata": meta}
    except ProbeRejected as exc:
        verdict = {"valid": False, "reason": str(exc), "metadata": None}
    videos[up["video_id"]] = verdict | {"owner_id": up["owner_id"], "s3_bucket": up["s3_bucket"], "s3_key": up["s3_key"]}
    await emit(VIDEO_VALIDATED, up["video_id"], envelope(up.get("correlation_id")) | {
        "video_id": up["video_id"], "owner_id": up["owner_id"], **verdict,
    })
    log.info("video.validated", video_id=up["video_id"], valid=verdict["valid"], reason=verdict["reason"])


@app.agent(topic(VIDEO_UPLOADED))
async def validate_uploads(stream):  # type: ignore[no-untyped-def]
    """Probe each upload; publish its metadata or why it was rejected."""
    async for event in stream.events():
        await guarded(UPLOADS, event)


async def _upload_gave_up(up: dict[str, Any], reason: str) -> None:
    """The probe kept failing (S3 away, a crash in the decoder): reject with the reason rather
    than leave the video 'validating' for ever."""
    verdict = {"valid": False, "reason": f"the video could not be checked ({reason}); please upload it again",
               "metadata": None}
    videos[up["video_id"]] = verdict | {"owner_id": up["owner_id"], "s3_bucket": up["s3_bucket"], "s3_key": up["s3_key"]}
    await emit(VIDEO_VALIDATED, up["video_id"], envelope(up.get("correlation_id")) | {
        "video_id": up["video_id"], "owner_id": up["owner_id"], **verdict})


def request_problem(req: dict[str, Any], video: dict[str, Any] | None) -> str | None:
    """Why a segmentation request cannot run on this video, or None when it can."""
    if video is None:
        return "the video is unknown or was not validated"
    if video["owner_id"] != req["owner_id"]:
        return "the video belongs to another user"
    if not video["valid"]:
        return f"the video was rejected: {video['reason']}"
    meta = video["metadata"]
    if req["mode"] not in MODES:
        return f"unknown mode {req['mode']!r} (expected one of {', '.join(sorted(MODES))})"
    if not req["points"]:
        return "no point was given"
    w, h = display_size(meta)
    prompts = list(req["points"]) + ([req["box"]] if req.get("box") else [])
    for p in req["points"]:
        if not (0 <= p["x"] < w and 0 <= p["y"] < h):
            return f"point ({p['x']:g}, {p['y']:g}) is outside the {w}x{h} frame"
    box = req.get("box")
    if box is not None:
        if not (0 <= box["x0"] < box["x1"] <= w and 0 <= box["y0"] < box["y1"] <= h):
            return f"the box ({box['x0']:g}, {box['y0']:g})-({box['x1']:g}, {box['y1']:g}) is empty or outside the {w}x{h} frame"
    for p in prompts:
        if not 0 <= p["frame"] < meta["frame_count"]:
            return f"frame {p['frame']} is past the end of the video ({meta['frame_count']} frames)"
    if not any(p["label"] == 1 for p in req["points"]):
        return "no point on the object (label 1) was given"
    return None


MODES = frozenset({"blur", "pixelate", "fill", "erase"})


def display_size(meta: dict[str, Any]) -> tuple[int, int]:
    """Width and height as players show the video (clicks are in these coordinates)."""
    w, h = meta["width"], meta["height"]
    return (h, w) if meta.get("rotation", 0) % 180 == 90 else (w, h)


class MetadataNotYet(RuntimeError):
    """The video's verdict has not reached this worker's table yet."""


async def _validate_request(req: dict[str, Any]) -> None:
    video = videos.get(req["video_id"])
    if video is None:
        # The API only accepts requests for validated videos, so this is table lag (or a video
        # that does not exist): the request is parked and tried again after 2 s, then 4 s
        # (processors/app.py), never waited for here, where it would hold the partition.
        raise MetadataNotYet(f"no verdict for video {req['video_id']} yet")
    problem = request_problem(req, video)
    if problem is not None:
        await emit(JOB_COMPLETED, req["job_id"], job_failed(req, "invalid_request", problem), wait=False)
        return
    spec = {k: req[k] for k in ("job_id", "video_id", "owner_id", "tier", "points", "box", "mode", "options")}
    spec |= envelope(req.get("correlation_id")) | {
        "s3_bucket": video["s3_bucket"], "video_key": video["s3_key"], "video": video["metadata"],
        "max_output_height": None, "attempt": 1, "requested_at": req["occurred_at"], "notice": None,
    }  # the tier's export cap is the quota agent's rule
    await emit(SEGMENT_ACCEPTED, req["owner_id"], spec, wait=False)


@app.agent(topic(SEGMENT_REQUESTED))
async def validate_requests(stream):  # type: ignore[no-untyped-def]
    """Forward valid requests to quota as job specs; fail the others with the reason."""
    async for event in stream.events():
        await guarded(REQUESTS, event)


async def _request_gave_up(req: dict[str, Any], reason: str) -> None:
    if videos.get(req["video_id"]) is None:  # still no verdict after every attempt
        await emit(JOB_COMPLETED, req["job_id"], job_failed(req, "invalid_request", request_problem(req, None) or reason))
        return
    await emit(JOB_COMPLETED, req["job_id"], job_failed(req, "internal_error", f"the request could not be checked: {reason}"))


UPLOADS = handler("validation", VIDEO_UPLOADED, _validate_upload, _upload_gave_up)
REQUESTS = handler("validation", SEGMENT_REQUESTED, _validate_request, _request_gave_up)
