"""`tapmask process`: the engine offline, on one file, with a progress bar."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


def _numbers(text: str, what: str, counts: tuple[int, ...]) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in counts:
        raise typer.BadParameter(f"{what} must look like {' or '.join(_SHAPES[what][c] for c in counts)}, not {text!r}")
    return values


_SHAPES = {"--point": {2: "X,Y", 3: "X,Y,FRAME"}, "--negative": {3: "X,Y,FRAME", 2: "X,Y"},
           "--box": {5: "X0,Y0,X1,Y1,FRAME", 4: "X0,Y0,X1,Y1"}}


def _frame(v: float, what: str) -> int:
    if v != int(v) or v < 0:
        raise typer.BadParameter(f"the FRAME of {what} must be a whole number >= 0, not {v:g}")
    return int(v)


def process_command(
    source: Path = typer.Argument(..., help="input video (mp4, mov, mkv, webm, avi...)"),
    output: Path = typer.Option(..., "-o", "--output", help="output mp4"),
    point: list[str] = typer.Option([], "--point", help="X,Y[,FRAME] on the object (FRAME defaults to 0); repeatable"),
    negative: list[str] = typer.Option([], "--negative", help="X,Y,FRAME not on the object; repeatable"),
    box: str | None = typer.Option(None, "--box", help="X0,Y0,X1,Y1,FRAME around the object"),
    mode: str = typer.Option("blur", "--mode", help="blur | pixelate | fill | erase"),
    margin: int = typer.Option(8, "--margin", min=0, help="safety margin around the mask, in pixels (never less than the tracker's edge uncertainty: 10 px at 360p, 20 at 720p)"),
    masks_out: Path | None = typer.Option(None, "--masks-out", help="folder for one PNG mask per frame + masks.json"),
) -> None:
    """Track the clicked object through every frame and blur, pixelate, fill or erase it."""
    from gpu_consumers.engine import Box, EngineError, Point, Prompt, process_video

    points = []
    for text in point:
        v = _numbers(text, "--point", (2, 3))
        points.append(Point(v[0], v[1], _frame(v[2], "--point") if len(v) == 3 else 0, 1))
    for text in negative:
        v = _numbers(text, "--negative", (3, 2))
        points.append(Point(v[0], v[1], _frame(v[2], "--negative") if len(v) == 3 else 0, 0))
    the_box = None
    if box is not None:
        v = _numbers(box, "--box", (5, 4))
        the_box = Box(v[0], v[1], v[2], v[3], _frame(v[4], "--box") if len(v) == 5 else 0)
    if not any(p.label == 1 for p in points) and the_box is None:
        console.print("[red]error:[/red] give at least one --point on the object (or a --box around it)")
        raise typer.Exit(2)

    with Progress(TextColumn("{task.description:<10}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                  TextColumn("{task.completed}/{task.total} frames"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console, transient=False) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=max(total, 1))
            bar.update(tasks[stage], completed=done, total=max(total, 1))

        try:
            result = process_video(source, output, Prompt(points, the_box), mode, margin_px=margin,
                                   progress=progress, masks_out=masks_out)
        except EngineError as exc:
            bar.stop()
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
    lost = result.lost_frames
    console.print(f"[green]done[/green]: {result.frames} frames, {result.width}x{result.height} @ "
                  f"{float(result.fps):g} fps, audio {result.audio}, mean confidence {result.mean_confidence:.2f}, "
                  f"{result.seconds['total']:.1f}s → {output}")
    if lost:
        runs, start = [], lost[0]
        for a, b in zip(lost, lost[1:] + (None,)):
            if b != a + 1:
                runs.append(f"{start}" if start == a else f"{start}-{a}")
                start = b
        console.print(f"[yellow]object not found on {len(lost)} frame(s):[/yellow] {', '.join(runs)} "
                      "(occluded or out of view; nothing was hidden there)")
    if masks_out is not None:
        console.print(f"masks: {masks_out}/NNNNNN.png + masks.json")
