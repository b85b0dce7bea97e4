"""The local renderer's clips and the video utilities: real H.264 MP4s, decoded back with PyAV and checked."""

from __future__ import annotations

import io
import itertools
import os
import tempfile
from fractions import Fraction
from functools import cache

import av
import numpy as np
import pytest
from PIL import Image

from bot.imaging import video
from tests.support.figures import BLUE, GREEN, RED, figure

FPS = 24


def three_views() -> list[Image.Image]:
    return [figure(RED), figure(GREEN, width=180), figure(BLUE, width=110)]


@cache
def rendered(camera: str, size: tuple[int, int] = (1280, 720), duration: float = 5.0, caption: str = "") -> bytes:
    """Clips are deterministic: render each combination once for the whole module."""
    return video.render_camera_move(
        three_views(), duration=duration, camera=camera, caption=caption, size=size, fps=FPS
    )


def frames(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data), "r") as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def colour_share(frame: np.ndarray, colour: tuple[int, int, int]) -> float:
    """Share of the frame's pixels close to `colour`."""
    return float((np.abs(frame.astype(int) - colour).max(axis=2) < 40).mean())


def difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


# ---------------------------------------------------------------------------------------------------------------
# render_camera_move


@pytest.mark.parametrize("size", [(1280, 720), (720, 1280), (720, 720)])
def test_clip_is_h264_mp4_of_the_exact_size_and_duration(size: tuple[int, int]) -> None:
    data = rendered("orbit", size, caption="Aurora turns around")

    info = video.probe(data)
    assert (info.width, info.height) == size
    assert info.codec == "h264"
    assert info.frames == 5 * FPS
    assert info.fps == pytest.approx(FPS)
    assert info.duration == pytest.approx(5.0, abs=1 / FPS)
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert container.format.name.startswith("mov,mp4")
    assert len(frames(data)) == 5 * FPS
    assert data.find(b"moov") < data.find(b"mdat"), "the index must come first (faststart)"


def test_frame_count_is_rounded_duration_times_fps() -> None:
    data = video.render_camera_move(three_views(), duration=1.3, camera="pan_right", caption="", fps=10)
    info = video.probe(data)
    assert info.frames == 13
    assert len(frames(data)) == 13
    assert info.duration == pytest.approx(1.3, abs=0.1)


@pytest.mark.parametrize("camera", ["push_in", "pull_out", "pan_left", "pan_right", "orbit"])
def test_moving_cameras_move(camera: str) -> None:
    decoded = frames(rendered(camera, duration=2.0))
    first, middle, last = decoded[0], decoded[len(decoded) // 2], decoded[-1]
    assert difference(first, last) > 3
    assert difference(first, middle) > 1 and difference(middle, last) > 1, "the move is gradual"
    steps = [difference(a, b) for a, b in itertools.pairwise(decoded)]
    assert max(steps) < 25, "no frame jumps"


def test_static_camera_holds_still() -> None:
    decoded = frames(rendered("static", duration=2.0))
    assert difference(decoded[0], decoded[-1]) < 0.5
    assert all(colour_share(decoded[0], colour) > 0.005 for colour in (RED, GREEN, BLUE)), "every view is visible"


def test_push_in_closes_in_on_the_front_view_and_pull_out_reverses_it() -> None:
    push = frames(rendered("push_in", duration=2.0))
    pull = frames(rendered("pull_out", duration=2.0))
    assert colour_share(push[-1], RED) > 1.8 * colour_share(push[0], RED)
    assert difference(push[0], pull[-1]) < 2 and difference(push[-1], pull[0]) < 2


def centre_colour(frame: np.ndarray) -> tuple[int, int, int] | None:
    """Which of the figures' colours fills the frame's central column, if any."""
    width = frame.shape[1]
    column = frame[:, width // 2 - 20 : width // 2 + 20]
    shares = {colour: colour_share(column, colour) for colour in (RED, GREEN, BLUE)}
    best = max(shares, key=lambda colour: shares[colour])
    return best if shares[best] > 0.05 else None


def test_pans_travel_along_the_views_from_or_to_the_front() -> None:
    right = frames(rendered("pan_right", duration=2.0))
    left = frames(rendered("pan_left", duration=2.0))
    assert centre_colour(right[0]) == RED and centre_colour(right[-1]) == BLUE
    assert centre_colour(left[0]) == BLUE and centre_colour(left[-1]) == RED


def test_orbit_goes_through_the_views_in_order() -> None:
    decoded = frames(rendered("orbit", duration=2.0))
    seen = [centre_colour(frame) for frame in decoded]
    held = [colour for colour in seen if colour is not None]
    order = [colour for index, colour in enumerate(held) if index == 0 or held[index - 1] != colour]
    assert order[0] == RED and order[-1] == BLUE
    assert order.index(RED) < order.index(GREEN) < order.index(BLUE)


@pytest.mark.parametrize("camera", video.CAMERAS)
def test_a_single_view_works_with_every_camera(camera: str) -> None:
    data = video.render_camera_move([figure(RED)], duration=1.0, camera=camera, caption="solo", fps=12)
    decoded = frames(data)
    assert len(decoded) == 12
    assert colour_share(decoded[0], RED) > 0.01
    if camera != "static":
        assert difference(decoded[0], decoded[-1]) > 1


def band_rows(frame: np.ndarray) -> int:
    """How many rows at the bottom are darkened (the caption band)."""
    rows = 0
    for row in frame[::-1]:
        if row.mean() > 200:
            break
        rows += 1
    return rows


def test_caption_band_sits_at_the_bottom_with_readable_text() -> None:
    with_caption = frames(rendered("static", duration=1.0, caption="Aurora waves at the crowd"))[0]
    without = frames(rendered("static", duration=1.0))[0]
    assert band_rows(without) == 0
    height = band_rows(with_caption)
    assert 0.05 * 720 < height < 0.2 * 720
    band = with_caption[-height:]
    assert band.mean() < 170, "the band darkens the stage"
    assert (band.min(axis=2) > 220).mean() > 0.005, "light text on the band"
    assert with_caption[: 720 // 3].mean() > 200, "the rest of the stage stays white and light"


def test_long_captions_wrap_to_two_lines_then_ellipsize() -> None:
    short = band_rows(frames(rendered("static", duration=1.0, caption="Waves"))[0])
    long = band_rows(frames(rendered("static", duration=1.0, caption="She waves at the crowd and smiles " * 4))[0])
    huge = band_rows(frames(rendered("static", duration=1.0, caption="She waves at the crowd and smiles " * 40))[0])
    assert short < long == huge


def test_render_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least one image"):
        video.render_camera_move([], duration=5, camera="static", caption="")
    with pytest.raises(ValueError, match="unknown camera"):
        video.render_camera_move([figure(RED)], duration=5, camera="dolly_zoom", caption="")
    with pytest.raises(ValueError, match="at least one frame"):
        video.render_camera_move([figure(RED)], duration=0.01, camera="static", caption="")


def test_progress_is_reported_and_an_exception_from_it_aborts() -> None:
    seen: list[float] = []
    video.render_camera_move([figure(RED)], duration=1.0, camera="pan_left", caption="", fps=10, progress=seen.append)
    assert seen == sorted(seen) and len(seen) == 10 and seen[-1] == pytest.approx(1.0)

    class Stop(Exception):
        pass

    def stop_at_half(fraction: float) -> None:
        if fraction >= 0.5:
            raise Stop

    with pytest.raises(Stop):
        video.render_camera_move([figure(RED)], duration=1.0, camera="orbit", caption="", fps=10, progress=stop_at_half)


# ---------------------------------------------------------------------------------------------------------------
# probe, thumbnail


def test_probe_refuses_what_is_not_a_video() -> None:
    with pytest.raises(video.VideoError):
        video.probe(b"definitely not a video")
    with pytest.raises(video.VideoError):
        video.probe(rendered("static", duration=1.0)[:600])  # cut inside the index
    with pytest.raises(video.VideoError):
        video.thumbnail(b"\x00" * 5000)


def test_thumbnail_is_a_small_jpeg_of_the_middle_frame() -> None:
    data = rendered("pan_right", duration=2.0)
    jpeg = video.thumbnail(data, max_side=320)
    assert jpeg[:3] == b"\xff\xd8\xff"
    image = Image.open(io.BytesIO(jpeg))
    assert (
        image.format == "JPEG"
        and max(image.size) == 320
        and image.size[0] / image.size[1] == pytest.approx(16 / 9, 0.02)
    )

    decoded = frames(data)
    thumb = np.asarray(image.convert("RGB").resize((1280, 720)))
    middle, first = decoded[len(decoded) // 2], decoded[0]
    assert difference(thumb, middle) < difference(thumb, first) / 2


# ---------------------------------------------------------------------------------------------------------------
# fit_to_size


def test_a_clip_that_fits_comes_back_unchanged() -> None:
    data = rendered("push_in")
    assert video.fit_to_size(data, len(data) + 1) is data


def test_fit_to_size_lowers_the_bitrate_first() -> None:
    data = rendered("push_in")
    limit = int(len(data) * 0.7)
    smaller = video.fit_to_size(data, limit)
    assert smaller is not None and len(smaller) <= limit
    info = video.probe(smaller)
    assert (info.width, info.height) == (1280, 720)
    assert info.duration == pytest.approx(5.0, abs=1 / FPS) and info.frames == 5 * FPS
    assert len(frames(smaller)) == 5 * FPS


def test_fit_to_size_then_lowers_the_resolution_keeping_the_aspect() -> None:
    data = rendered("push_in", (720, 1280))
    limit = int(len(data) * 0.3)
    smaller = video.fit_to_size(data, limit)
    assert smaller is not None and len(smaller) <= limit
    info = video.probe(smaller)
    assert info.width < 720 and info.width / info.height == pytest.approx(720 / 1280, abs=0.01)
    assert info.width in (540, 360)
    assert info.duration == pytest.approx(5.0, abs=1 / FPS)
    assert len(frames(smaller)) == 5 * FPS


def test_fit_to_size_gives_up_on_an_impossible_limit() -> None:
    assert video.fit_to_size(rendered("push_in"), 10_000) is None


def noisy_clip_with_audio(seconds: int = 2, size: tuple[int, int] = (320, 240)) -> bytes:
    """Random pixels (incompressible) and a tone: a clip far bigger than its limit, with sound to keep."""
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "noise.mp4")
        with av.open(path, "w", format="mp4") as container:
            picture = container.add_stream("libx264", rate=FPS, options={"preset": "ultrafast", "crf": "10"})
            picture.width, picture.height, picture.pix_fmt = size[0], size[1], "yuv420p"
            sound = container.add_stream("aac", rate=48_000, layout="mono")
            for index in range(seconds * FPS):
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                frame.pts, frame.time_base = index, Fraction(1, FPS)
                container.mux(picture.encode(frame))
            for start in range(0, seconds * 48_000, 1024):
                tone = np.sin(2 * np.pi * 440 * np.arange(start, start + 1024) / 48_000).astype(np.float32)
                chunk = av.AudioFrame.from_ndarray(tone[None, :], format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts, chunk.time_base = 48_000, start, Fraction(1, 48_000)
                container.mux(sound.encode(chunk))
            container.mux(picture.encode(None))
            container.mux(sound.encode(None))
        with open(path, "rb") as file:
            return file.read()


def test_fit_to_size_keeps_the_sound() -> None:
    data = noisy_clip_with_audio()
    limit = len(data) // 4
    smaller = video.fit_to_size(data, limit)
    assert smaller is not None and len(smaller) <= limit
    info = video.probe(smaller)
    assert info.has_audio and info.duration == pytest.approx(2.0, abs=1 / FPS)
    with av.open(io.BytesIO(smaller), "r") as container:
        audio = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(audio))
    assert samples / 48_000 == pytest.approx(2.0, abs=0.1)
