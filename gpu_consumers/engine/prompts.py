"""What the user clicked: points and an optional box, plus rotation-aware coordinate mapping.

Coordinates are continuous pixel coordinates: pixel (col i, row j) covers
``[i, i + 1) x [j, j + 1)``, so a valid x lies in ``[0, width)``. `frame` is the 0-based
index of the decoded frame the click was made on.

Prompts arrive in *display* coordinates (the picture as a player shows it, after the
container's rotation is applied). Decoded frames are in *coded* (stored) orientation, so
the pipeline maps prompts with `prompt_to_coded` before handing them to a mask provider.
For rotation 0 the two are the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

POSITIVE = 1
NEGATIVE = 0


@dataclass(frozen=True, slots=True)
class Point:
    """One click. `label` 1 = "this is the object", 0 = "this is not the object"."""

    x: float
    y: float
    frame: int = 0
    label: int = POSITIVE


@dataclass(frozen=True, slots=True)
class Box:
    """A box around the object on frame `frame`; (x0, y0) top-left, (x1, y1) bottom-right."""

    x0: float
    y0: float
    x1: float
    y1: float
    frame: int = 0


@dataclass(frozen=True, slots=True)
class Prompt:
    """Everything the user gave to designate one object."""

    points: list[Point] = field(default_factory=list)
    box: Box | None = None

    @property
    def positive_points(self) -> list[Point]:
        """Points labelled as the object."""
        return [p for p in self.points if p.label == POSITIVE]

    @property
    def frame(self) -> int:
        """The frame the object was designated on (first positive point, else box, else 0)."""
        if self.positive_points:
            return self.positive_points[0].frame
        if self.box is not None:
            return self.box.frame
        return 0


def quarter_turns(rotation: float) -> int:
    """Counter-clockwise quarter turns (0..3) nearest to `rotation` degrees."""
    return int(round(rotation / 90.0)) % 4


def display_size(width: int, height: int, rotation: float) -> tuple[int, int]:
    """(width, height) of the displayed picture for a coded `width` x `height` frame."""
    return (height, width) if quarter_turns(rotation) % 2 else (width, height)


def display_to_coded(
    x: float, y: float, rotation: float, width: int, height: int
) -> tuple[float, float]:
    """Map a display-space point to coded-frame space.

    `rotation` is the container's counter-clockwise display rotation in degrees (PyAV's
    `VideoFrame.rotation`; phones typically write -90 or 90), rounded to a quarter turn;
    flips are not handled. `width`/`height` are the coded frame's size. The display
    picture is ``np.rot90(coded, k)`` with ``k = rotation / 90``.
    """
    k = quarter_turns(rotation)
    if k == 0:
        return x, y
    if k == 1:
        return width - y, x
    if k == 2:
        return width - x, height - y
    return y, height - x


def coded_to_display(
    x: float, y: float, rotation: float, width: int, height: int
) -> tuple[float, float]:
    """Inverse of `display_to_coded` (`width`/`height` are still the coded size)."""
    k = quarter_turns(rotation)
    if k == 0:
        return x, y
    if k == 1:
        return y, width - x
    if k == 2:
        return width - x, height - y
    return height - y, x


def prompt_to_coded(prompt: Prompt, rotation: float, width: int, height: int) -> Prompt:
    """Map every point and the box of a display-space prompt to coded-frame space."""
    if quarter_turns(rotation) == 0:
        return prompt
    points = []
    for p in prompt.points:
        cx, cy = display_to_coded(p.x, p.y, rotation, width, height)
        points.append(replace(p, x=cx, y=cy))
    box = None
    if prompt.box is not None:
        b = prompt.box
        ax, ay = display_to_coded(b.x0, b.y0, rotation, width, height)
        bx, by = display_to_coded(b.x1, b.y1, rotation, width, height)
        box = Box(min(ax, bx), min(ay, by), max(ax, bx), max(ay, by), b.frame)
    return Prompt(points=points, box=box)
