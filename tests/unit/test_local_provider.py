"""The local provider as the worker drives it: submit, poll, fetch, idempotency, restarts, concurrency, cancel."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from bot.domain import Money, WorkKind
from bot.imaging import video
from bot.providers.base import (
    FinalError,
    PollResult,
    Provider,
    ReferenceImage,
    RenderRequest,
    RetryableError,
    Submission,
    TaskStatus,
)
from bot.providers.local import LocalProvider, task_id_for
from tests.support.figures import BLUE, GREEN, RED, figure

DONE = {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELED}


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def jpeg_on_white(image: Image.Image) -> bytes:
    """A view as providers get it: the cut-out flattened on white, as JPEG."""
    flat = Image.new("RGB", image.size, (255, 255, 255))
    flat.paste(image, (0, 0), image)
    buffer = io.BytesIO()
    flat.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


VIEWS = (
    ReferenceImage("front", "view", png(figure(RED)), "image/png"),
    ReferenceImage("three_quarter", "view", png(figure(GREEN, width=180)), "image/png"),
    ReferenceImage("side", "view", png(figure(BLUE, width=110)), "image/png"),
)


def request(job_id: int, **changes: Any) -> RenderRequest:
    base = RenderRequest(
        job_id=job_id,
        kind=WorkKind.ANIMATE,
        model="local-v1",
        prompt="Aurora waves at the crowd",
        negative_prompt="blurry, extra limbs",
        duration=5,
        aspect_ratio="16:9",
        camera="static",
        images=VIEWS,
        caption="waves at the crowd",
    )
    return replace(base, **changes)


class Renders:
    """Counts renders and how many run at once; `gate`, when cleared, holds every render before it starts."""

    def __init__(self) -> None:
        self.count = 0
        self.aborted = 0  # renders stopped by an exception (cancel, close)
        self.stopped = threading.Event()  # set when a render is aborted
        self.active = 0
        self.most_at_once = 0
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list[tuple[list[Image.Image], dict[str, Any]]] = []  # what each render was given
        self._lock = threading.Lock()

    def wrap(self, real: Callable[..., bytes]) -> Callable[..., bytes]:
        def render(frames_source: Sequence[Image.Image], **kwargs: Any) -> bytes:
            assert self.gate.wait(30)
            with self._lock:
                self.calls.append((list(frames_source), dict(kwargs)))
                self.count += 1
                self.active += 1
                self.most_at_once = max(self.most_at_once, self.active)
            try:
                time.sleep(0.05)  # widen the window in which an overlap would show
                return real(frames_source, **kwargs)
            except Exception:
                with self._lock:
                    self.aborted += 1
                self.stopped.set()
                raise
            finally:
                with self._lock:
                    self.active -= 1

        return render


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> Iterator[Renders]:
    counter = Renders()
    monkeypatch.setattr(video, "render_camera_move", counter.wrap(video.render_camera_move))
    yield counter
    counter.gate.set()


@pytest.fixture
async def providers(tmp_path: Path) -> AsyncIterator[Callable[..., LocalProvider]]:
    """Makes providers on one work dir (a new one = the bot restarted) and closes them all at the end."""
    made: list[LocalProvider] = []

    def make(**kwargs: Any) -> LocalProvider:
        provider = LocalProvider(tmp_path / "local", **kwargs)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.close()


async def wait_for(
    provider: LocalProvider, submission: Submission, statuses: set[TaskStatus] = DONE, within: float = 20
) -> tuple[PollResult, list[PollResult]]:
    """Poll like the worker until one of `statuses`; returns that result and every result seen on the way."""
    seen: list[PollResult] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = await provider.poll(submission)
        seen.append(result)
        if result.status in statuses:
            return result, seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"task {submission.task_id} still {seen[-1].status} after {within} s")


def output(tmp_path: Path, job_id: int) -> Path:
    return tmp_path / "local" / "tasks" / task_id_for(job_id) / "output.mp4"


async def test_it_is_a_provider_with_honest_capabilities(providers: Callable[..., LocalProvider]) -> None:
    provider = providers(max_concurrency=3)
    assert isinstance(provider, Provider)
    caps = provider.capabilities
    assert caps.name == "local" and not caps.needs_key and caps.max_concurrency == 3
    assert caps.kinds == frozenset({WorkKind.ANIMATE, WorkKind.SHEET}) and caps.default_model in caps.models
    assert caps.image_model == "local-sheet-v1"
    assert caps.default_row.durations == (5, 10) and caps.default_row.aspect_ratios == ("16:9", "9:16", "1:1")
    assert caps.default_row.max_subjects == 3 and caps.default_row.max_images >= 3
    assert provider.estimate_cost(request(1, duration=10)) == Money.from_usd("0")
    assert 0 < caps.typical_seconds < 10, "the worker's first poll comes soon after a local render"
    assert providers(delay=2.0).capabilities.typical_seconds > 2.0


async def test_submit_poll_fetch_gives_a_real_clip(providers: Callable[..., LocalProvider], renders: Renders) -> None:
    provider = providers(delay=0.3)
    submission = await provider.submit(request(1, camera="orbit"))
    assert submission.task_id == task_id_for(1)

    result, seen = await wait_for(provider, submission)
    assert result.status is TaskStatus.SUCCEEDED and result.error is None
    running = [poll.progress for poll in seen if poll.status is TaskStatus.RUNNING and poll.progress is not None]
    assert running and len(running) == sum(poll.status is TaskStatus.RUNNING for poll in seen)
    assert all(0 <= progress <= 1 for progress in running)
    assert running == sorted(running), "progress never goes back"

    (artifact,) = result.artifacts
    assert artifact.mime == "video/mp4" and artifact.duration == 5
    clip = await provider.fetch(artifact)
    info = video.probe(clip)
    assert (info.width, info.height, info.codec) == (1280, 720, "h264")
    assert info.duration == pytest.approx(5.0, abs=1 / 24)
    assert renders.count == 1


async def test_aspect_ratio_and_flattened_jpeg_references(providers: Callable[..., LocalProvider]) -> None:
    provider = providers()
    views = (ReferenceImage("front", "view", jpeg_on_white(figure(RED)), "image/jpeg"),)
    submission = await provider.submit(request(2, aspect_ratio="9:16", camera="pan_right", images=views))
    result, _seen = await wait_for(provider, submission)
    assert result.status is TaskStatus.SUCCEEDED
    info = video.probe(await provider.fetch(result.artifacts[0]))
    assert (info.width, info.height) == (720, 1280)


async def test_a_restart_finds_the_finished_task_without_rendering_again(
    providers: Callable[..., LocalProvider], renders: Renders
) -> None:
    before = providers()
    submission = await before.submit(request(3))
    result, _seen = await wait_for(before, submission)
    clip = await before.fetch(result.artifacts[0])
    await before.close()

    after = providers()
    assert await after.find(3) == submission
    assert await after.find(4) is None
    again = await after.poll(submission)
    assert again.status is TaskStatus.SUCCEEDED
    assert await after.fetch(again.artifacts[0]) == clip
    assert (await after.submit(request(3))) == submission
    await asyncio.sleep(0.2)
    assert (await after.poll(submission)).status is TaskStatus.SUCCEEDED
    assert renders.count == 1


async def test_a_task_closed_before_its_output_renders_again_after_restart(
    providers: Callable[..., LocalProvider], renders: Renders, tmp_path: Path
) -> None:
    before = providers(delay=30)
    submission = await before.submit(request(5))
    await wait_for(before, submission, {TaskStatus.RUNNING})
    started = time.monotonic()
    await before.close()
    assert time.monotonic() - started < 15, "close does not wait for the 30 s render"
    assert not output(tmp_path, 5).exists()
    assert (await before.poll(submission)).status is TaskStatus.QUEUED  # closed: nothing runs here any more
    with pytest.raises(RetryableError):
        await before.submit(request(6))

    after = providers()
    assert await after.find(5) == submission  # find notices nothing renders it and starts it again
    result, _seen = await wait_for(after, submission)
    assert result.status is TaskStatus.SUCCEEDED
    assert renders.count == 2


async def test_a_crash_before_the_output_renders_again_on_poll(
    providers: Callable[..., LocalProvider], renders: Renders, tmp_path: Path
) -> None:
    first = providers()
    submission = await first.submit(request(7))
    await wait_for(first, submission)
    await first.close()
    output(tmp_path, 7).unlink()  # as if the process died mid-render: request on disk, no output

    after = providers()
    result, _seen = await wait_for(after, submission)
    assert result.status is TaskStatus.SUCCEEDED
    assert video.probe(await after.fetch(result.artifacts[0])).frames == 120
    assert renders.count == 2
    leftovers = [path.name for path in output(tmp_path, 7).parent.iterdir() if path.name.endswith(".tmp")]
    assert leftovers == []


async def test_submitting_a_job_twice_makes_one_task(providers: Callable[..., LocalProvider], renders: Renders) -> None:
    provider = providers()
    first, second = await asyncio.gather(provider.submit(request(8)), provider.submit(request(8)))
    assert first == second
    await wait_for(provider, first)
    assert await provider.submit(request(8, prompt="something else")) == first
    await asyncio.sleep(0.2)
    assert renders.count == 1


@pytest.mark.parametrize("cap", [1, 2])
async def test_the_concurrency_cap_is_a_queue(
    providers: Callable[..., LocalProvider], renders: Renders, cap: int
) -> None:
    provider = providers(max_concurrency=cap)
    renders.gate.clear()  # hold the first renders so the rest must queue behind them
    submissions = [await provider.submit(request(job_id)) for job_id in (10, 11, 12)]
    await wait_for(provider, submissions[cap - 1], {TaskStatus.RUNNING})
    await asyncio.sleep(0.2)  # time enough for a task beyond the cap to start, were it allowed to
    statuses = [(await provider.poll(submission)).status for submission in submissions]
    assert statuses.count(TaskStatus.RUNNING) == cap
    assert statuses.count(TaskStatus.QUEUED) == 3 - cap
    renders.gate.set()
    results = [(await wait_for(provider, submission))[0] for submission in submissions]
    assert all(result.status is TaskStatus.SUCCEEDED for result in results)
    assert renders.count == 3 and renders.most_at_once == cap


async def test_cancel_a_queued_task(providers: Callable[..., LocalProvider], renders: Renders, tmp_path: Path) -> None:
    provider = providers(max_concurrency=1)
    renders.gate.clear()
    running = await provider.submit(request(20))
    queued = await provider.submit(request(21))
    await provider.cancel(queued)
    assert (await provider.poll(queued)).status is TaskStatus.CANCELED
    renders.gate.set()
    assert (await wait_for(provider, running))[0].status is TaskStatus.SUCCEEDED
    await asyncio.sleep(0.2)
    assert (await provider.poll(queued)).status is TaskStatus.CANCELED
    assert renders.count == 1 and not output(tmp_path, 21).exists()
    assert await provider.submit(request(21)) == queued  # still the same (canceled) task


async def test_cancel_a_running_task_stops_the_render(
    providers: Callable[..., LocalProvider], renders: Renders, tmp_path: Path
) -> None:
    provider = providers()
    renders.gate.clear()
    submission = await provider.submit(request(22, camera="orbit"))
    await wait_for(provider, submission, {TaskStatus.RUNNING})
    await provider.cancel(submission)
    assert (await provider.poll(submission)).status is TaskStatus.CANCELED
    renders.gate.set()
    assert await asyncio.to_thread(renders.stopped.wait, 10)
    assert renders.aborted == 1, "the render stops at its next frame"
    assert not output(tmp_path, 22).exists()

    after = providers()  # a restart does not bring it back
    assert await after.find(22) == submission
    assert (await after.poll(submission)).status is TaskStatus.CANCELED
    assert renders.count == 1


async def test_cancel_after_success_changes_nothing(providers: Callable[..., LocalProvider]) -> None:
    provider = providers()
    submission = await provider.submit(request(23))
    await wait_for(provider, submission)
    await provider.cancel(submission)
    assert (await provider.poll(submission)).status is TaskStatus.SUCCEEDED


async def test_a_corrupt_reference_fails_with_a_clear_final_error(
    providers: Callable[..., LocalProvider], renders: Renders
) -> None:
    provider = providers()
    broken = ReferenceImage("three_quarter", "view", png(figure(GREEN))[:300], "image/png")
    submission = await provider.submit(request(30, images=(VIEWS[0], broken)))
    result, _seen = await wait_for(provider, submission)
    assert result.status is TaskStatus.FAILED
    assert isinstance(result.error, FinalError) and not result.error.retryable
    assert "three_quarter" in result.error.message and "damaged" in result.error.message
    assert result.error.code == "bad_image"
    assert renders.count == 0

    after = providers()  # the failure is durable: a restart reports it, it does not retry
    assert (await after.poll(submission)).status is TaskStatus.FAILED
    assert renders.count == 0


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"kind": WorkKind.EXTEND}, "only makes clips and sheets"),
        ({"aspect_ratio": "4:3"}, "aspect ratio"),
        ({"duration": 7}, "clips last 5 or 10 s, not 7"),
        ({"camera": "dolly_zoom"}, "camera move"),
        ({"images": ()}, "at least one reference image"),
        ({"images": VIEWS + VIEWS}, "at most 4"),
        ({"model": "kling-v2"}, "unknown model"),
        (
            {"images": tuple(replace(VIEWS[0], subject=subject) for subject in range(4))},
            "at most 3 characters in one shot, got 4",
        ),
        ({"prompt": "x" * 2501}, "longer than 2500"),
    ],
)
async def test_invalid_requests_are_refused_at_submit(
    providers: Callable[..., LocalProvider], tmp_path: Path, changes: dict[str, Any], reason: str
) -> None:
    provider = providers()
    with pytest.raises(FinalError, match=reason):
        await provider.submit(request(40, **changes))
    assert await provider.find(40) is None


async def test_unknown_tasks_and_foreign_urls_are_final_errors(providers: Callable[..., LocalProvider]) -> None:
    provider = providers()
    with pytest.raises(FinalError):
        await provider.poll(Submission("local-999"))
    with pytest.raises(FinalError):
        await provider.poll(Submission("../../etc"))
    submission = await provider.submit(request(50))
    result, _seen = await wait_for(provider, submission)
    with pytest.raises(FinalError):
        await provider.fetch(replace(result.artifacts[0], url="https://example.com/clip.mp4"))
    with pytest.raises(FinalError):
        await provider.fetch(replace(result.artifacts[0], url="local://local-51"))


async def test_a_sheet_request_gives_a_png_with_three_figures(providers: Callable[..., LocalProvider]) -> None:
    from bot.library.sheets.split import split_sheet

    provider = providers()
    submission = await provider.submit(
        request(77, kind=WorkKind.SHEET, model="local-sheet-v1", duration=0, camera="static")
    )
    result, _seen = await wait_for(provider, submission)
    assert result.status is TaskStatus.SUCCEEDED and result.artifacts[0].mime == "image/png"
    data = await provider.fetch(result.artifacts[0])
    assert [f.view.value for f in split_sheet(data)] == ["front", "side", "three_quarter"]


async def test_old_finished_tasks_are_pruned_at_start_and_unfinished_ones_kept(
    providers: Callable[..., LocalProvider], tmp_path: Path
) -> None:
    import os

    provider = providers()
    submission = await provider.submit(request(91))
    result, _ = await wait_for(provider, submission)
    assert result.status is TaskStatus.SUCCEEDED
    finished = tmp_path / "local" / "tasks" / task_id_for(91)
    unfinished = tmp_path / "local" / "tasks" / "local-unfinished"
    unfinished.mkdir()
    (unfinished / "request.json").write_text("{}")
    week_ago = time.time() - 8 * 86400
    for path in (finished, unfinished):
        os.utime(path, (week_ago, week_ago))
    providers()  # a restart
    assert not finished.exists()
    assert unfinished.exists()  # no result yet: it may still be resumed


# --------------------------------------------------------------------------------------------------------------
# Casts: several characters in one clip

CAST = (  # a red character (with a green three-quarter view) and a blue one
    ReferenceImage("front", "view", png(figure(RED)), "image/png", subject=0),
    ReferenceImage("three_quarter", "view", png(figure(GREEN, width=180)), "image/png", subject=0),
    ReferenceImage("front", "view", png(figure(BLUE)), "image/png", subject=1),
)


def middle_frame(clip: bytes) -> np.ndarray:
    """The clip's middle frame as RGB pixels (height, width, 3)."""
    with av.open(io.BytesIO(clip), "r") as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return frames[len(frames) // 2]


def coloured(pixels: np.ndarray, colour: tuple[int, int, int]) -> int:
    """How many pixels are close to `colour`."""
    distance = np.abs(pixels.astype(int) - np.array(colour)).max(axis=2)
    return int((distance < 45).sum())


def assert_red_left_blue_right(clip: bytes) -> None:
    pixels = middle_frame(clip)
    half = pixels.shape[1] // 2
    left, right = pixels[:, :half], pixels[:, half:]
    assert coloured(left, RED) > 2000 and coloured(right, RED) < 50, "the first character stands on the left"
    assert coloured(right, BLUE) > 2000 and coloured(left, BLUE) < 50, "the second character stands on the right"
    assert coloured(pixels, GREEN) < 50, "a cast shows each character's lead view only"
    assert abs(coloured(left, RED) - coloured(right, BLUE)) < 0.35 * coloured(left, RED), "at the same height"


@pytest.mark.parametrize("camera", ["static", "push_in", "pan_left", "orbit"])
async def test_a_two_character_shot_shows_both_side_by_side(
    providers: Callable[..., LocalProvider], renders: Renders, camera: str
) -> None:
    provider = providers()
    submission = await provider.submit(request(60, images=CAST, camera=camera))
    result, _seen = await wait_for(provider, submission, within=60)
    assert result.status is TaskStatus.SUCCEEDED
    clip = await provider.fetch(result.artifacts[0])
    info = video.probe(clip)
    assert (info.width, info.height, info.frames) == (1280, 720, 120)
    assert_red_left_blue_right(clip)
    ((figures, kwargs),) = renders.calls
    assert len(figures) == 2 and kwargs["group"] is True


async def test_a_one_character_shot_renders_all_its_views_as_before(
    providers: Callable[..., LocalProvider], renders: Renders
) -> None:
    provider = providers()
    submission = await provider.submit(request(61))  # three views of subject 0 (the default)
    result, _seen = await wait_for(provider, submission)
    assert result.status is TaskStatus.SUCCEEDED
    ((figures, kwargs),) = renders.calls
    assert len(figures) == 3 and kwargs["group"] is False
    pixels = middle_frame(await provider.fetch(result.artifacts[0]))
    assert all(coloured(pixels, colour) > 1000 for colour in (RED, GREEN, BLUE)), "every view, in a row"


async def test_a_cast_closed_mid_render_renders_the_whole_cast_after_restart(
    providers: Callable[..., LocalProvider], renders: Renders, tmp_path: Path
) -> None:
    import json

    before = providers(delay=30)
    submission = await before.submit(request(62, images=CAST))
    await wait_for(before, submission, {TaskStatus.RUNNING})
    await before.close()
    assert not output(tmp_path, 62).exists()
    record = json.loads((output(tmp_path, 62).parent / "request.json").read_text())
    assert [entry["subject"] for entry in record["images"]] == [0, 0, 1]

    after = providers()
    result, _seen = await wait_for(after, submission, within=60)
    assert result.status is TaskStatus.SUCCEEDED
    assert_red_left_blue_right(await after.fetch(result.artifacts[0]))
    assert renders.count == 2 and all(len(figures) == 2 for figures, _kwargs in renders.calls)


async def test_a_request_written_before_casts_is_one_character(
    providers: Callable[..., LocalProvider], renders: Renders, tmp_path: Path
) -> None:
    import json

    first = providers()
    submission = await first.submit(request(63, images=CAST))
    await wait_for(first, submission)
    await first.close()
    folder = output(tmp_path, 63).parent
    output(tmp_path, 63).unlink()
    record = json.loads((folder / "request.json").read_text())
    for entry in record["images"]:
        del entry["subject"]  # as an older version wrote it
    (folder / "request.json").write_text(json.dumps(record))

    after = providers()
    result, _seen = await wait_for(after, submission)
    assert result.status is TaskStatus.SUCCEEDED
    figures, kwargs = renders.calls[-1]
    assert len(figures) == 3 and kwargs["group"] is False
