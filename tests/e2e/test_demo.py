"""`likeness demo` runs the whole pipeline offline, with no Discord token at all."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from bot.imaging.video import probe
from tests.support.cli import run_likeness


def test_demo_writes_previews_a_sheet_and_a_clip_without_a_token(tmp_path: Path) -> None:
    result = run_likeness(tmp_path, "demo", "--out", "out")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "back-before-after.png",
        "face-before-after.png",
        "front-before-after.png",
        "mira-sheet.png",
        "mira-shot.mp4",
        "side-before-after.png",
        "three_quarter-before-after.png",
    ]
    assert Image.open(io.BytesIO((out / "mira-sheet.png").read_bytes())).size == (1920, 1080)
    info = probe((out / "mira-shot.mp4").read_bytes())
    assert (info.width, info.height) == (1280, 720) and abs(info.duration - 5.0) < 0.1
    assert "wrote out/mira-shot.mp4" in result.stdout
    assert not (tmp_path / "data").exists()  # the demo leaves no database behind
