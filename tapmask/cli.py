"""The `tapmask` command line: the dev stack, the services, and the demo job."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tapmask.devstack import DevStack, read_stack_info
from tapmask.devstack_proc import DevStackError
from tapmask.settings import get_settings

app = typer.Typer(help="TapMask: click an object once, get it blurred in every frame.", no_args_is_help=True)
dev = typer.Typer(help="The embedded stack: broker, object store, Valkey, and the TapMask services.", no_args_is_help=True)
app.add_typer(dev, name="dev")
# soft_wrap: a line is never broken at the terminal width (or at 80 columns when piped), so an
# error stays one line and a printed path can be copied whole.
console = Console(soft_wrap=True)


def _stack() -> DevStack:
    return DevStack(get_settings(), reporter=lambda line: console.print(f"[dim]{line}[/dim]"))


@dev.command("up")
def dev_up(consumers: int = typer.Option(1, help="how many GPU consumer processes to start")) -> None:
    """Start the embedded stack and the API, Faust worker and GPU consumer; wait until ready."""
    from tapmask.services import service_specs

    stack = _stack()
    try:
        info = stack.up(service_specs(stack.settings, stack.logs_dir, consumers=consumers))
    except DevStackError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if info.already_running:
        console.print(f"already running: API at {info.api_url}")
        return
    console.print(f"[green]ready[/green] in {info.ready_after_s:.1f}s — API {info.api_url}, broker {info.kafka_bootstrap} "
                  f"(storage {info.storage_engine}), S3 {info.s3_endpoint}, Valkey {info.redis_url}; logs in {stack.logs_dir}")


@dev.command("down")
def dev_down() -> None:
    """Stop the processes `dev up` started (by pid), and nothing else."""
    for name, outcome in _stack().down():
        console.print(f"{name}: {outcome}")


@dev.command("status")
def dev_status() -> None:
    """Show each process of the stack: pid, alive, port answering."""
    stack = _stack()
    rows = stack.status()
    if not rows:
        console.print("the dev stack is not running (tapmask dev up starts it)")
        raise typer.Exit(1)
    table = Table("process", "pid", "alive", "port", "answers", "log")
    for r in rows:
        table.add_row(r.name, str(r.pid), "yes" if r.alive else "[red]no[/red]", str(r.port or "-"),
                      "-" if r.port_open is None else ("yes" if r.port_open else "[red]no[/red]"), r.log)
    console.print(table)
    if not all(r.alive for r in rows):
        raise typer.Exit(1)


@app.command("init")
def init() -> None:
    """Create the topics of infra/topics.toml and the bucket on the configured servers
    (production and docker-compose; `dev up` does this itself)."""
    from botocore.exceptions import ClientError

    from schemas.topics import load_topic_specs
    from tapmask.storage import s3_client
    from tapmask.topics_admin import ensure_topics

    settings = get_settings()
    results = ensure_topics(settings.kafka_bootstrap, load_topic_specs(), prefix=settings.topic_prefix)
    console.print(f"topics: {sum(r.created for r in results)} created, {sum(not r.created for r in results)} already there")
    s3 = s3_client(settings)
    try:
        s3.head_bucket(Bucket=settings.s3_bucket)
        console.print(f"bucket {settings.s3_bucket}: already there")
    except ClientError:
        s3.create_bucket(Bucket=settings.s3_bucket)
        console.print(f"bucket {settings.s3_bucket}: created")


def _dev_token(settings, user: str, tier: str, region: str = "eu", ttl: int | None = None) -> str:  # type: ignore[no-untyped-def]
    """A token signed with the configured key (the demo runs as TAPMASK_DEV_USER_ID)."""
    from api.auth import mint_token

    return mint_token(settings, user, tier, region, ttl)


@app.command("token")
def token(
    user: str = typer.Option(..., help="user id (the token's sub)"),
    tier: str = typer.Option("pro", help="free | pro"),
    region: str = typer.Option("eu", help="data region"),
    ttl: int = typer.Option(3600, help="lifetime in seconds"),
) -> None:
    """Print a development JWT signed with TAPMASK_JWT_SECRET (or TAPMASK_JWT_PRIVATE_KEY_FILE for RS256)."""
    try:
        typer.echo(_dev_token(get_settings(), user, tier, region, ttl))
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("out"), help="folder for the sample clip and the result"),
    mode: str = typer.Option("blur", help="blur | pixelate | fill"),
) -> None:
    """The main job: make a 3-second sample clip, upload it, click the moving object, wait, download."""
    from tapmask.client import ApiError, TapMaskClient
    from tapmask.samples import make_sample_clip, sample_object_center

    settings = get_settings()
    info = read_stack_info(settings.home)
    api_url = settings.api_url or (info.api_url if info else settings.resolved_api_url())
    out.mkdir(parents=True, exist_ok=True)
    clip = make_sample_clip(out / "sample.mp4", seconds=3.0, width=640, height=360, fps=25)
    x, y = sample_object_center(0, 640, 360, 25)
    client = TapMaskClient(api_url, token=_dev_token(settings, settings.dev_user_id, settings.dev_user_tier))
    t0 = time.monotonic()
    try:
        up = client.upload(clip)
        console.print(f"uploaded {clip} as video {up['videoId']}")
        video = client.wait_validated(up["videoId"])
        if video["state"] != "valid":
            console.print(f"[red]video rejected:[/red] {video['reason']}")
            raise typer.Exit(1)
        job = client.segment(up["videoId"], x, y, 0, mode=mode)
        console.print(f"clicked ({x:.0f}, {y:.0f}) on frame 0 → job {job['jobId']}")
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                      TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("queued", total=100)
            final = client.wait_done(job["jobId"], on_update=lambda st: bar.update(task, completed=st["percent"], description=st["state"]))
        if final["state"] != "complete":
            console.print(f"[red]job {final['state']}:[/red] {final.get('error')}")
            raise typer.Exit(1)
        result = client.download(job["jobId"], out / f"output-{job['jobId'][:8]}.mp4")
    except ApiError as exc:
        console.print(f"[red]API error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"[green]done[/green] in {time.monotonic() - t0:.1f}s: the blurred video is at [bold]{result.resolve()}[/bold]")


# engine (issue 4): `tapmask process IN -o OUT --point X,Y[,FRAME] ...`
from gpu_consumers.engine.cli import process_command  # noqa: E402

app.command("process")(process_command)


if __name__ == "__main__":
    app()
