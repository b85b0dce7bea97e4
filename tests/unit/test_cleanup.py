"""Background cleanup: the exact flat key, the real u2netp model on a real photo, warnings and concurrency."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image, ImageDraw
from skimage import data as skdata

from bot.imaging.cleanup import BackgroundRemover, CleanupResult, flat_key, preview
from bot.imaging.intake import ImageRefusedError
from bot.imaging.model_files import model_file

if TYPE_CHECKING:
    from rembg.sessions.base import BaseSession

REPO = Path(__file__).resolve().parents[2]


def real_models_dir() -> Path:
    """The directory holding the real u2netp model; a missing model fails the test (never skips)."""
    models_dir = Path(os.environ.get("LIKENESS_TEST_MODELS_DIR", REPO / ".venv" / "models"))
    path = model_file("u2netp", models_dir)
    if not path.is_file():
        pytest.fail(
            f"The real u2netp model is missing at {path}. Run `make test` (it installs it), or "
            f"`likeness models install u2netp` / `python -m bot.imaging.model_files install u2netp --dir {models_dir}`, "
            "and set LIKENESS_TEST_MODELS_DIR to that directory."
        )
    return models_dir


@pytest.fixture(scope="module")
def remover() -> Iterator[BackgroundRemover]:
    remover = BackgroundRemover("u2netp", real_models_dir())
    yield remover
    remover.close()


@pytest.fixture
def no_model(tmp_path: Path) -> Iterator[BackgroundRemover]:
    remover = BackgroundRemover("u2netp", tmp_path / "empty-models")
    yield remover
    remover.close()


def flat_render(background: tuple[int, int, int] = (244, 244, 244), size: tuple[int, int] = (800, 1000)) -> Image.Image:
    """A clean render: a character-ish figure (several flat colours, hard edges) on a flat background."""
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    draw.ellipse((330, 120, 470, 260), fill=(236, 188, 150))  # head
    draw.rectangle((300, 260, 500, 620), fill=(180, 30, 40))  # coat
    draw.rectangle((390, 300, 410, 600), fill=(250, 250, 250))  # a white stripe inside: like the background
    draw.rectangle((320, 620, 390, 900), fill=(30, 40, 90))  # legs
    draw.rectangle((410, 620, 480, 900), fill=(30, 40, 90))
    return image


def subject_mask(image: Image.Image, background: tuple[int, int, int]) -> np.ndarray:
    return (np.asarray(image) != np.array(background, dtype=np.uint8)).any(axis=2)


# ---------------------------------------------------------------------------------------------------- flat key


def test_flat_key_is_exact_on_a_clean_render(no_model: BackgroundRemover) -> None:
    background = (244, 244, 244)
    image = flat_render(background)
    result = no_model.cleanup_sync(image)  # no model installed: the fast path needs none
    assert (result.method, result.model) == ("flat-key", None)
    left, top, right, bottom = result.crop_box
    source = np.asarray(image)[top:bottom, left:right]
    subject = subject_mask(image, background)[top:bottom, left:right]
    cutout = np.asarray(result.cutout)
    assert result.cutout.mode == "RGBA" and result.white.mode == "RGB"
    assert (cutout[~subject, 3] == 0).all()  # background fully transparent
    assert (cutout[subject, 3] == 255).all()  # subject fully opaque...
    assert (cutout[subject, :3] == source[subject]).all()  # ...and untouched, the white stripe included
    white = np.asarray(result.white)
    assert (white[~subject] == 255).all()
    assert (white[subject] == source[subject]).all()


def test_flat_key_crops_to_the_subject_with_a_margin() -> None:
    result = flat_key_result(flat_render())
    left, top, right, bottom = result.crop_box
    assert (left, top) < (300, 120) and right > 500 and bottom > 900
    assert 300 - left <= 60 and right - 500 <= 60  # a margin, not the whole frame
    assert result.cutout.size == result.white.size == (right - left, bottom - top)
    assert result.warnings == []


def flat_key_result(image: Image.Image) -> CleanupResult:
    remover = BackgroundRemover("u2netp", Path("/nonexistent"))
    try:
        return remover.cleanup_sync(image)
    finally:
        remover.close()


def test_flat_key_has_soft_edges_on_antialiased_art() -> None:
    big = Image.new("RGB", (2400, 2400), (250, 250, 250))
    ImageDraw.Draw(big).ellipse((600, 300, 1800, 2100), fill=(20, 20, 20))
    art = big.resize((600, 600), Image.Resampling.BOX)  # 4x supersampled: real antialiased edges
    keyed = flat_key(art)
    assert keyed is not None
    colours, alpha = keyed
    grey = np.asarray(art)[:, :, 0].astype(int)
    partial = (grey > 60) & (grey < 230)  # pixels mostly background
    assert partial.sum() > 100
    assert ((alpha[partial] > 0) & (alpha[partial] < 255)).mean() > 0.9  # soft, not a hard cut
    assert np.abs(colours[partial][:, 0].astype(int) - 20).max() <= 40  # the background's tint is un-mixed


def test_flat_key_tolerates_jpeg_noise() -> None:
    rng = np.random.default_rng(3)
    image = np.asarray(flat_render()).astype(np.int16) + rng.integers(-5, 6, (1000, 800, 3))
    noisy = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    result = flat_key_result(noisy)
    assert result.method == "flat-key"
    alpha = np.asarray(result.cutout)[:, :, 3]
    assert (alpha[:10] == 0).all()  # the margin above the head is background


def test_a_transparent_upload_keeps_its_own_alpha() -> None:
    image = Image.new("RGBA", (600, 600), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((150, 150, 450, 450), fill=(10, 200, 90, 255))
    result = flat_key_result(image)
    assert result.method == "flat-key"
    assert result.cutout.getpixel((result.cutout.width // 2, result.cutout.height // 2)) == (10, 200, 90, 255)
    assert result.cutout.getpixel((0, 0)) == (0, 0, 0, 0)


def test_busy_background_without_model_is_refused(no_model: BackgroundRemover) -> None:
    assert not no_model.model_available()
    with pytest.raises(ImageRefusedError) as caught:
        no_model.cleanup_sync(Image.fromarray(skdata.coffee()))
    assert str(caught.value) == (
        "The background of this picture is too busy for me to remove without the background-removal model, "
        "which isn't installed on this bot. Please upload the character on a plain background (one flat colour), "
        "or ask an admin to install the model (`likeness models install u2netp`)."
    )


# ---------------------------------------------------------------------------------------------------- warnings


def test_tiny_subject_warns() -> None:
    image = Image.new("RGB", (1000, 1000), (255, 255, 255))
    ImageDraw.Draw(image).rectangle((480, 450, 530, 560), fill=(200, 30, 30))
    result = flat_key_result(image)
    assert result.warnings == [
        "The character fills only about 0.6% of the picture, so the cut-out is small and will look blurry. "
        "A closer shot where the character fills more of the frame works better."
    ]


def test_subject_touching_the_frame_warns() -> None:
    image = Image.new("RGB", (800, 800), (255, 255, 255))
    ImageDraw.Draw(image).rectangle((300, 200, 500, 799), fill=(30, 30, 200))  # feet cut by the bottom edge
    result = flat_key_result(image)
    assert result.warnings == [
        "The character touches the bottom edge of the picture, so part of it may be cut off. "
        "A picture with a little space around the whole character works best."
    ]


def test_empty_cutout_warns() -> None:
    result = flat_key_result(Image.new("RGB", (500, 500), (90, 90, 90)))
    assert result.warnings == [
        "I couldn't find a character in this picture: the cut-out came out empty. Please try a picture where the "
        "character is large and stands out clearly from the background."
    ]
    assert result.crop_box == (0, 0, 500, 500)


# ---------------------------------------------------------------------------------------------------- the real model


def test_real_u2netp_keeps_the_astronaut_and_whitens_the_background(remover: BackgroundRemover) -> None:
    photo = Image.fromarray(skdata.astronaut())  # 512x512: a person in front of a flag and a shuttle model
    result = remover.cleanup_sync(photo)
    assert (result.method, result.model) == ("model", "u2netp")
    left, top, _right, _bottom = result.crop_box
    white = np.asarray(result.white).astype(int)
    source = np.asarray(photo).astype(int)

    def region(array: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        return array[y0 - top : y1 - top, x0 - left : x1 - left]

    alpha = np.asarray(result.cutout)[:, :, 3]
    face, suit = (180, 80, 260, 170), (100, 300, 200, 420)
    for box in (face, suit):
        assert region(alpha, *box).mean() > 240  # the subject is kept...
        x0, y0, x1, y1 = box
        assert np.abs(region(white, *box) - source[y0:y1, x0:x1]).mean() < 6  # ...with its own colours
    shuttle_background = (400, 20, 500, 100)  # the grey studio backdrop, top right
    assert region(alpha, *shuttle_background).mean() < 20
    assert region(white, *shuttle_background).mean() > 240  # now white
    assert result.warnings  # she is cut by the bottom and side edges of the photo
    assert "touches the" in result.warnings[-1]


def test_session_is_created_once_under_concurrent_first_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.imaging import cleanup

    target = model_file("u2netp", tmp_path)
    target.parent.mkdir(parents=True)
    shutil.copyfile(model_file("u2netp", real_models_dir()), target)
    monkeypatch.setattr(cleanup, "_sessions", {})
    created: list[Path] = []
    real_create = cleanup._create_session

    def slow_create(model_name: str, path: Path) -> BaseSession:
        created.append(path)
        time.sleep(0.05)  # widen the race window
        return real_create(model_name, path)

    monkeypatch.setattr(cleanup, "_create_session", slow_create)
    with ThreadPoolExecutor(max_workers=4) as pool:
        shared = list(pool.map(lambda _: cleanup.shared_session("u2netp", target), range(4)))
    assert created == [target.resolve()]
    assert all(model is shared[0] for model in shared)
    first, second = BackgroundRemover("u2netp", tmp_path), BackgroundRemover("u2netp", tmp_path, max_workers=1)
    try:
        first.cleanup_sync(Image.fromarray(skdata.chelsea()))
        second.cleanup_sync(Image.fromarray(skdata.chelsea()))
    finally:
        first.close()
        second.close()
    assert len(created) == 1  # both removers used the one session


async def test_cleanup_runs_off_the_event_loop(remover: BackgroundRemover, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a cleanup works, the event loop keeps running (it is in a worker thread, not on the loop)."""
    photos = [Image.fromarray(image) for image in (skdata.astronaut(), skdata.coffee(), skdata.chelsea())]
    beat = threading.Event()
    stop = asyncio.Event()
    threads: list[int] = []
    loop_ran_meanwhile: list[bool] = []
    real = remover.cleanup_sync

    def watched(image: Image.Image) -> CleanupResult:
        threads.append(threading.get_ident())
        beat.clear()
        loop_ran_meanwhile.append(beat.wait(timeout=10))  # on the loop's own thread this could never come
        return real(image)

    async def heartbeat() -> None:
        while not stop.is_set():
            beat.set()
            await asyncio.sleep(0.005)

    monkeypatch.setattr(remover, "cleanup_sync", watched)
    ticking = asyncio.create_task(heartbeat())
    results = await asyncio.gather(*(remover.cleanup(photo) for photo in photos + photos[:1]))
    stop.set()
    await ticking
    assert [result.method for result in results] == ["model"] * 4
    assert loop_ran_meanwhile == [True] * 4
    assert threading.get_ident() not in threads


def test_preview_is_side_by_side_and_bounded() -> None:
    image = flat_render()
    result = flat_key_result(image)
    picture = preview(image, result)
    assert picture.mode == "RGB"
    assert picture.width <= 1024
    pixels = np.asarray(picture)
    half = picture.width // 2
    # Left: the original's grey backdrop; right: a checkerboard where the background was removed.
    left_panel, right_panel = pixels[60:, :half], pixels[60:, half:]
    assert ((left_panel == 244).all(axis=2)).sum() > 10_000
    assert ((right_panel == 232).all(axis=2)).sum() > 5_000
    assert ((right_panel == (180, 30, 40)).all(axis=2)).sum() > 1_000  # the coat is on the right too


def test_a_corrupt_model_file_is_an_admin_error(tmp_path: Path) -> None:
    from bot.imaging.model_files import ModelError

    path = model_file("u2netp", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not an onnx model")
    remover = BackgroundRemover("u2netp", tmp_path)
    try:
        assert remover.model_available()
        with pytest.raises(ModelError, match=r"could not be loaded .*likeness models install u2netp"):
            remover.cleanup_sync(Image.fromarray(skdata.coffee()))
    finally:
        remover.close()


async def test_warm_up_loads_the_model_only_when_installed(remover: BackgroundRemover, tmp_path: Path) -> None:
    assert await remover.warm_up() is True
    empty = BackgroundRemover("u2netp", tmp_path)
    try:
        assert await empty.warm_up() is False
    finally:
        empty.close()


def test_hidden_colour_under_transparency_does_not_resurface() -> None:
    # Semi-used alpha (not a cut-out): keyed as if shown over white, not by the colours hiding underneath.
    pixels = np.zeros((600, 600, 4), dtype=np.uint8)
    pixels[:, :] = (255, 0, 255, 0)  # magenta, fully transparent
    pixels[:, :300, 3] = 255
    pixels[:, :300, :3] = 255  # the left half opaque white
    pixels[200:400, 200:400] = (20, 60, 200, 255)  # an opaque blue square across both halves
    result = flat_key_result(Image.fromarray(pixels))
    white = np.asarray(result.white)
    assert not ((white == (255, 0, 255)).all(axis=2)).any()
