"""The web page in a real headless Chromium (Debian's package, driven by playwright-core from
web/node_modules; no browser is downloaded) against the real embedded stack: the whole journey
from sign-in and upload to download and deletion, a refused upload, a failed job.

Screenshots go to test-artifacts/web/. The node side is tests/browser/journey.mjs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from tapmask.samples import make_sample_clip, sample_object_center
from tapmask.settings import Settings
from tapmask.storage import s3_client

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("TAPMASK_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "web"
W, H, FPS, SECONDS = 480, 270, 25, 2.0
CLICK_FRAME = 12


@pytest.fixture(scope="module")
def web_url(api_url: str) -> str:
    """The stack's API, serving the built page at "/"; skips only when Chromium is missing."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"{CHROMIUM} is missing and could not be installed (scripts/install-browser.sh installs Debian's chromium as root)")
    if shutil.which("node") is None:
        pytest.fail("Node.js is missing: the web page can neither be built nor driven (install Node.js >= 20.19, then bash scripts/build-web.sh)")
    if not (ROOT / "web" / "node_modules" / "playwright-core").is_dir() or not (ROOT / "web" / "dist" / "index.html").is_file():
        pytest.fail("the web page is not built: run bash scripts/build-web.sh (scripts/install.sh does)")
    if _dist_is_stale():
        # Test the page as it is in web/src, not an older build (the API reads web/dist per request).
        build = subprocess.run(["bash", str(ROOT / "scripts" / "build-web.sh")], cwd=ROOT, capture_output=True, text=True)
        assert build.returncode == 0 and not _dist_is_stale(), "rebuilding the stale web page failed:\n" + build.stdout[-2000:] + build.stderr[-2000:]
    page = httpx.get(f"{api_url}/", timeout=10)
    assert page.status_code == 200 and 'id="root"' in page.text, "the API does not serve web/dist at / (was it built before the stack started?)"
    return api_url


def _dist_is_stale() -> bool:
    """Whether a source of the web page changed after web/dist was built."""
    web = ROOT / "web"
    built = (web / "dist" / "index.html").stat().st_mtime
    sources = [*(web / "src").rglob("*"), *(web / n for n in ("index.html", "package.json", "package-lock.json", "tsconfig.json", "vite.config.ts"))]
    return any(p.is_file() and p.stat().st_mtime > built for p in sources)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_clip(tmp_path_factory.mktemp("web-clips") / "street-corner.mp4", seconds=SECONDS, width=W, height=H, fps=FPS)


def drive(scenario: str, web_url: str, clip: Path, tmp_path: Path, on_need: Any = None) -> dict[str, Any]:
    """Run one scenario of journey.mjs; answer its NEED requests; return its RESULT."""
    x, y = sample_object_center(CLICK_FRAME, W, H, FPS)
    text_file = tmp_path / "holiday.mp4"
    text_file.write_text("this is a text file renamed .mp4\n" * 50)
    cfg = {
        "baseUrl": web_url, "outDir": str(ARTIFACTS), "chromium": CHROMIUM, "clip": str(clip), "textFile": str(text_file),
        "fps": FPS, "width": W, "height": H, "frames": round(SECONDS * FPS),
        "click": {"frame": CLICK_FRAME, "x": round(x, 1), "y": round(y, 1)},
        "user": f"web-{scenario}-{uuid.uuid4().hex[:6]}",
    }
    proc = subprocess.Popen(
        ["node", str(ROOT / "tests" / "browser" / "journey.mjs"), scenario, json.dumps(cfg)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
    )
    assert proc.stdout is not None and proc.stdin is not None
    lines: list[str] = []
    result: dict[str, Any] = {}
    try:
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            if line.startswith("NEED ") and on_need is not None:
                proc.stdin.write(on_need(*line.split()[1:]) + "\n")
                proc.stdin.flush()
            elif line.startswith("RESULT "):
                result = json.loads(line[len("RESULT "):])
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print("\n".join(lines[-60:]))
    assert result, "the browser script gave no result:\n" + "\n".join(lines[-40:])
    assert proc.returncode == 0 and not result.get("error"), f"{result.get('error')}\nchecks: {result.get('checks')}"
    return result


def test_whole_journey_from_upload_to_download(web_url: str, clip: Path, tmp_path: Path) -> None:
    result = drive("journey", web_url, clip, tmp_path)
    assert all(c["ok"] for c in result["checks"]) and len(result["checks"]) >= 25
    assert result["masks"] == "zip", f"the masks did not download as a zip: {result['masks']}"
    with av.open(result["downloadedVideo"]) as out:
        stream = out.streams.video[0]
        frames = sum(1 for _ in out.decode(video=0))
        assert (stream.width, stream.height, frames) == (W, H, round(SECONDS * FPS))
    assert not [e for e in result["consoleErrors"] if "favicon" not in e], result["consoleErrors"]
    assert all(Path(s).is_file() for s in result["screenshots"])


def test_a_text_file_renamed_mp4_is_refused_in_words(web_url: str, clip: Path, tmp_path: Path) -> None:
    result = drive("rejected", web_url, clip, tmp_path)
    assert any("shown in words" in c["what"] and c["ok"] for c in result["checks"])


def test_a_failed_job_is_shown_with_its_reason(web_url: str, clip: Path, tmp_path: Path, stack_settings: Settings) -> None:
    s3 = s3_client(stack_settings)

    def corrupt(what: str, video_id: str) -> str:
        assert what == "corrupt"
        listed = s3.list_objects_v2(Bucket=stack_settings.s3_bucket, Prefix=f"uploads/{video_id}/")
        keys = [o["Key"] for o in listed.get("Contents", [])]
        for key in keys:
            s3.put_object(Bucket=stack_settings.s3_bucket, Key=key, Body=b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 4096)
        return "OK" if keys else "NO-OBJECT"

    result = drive("failed", web_url, clip, tmp_path, on_need=corrupt)
    assert result["reason"], result


def test_front_end_unit_tests() -> None:
    """The page's pure logic (frame timing, click mapping under rotation, options) with Vitest."""
    if shutil.which("node") is None or not (ROOT / "web" / "node_modules" / "vitest").is_dir():
        pytest.fail("web/node_modules is missing: run bash scripts/build-web.sh (scripts/install.sh does)")
    run = subprocess.run(["node", "node_modules/vitest/vitest.mjs", "run"], cwd=ROOT / "web", capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
