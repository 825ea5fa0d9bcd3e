"""Request and response bodies of the REST API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Mode = Literal["blur", "pixelate", "fill", "erase"]


class PointIn(BaseModel):
    """A click: pixel coordinates on a frame; label 1 = on the object, 0 = not on it."""

    model_config = ConfigDict(extra="forbid")
    x: float = Field(ge=0)
    y: float = Field(ge=0)
    frame: int = Field(default=0, ge=0)
    label: Literal[0, 1] = 1


class BoxIn(BaseModel):
    """An optional box around the object on one frame."""

    model_config = ConfigDict(extra="forbid")
    x0: float
    y0: float
    x1: float
    y1: float
    frame: int = Field(default=0, ge=0)


class OptionsIn(BaseModel):
    """Effect options."""

    model_config = ConfigDict(extra="forbid")
    #: Grown around the mask, in output pixels; the engine never uses less than its tracker's
    #: edge uncertainty (gpu_consumers/engine/render.effective_margin: 10 px at 360p, 20 at 720p).
    margin_px: int = Field(default=8, ge=0, le=256)
    blur_kernel: int = Field(default=99, ge=3, le=255)
    export_masks: bool = True


class ClicksIn(BaseModel):
    """The clicks and box that designate the object (display pixels, api/README.md
    "Coordinates"): a single ``point`` and/or a list of ``points``, and an optional ``box``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    point: PointIn | None = None
    points: list[PointIn] | None = Field(default=None, max_length=64)
    box: BoxIn | None = None

    def all_points(self) -> list[PointIn]:
        """``point`` and ``points`` together."""
        return ([self.point] if self.point else []) + list(self.points or [])


class SegmentIn(ClicksIn):
    """``POST /api/v1/segment``: a single ``point`` or a list of ``points`` (at least one positive)."""

    video_id: str = Field(alias="videoId", min_length=1, max_length=64)
    mode: Mode = "blur"
    options: OptionsIn = OptionsIn()

    @model_validator(mode="after")
    def _one_positive_point(self) -> "SegmentIn":
        pts = self.all_points()
        if not any(p.label == 1 for p in pts):
            raise ValueError("give at least one point on the object: 'point' or 'points' with label 1")
        return self


class DevTokenIn(BaseModel):
    """``POST /api/v1/dev/token``: who to be (development sign-in only)."""

    model_config = ConfigDict(extra="forbid")
    user: str = Field(default="dev-user", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")
    tier: Literal["free", "pro"] = "pro"
    region: str = Field(default="eu", min_length=1, max_length=16, pattern=r"^[a-z0-9-]+$")


class PreviewIn(ClicksIn):
    """``POST /api/v1/videos/{videoId}/preview``: the same clicks and box as ``/segment`` takes
    (a positive point or a box is needed; the prompted frame is the first positive point's,
    else the box's)."""

    @model_validator(mode="after")
    def _something_designates_the_object(self) -> "PreviewIn":
        if self.box is None and not any(p.label == 1 for p in self.all_points()):
            raise ValueError("give at least one point on the object (label 1) or a box around it")
        return self
