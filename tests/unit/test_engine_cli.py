"""`tapmask process`: the engine from the command line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tapmask.cli import app
from tapmask.samples import make_sample_clip, sample_object_center


def test_process_writes_video_and_masks_and_rejects_bad_input(tmp_path):
    clip = make_sample_clip(tmp_path / "in.mp4", seconds=0.4, width=320, height=180, audio=False)
    x, y = sample_object_center(0, 320, 180, 25)
    runner = CliRunner()
    out, masks = tmp_path / "out.mp4", tmp_path / "masks"
    r = runner.invoke(app, ["process", str(clip), "-o", str(out), "--point", f"{x:.0f},{y:.0f},0",
                            "--negative", "5,5,0", "--mode", "pixelate", "--margin", "4", "--masks-out", str(masks)])
    assert r.exit_code == 0, r.output
    assert out.exists() and len(json.loads((masks / "masks.json").read_text())["masks"]) == 10
    bad = [
        (["--point", "9999,5"], "outside"),
        (["--point", "5,5,99"], "does not exist"),
        (["--point", "5"], "X,Y"),
        (["--negative", "5,5,0"], "--point"),
        (["--point", "5,5", "--mode", "sparkle"], "Unknown mode"),
    ]
    for args, message in bad:
        r = runner.invoke(app, ["process", str(clip), "-o", str(tmp_path / "x.mp4"), *args])
        assert r.exit_code != 0 and message in r.output, (args, r.output)
    r = runner.invoke(app, ["process", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "x.mp4"), "--point", "1,1"])
    assert r.exit_code == 1 and "does not exist" in r.output
