"""The video backend with chunk checkpoints in S3: a redelivered job resumes after its last
finished chunk instead of frame 0.

It drives the engine's two passes (``engine.pipeline.track_video`` → ``MaskTrack``;
``engine.render.render_segment`` per chunk of ``plan_chunks`` → ``join_segments``) and keeps
each finished piece in S3 under ``work/{job_id}/{fingerprint}/``:

* ``track.npz``            - the whole mask track (pass 1), uploaded once tracking ends;
* ``seg-{k:05d}.mp4``      - the encoded video of chunk k (pass 2), uploaded as each ends.

A later try lists that prefix, downloads what is there and renders only the missing chunks;
the engine guarantees a frame renders the same whichever segment it falls in, so the joined
output is the same either way (tests/integration/test_consumer_resume.py checks it). The
fingerprint hashes what determines the pixels (source object ETag, prompt, mode, options,
chunk size), so a changed request or a smaller chunk after an out-of-memory retry never
mixes with older pieces. Objects are written whole (PUT) and a segment is only listed once
complete, so a worker killed mid-upload leaves nothing half-written to resume from. The
prefix is deleted once the job's completion (complete or failed) is acknowledged. Outputs
stay alone under ``outputs/{job_id}/``.

When the spec's ``options.export_masks`` is true (the default), the backend also writes the
per-frame masks (``MaskTrack.write_masks``: one PNG per frame + ``masks.json``) into
``masks_dir(dst)``, next to the output in the job's temp dir; the job runner uploads them
under ``outputs/{job_id}/masks/`` before the completion event.

The spec's ``max_output_height`` (the free tier's export cap, set by the quota agent, applied
to the shorter side; None = the source size) is honoured: a larger source is rendered at its
own size and scaled down as it is encoded (``EffectOptions.max_output_height``, see
``engine.video_io.capped_size``), and the masks are exported at the *output's* size, so they
line up with the video the user downloads.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from gpu_consumers.backends import masks_dir
from gpu_consumers.engine.prompts import Box, Point, Prompt
from tapmask.storage import delete_prefix

log = structlog.get_logger()

ProgressFn = Callable[[str, int, int], None]

try:  # the engine's two-pass API (issue 4)
    from gpu_consumers.engine.masktrack import MaskTrack
    from gpu_consumers.engine.pipeline import track_video
    from gpu_consumers.engine.render import EffectOptions, join_segments, plan_chunks, render_segment
    from gpu_consumers.engine.video_io import probe

    TWO_PASS = True
except ImportError:  # pragma: no cover - an engine without it: one pass, no resume
    TWO_PASS = False


def prompt_of(spec: dict[str, Any]) -> Prompt:
    """The engine prompt for a job spec."""
    points = [Point(x=p["x"], y=p["y"], frame=int(p["frame"]), label=int(p["label"])) for p in spec["points"]]
    b = spec.get("box")
    box = Box(x0=b["x0"], y0=b["y0"], x1=b["x1"], y1=b["y1"], frame=int(b["frame"])) if b else None
    return Prompt(points=points, box=box)


def export_masks(spec: dict[str, Any]) -> bool:
    """Whether the job asked for its per-frame masks (default: yes)."""
    return bool((spec.get("options") or {}).get("export_masks", True))


def tracker_for(mode: str) -> Any:
    """The engine's tracker for ``mode``: camera motion is estimated for erase only (it costs
    time and only erase uses it), as ``process_video`` does."""
    from gpu_consumers.engine.tracking import ClassicTracker

    return ClassicTracker(camera_motion=mode == "erase")


def checkpoint_prefix(job_id: str) -> str:
    """Where a job's checkpoints live (all fingerprints)."""
    return f"work/{job_id}/"


class CheckpointStore:
    """The S3 objects of one job's checkpoints under one fingerprint."""

    def __init__(self, s3: Any, bucket: str, job_id: str, fingerprint: str) -> None:
        self.s3, self.bucket, self.job_id = s3, bucket, job_id
        self.prefix = f"{checkpoint_prefix(job_id)}{fingerprint}/"

    def keys(self) -> set[str]:
        names: set[str] = set()
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
            names.update(o["Key"][len(self.prefix):] for o in page.get("Contents", []))
        return names

    def get(self, name: str, path: Path) -> Path:
        self.s3.download_file(self.bucket, self.prefix + name, str(path))
        return path

    def put(self, name: str, path: Path) -> None:
        self.s3.upload_file(str(path), self.bucket, self.prefix + name)

    def delete_all(self) -> int:
        """Remove every checkpoint of the job (all fingerprints); returns how many."""
        return delete_prefix(self.s3, self.bucket, checkpoint_prefix(self.job_id))


def fingerprint(spec: dict[str, Any], source_etag: str, chunk_frames: int) -> str:
    """Hash of everything that decides the output's pixels and the chunk layout."""
    what = {
        "source": [spec["s3_bucket"], spec["video_key"], source_etag],
        "points": spec["points"], "box": spec.get("box"), "mode": spec["mode"], "options": spec["options"],
        "max_output_height": spec.get("max_output_height"), "chunk_frames": chunk_frames,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def max_output_height(spec: dict[str, Any]) -> int | None:
    """The job's cap on the output's shorter side (None: export at the source size)."""
    cap = spec.get("max_output_height")
    return int(cap) if cap else None


def write_masks(track: Any, folder: Path, progress: ProgressFn, should_cancel: Callable[[], bool],
                size: tuple[int, int] | None = None, rotation: float = 0) -> Path:
    """``track.write_masks(folder, size=size, rotation=rotation)`` (one PNG at a time: flat
    memory; in display orientation), reported as the "encoding" stage and cancellable
    between frames."""
    from gpu_consumers.engine.errors import JobCancelled

    def on_mask(done: int, total: int) -> None:
        if should_cancel():
            raise JobCancelled("The job was cancelled.")
        progress("encoding", done, total)

    return track.write_masks(folder, progress=on_mask, size=size, rotation=rotation)


class VideoBackend:
    """The engine, resumable per chunk when the engine has its two-pass API."""

    def __init__(self, s3: Any = None, settings: Any = None, chunk_frames: int | None = None, **_: Any) -> None:
        self.s3 = s3
        self.chunk_frames = chunk_frames or (settings.consumer_chunk_frames if settings is not None else 250)
        self.last_run: dict[str, Any] = {}  # what the latest process() reused and rendered (tests, logs)

    def process(self, src: Path, dst: Path, job: Any, progress: ProgressFn, should_cancel: Callable[[], bool]) -> int:
        spec = job.spec
        masks = masks_dir(dst) if export_masks(spec) else None
        if not TWO_PASS or self.s3 is None:
            from gpu_consumers.engine.pipeline import process_video

            return process_video(src, dst, prompt_of(spec), spec["mode"], margin_px=spec["options"]["margin_px"],
                                 blur_kernel=spec["options"]["blur_kernel"], progress=progress,
                                 should_cancel=should_cancel, masks_out=masks,
                                 max_output_height=max_output_height(spec)).frames
        chunk = max(10, int(self.chunk_frames * getattr(job, "scale", 1.0)))  # smaller after out of memory
        etag = self.s3.head_object(Bucket=spec["s3_bucket"], Key=spec["video_key"]).get("ETag", "").strip('"')
        store = CheckpointStore(self.s3, spec["s3_bucket"], spec["job_id"], fingerprint(spec, etag, chunk))
        have = store.keys()
        work = dst.parent / "pieces"
        work.mkdir(exist_ok=True)
        info = probe(src)
        run = self.last_run = {"chunk_frames": chunk, "track_reused": False, "segments_reused": [], "segments_rendered": []}

        t = time.monotonic()
        if "track.npz" in have:
            track = MaskTrack.load(store.get("track.npz", work / "track.npz"))
            run["track_reused"] = True
            progress("tracking", len(track), len(track))
        else:
            progress("tracking", 0, info.frame_count)
            track = track_video(src, prompt_of(spec), tracker=tracker_for(spec["mode"]), info=info,
                                progress=progress, should_cancel=should_cancel)
            track.save(work / "track.npz")
            store.put("track.npz", work / "track.npz")
        run["track_s"] = time.monotonic() - t

        options = EffectOptions(mode=spec["mode"], margin_px=spec["options"]["margin_px"],
                                blur_kernel=spec["options"]["blur_kernel"],
                                max_output_height=max_output_height(spec))
        chunks = plan_chunks(len(track), chunk)
        total, done = len(track), 0
        segments: list[Path] = []
        t = time.monotonic()
        for k, (start, end) in enumerate(chunks):
            name = f"seg-{k:05d}.mp4"
            path = work / name
            if name in have:
                store.get(name, path)
                run["segments_reused"].append(k)
                done += end - start
            else:
                base = done

                def on_frame(index: int, base: int = base, start: int = start) -> None:
                    progress("processing", min(total - 1, base + index - start + 1), total)

                done += render_segment(src, track, options, start, end, path, info=info,
                                       should_cancel=should_cancel, on_frame=on_frame)
                store.put(name, path)
                run["segments_rendered"].append(k)
            progress("processing", min(done, total - 1), total)
            segments.append(path)
        join_segments(segments, src, dst, info)
        run["render_s"] = time.monotonic() - t
        if masks is not None:
            t = time.monotonic()
            write_masks(track, masks, progress, should_cancel, size=options.output_size(info), rotation=info.rotation)
            run["masks_s"] = time.monotonic() - t
        if run["track_reused"] or run["segments_reused"]:
            log.info("job.resumed", job_id=spec["job_id"], track_reused=run["track_reused"],
                     segments_reused=len(run["segments_reused"]), segments=len(chunks))
        return done

    def cleanup(self, job: Any) -> None:
        """Drop the job's checkpoints once its completion is acknowledged (best effort)."""
        if self.s3 is None:
            return
        try:
            CheckpointStore(self.s3, job.spec["s3_bucket"], job.job_id, "").delete_all()
        except Exception as exc:  # noqa: BLE001 - they expire anyway
            log.warning("checkpoints.cleanup_failed", job_id=job.job_id, error=str(exc))
