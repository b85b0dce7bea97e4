"""`likeness cleanup IN OUT`: the admin's check of an image, with the same intake and cleanup as uploads."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tests.support import imaging_corpus as corpus
from tests.support.bot_runner import installed_models_dir
from tests.support.cli import run_likeness


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_likeness(tmp_path, "cleanup", *args, env={"LIKENESS_MODELS_DIR": str(installed_models_dir())})


def test_flat_background_render_is_keyed_and_written(tmp_path: Path) -> None:
    image = Image.new("RGB", (600, 800), (0, 200, 0))  # a green-screen render
    ImageDraw.Draw(image).rectangle((200, 200, 400, 600), fill=(200, 30, 30))
    image.save(tmp_path / "in.png")
    result = run_cli(tmp_path, "in.png", "out/clean.png", "--view", "side")
    assert result.returncode == 0, result.stderr
    assert "as the side view: PNG 600x800" in result.stdout
    assert "cleanup: fast path (flat background keyed out)" in result.stdout
    assert "crop box (left, top, right, bottom): (" in result.stdout
    clean = np.asarray(Image.open(tmp_path / "out" / "clean.png").convert("RGB")).astype(int)
    assert (clean[0, 0] == 255).all()  # the green became white
    middle = clean[clean.shape[0] // 2, clean.shape[1] // 2]
    assert abs(middle[0] - 200) <= 2 and middle[1] <= 32  # the subject is untouched
    cutout = Image.open(tmp_path / "out" / "clean-cutout.png")
    assert cutout.mode == "RGBA" and cutout.getpixel((0, 0))[3] == 0  # type: ignore[index]


def test_refused_file_prints_the_members_message_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "tiny.png").write_bytes(corpus.small_png())
    result = run_cli(tmp_path, "tiny.png", "out.png")
    assert result.returncode == 2
    assert "Refused (a member would see this): This image is" in result.stderr
    assert "100" in result.stderr and "300" in result.stderr
    assert not (tmp_path / "out.png").exists()


def test_busy_photo_uses_the_model(tmp_path: Path) -> None:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, "JPEG", quality=90)
    (tmp_path / "astronaut.jpg").write_bytes(buffer.getvalue())
    result = run_cli(tmp_path, "astronaut.jpg", "clean.png", "--view", "face")
    assert result.returncode == 0, result.stderr
    assert "cleanup: model u2netp" in result.stdout
    assert "warning: " in result.stdout  # the astronaut touches the frame edges
