"""Every setting is documented in the README's configuration table."""

from __future__ import annotations

from pathlib import Path

from tapmask.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    missing = [f"TAPMASK_{name.upper()}" for name in Settings.model_fields if f"`TAPMASK_{name.upper()}`" not in README]
    assert not missing, f"document these in README.md's Configuration table: {missing}"


def test_the_readme_names_no_setting_that_does_not_exist() -> None:
    import re

    known = {f"TAPMASK_{name.upper()}" for name in Settings.model_fields}
    # Variables read outside Settings (tests and tools) are allowed when listed here.
    extra = {"TAPMASK_TOPICS_FILE"}
    named = set(re.findall(r"`(TAPMASK_[A-Z0-9_]+)`", README))
    assert named <= known | extra, sorted(named - known - extra)
