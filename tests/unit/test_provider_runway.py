"""The Runway provider against the fake Runway server (real HTTP on 127.0.0.1): requests, lifecycle, every
failure switch, and the `@tag`s of the compiled prompt matching `referenceImages[].tag`."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from PIL import Image

from bot.domain import (
    BoundImage,
    Character,
    Element,
    ElementKind,
    Job,
    JobState,
    Money,
    ReferenceView,
    ShotParams,
    View,
    WorkKind,
)
from bot.generation.prompts import Binding, choose_references, compile_prompt, reference_tokens
from bot.imaging.prep import prepare_for_provider
from bot.jobs.delivery import NoDelivery, Progress
from bot.jobs.worker import Worker
from bot.library.sheets.split import sheet_prompt
from bot.providers.base import (
    Artifact,
    FinalError,
    Frame,
    OutcomeUnknownError,
    PollResult,
    Provider,
    ReferenceImage,
    RenderRequest,
    RetryableError,
    ShotPrompt,
    Submission,
    TaskStatus,
    request_problems,
)
from bot.providers.registry import ProviderRegistry
from bot.providers.runway import DIALECT, ROWS, RUNWAY_IMAGE_LIMITS, RunwayProvider, retry_after, sheet_tags
from storage import Storage
from tests.support.fake_providers.runway import VERSION, Asset, FakeRunway, sample_png, sample_video
from tests.support.figures import BLUE, GREEN, RED, figure

NOW = datetime(2025, 1, 1)
AVA = Character(
    id=1,
    guild_id=1,
    name="Ava",
    description="tall woman, red bob, green eyes",
    owner_id=10,
    locked=True,
    version=1,
    created_at=NOW,
    updated_at=NOW,
)


def prepared(colour: tuple[int, int, int], width: int = 240) -> tuple[bytes, str]:
    return prepare_for_provider(figure(colour, width=width), RUNWAY_IMAGE_LIMITS)


FRONT_DATA, FRONT_MIME = prepared(RED)
SIDE_DATA, SIDE_MIME = prepared(BLUE, 110)
FRONT = ReferenceImage("front", "view", FRONT_DATA, FRONT_MIME)
SIDE = ReferenceImage("side", "view", SIDE_DATA, SIDE_MIME)


def animate(**changes: Any) -> RenderRequest:
    base = RenderRequest(
        job_id=7,
        kind=WorkKind.ANIMATE,
        model="gen4_turbo",
        prompt="@front (front view) shows Ava: tall woman. Waves at the camera. Slow camera push-in.",
        negative_prompt=None,
        duration=5,
        aspect_ratio="16:9",
        camera="push_in",
        images=(FRONT,),
        caption="waves at the camera",
    )
    return replace(base, **changes)


def sheet(images: tuple[ReferenceImage, ...], prompt: str, **changes: Any) -> RenderRequest:
    base = RenderRequest(
        job_id=8,
        kind=WorkKind.SHEET,
        model="gen4_turbo",  # jobs carry the provider's default (clip) model; sheets use the image model
        prompt=prompt,
        negative_prompt=None,
        duration=5,
        aspect_ratio="16:9",
        camera="static",
        images=images,
    )
    return replace(base, **changes)


@pytest.fixture
async def fake() -> AsyncIterator[FakeRunway]:
    async with FakeRunway(latency=0.005) as server:
        yield server


@pytest.fixture
async def runway(fake: FakeRunway) -> AsyncIterator[RunwayProvider]:
    provider = RunwayProvider(api_key=fake.api_key, base_url=fake.url, timeout=10.0)
    yield provider
    await provider.close()


async def poll_until_done(provider: RunwayProvider, submission: Submission, limit: int = 20) -> list[PollResult]:
    results: list[PollResult] = []
    for _ in range(limit):
        result = await provider.poll(submission)
        results.append(result)
        if result.status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELED):
            return results
    raise AssertionError(f"the task did not end: {[r.status for r in results]}")


def decoded_data_uri(uri: str) -> tuple[str, bytes]:
    header, payload = uri.split(",", 1)
    return header.removeprefix("data:").removesuffix(";base64"), base64.b64decode(payload)


# ------------------------------------------------------------------ capabilities and cost


async def test_capabilities_and_cost() -> None:
    provider = RunwayProvider(api_key="key_test")
    await provider.close()
    caps = provider.capabilities
    assert isinstance(provider, Provider)
    assert (caps.name, caps.label) == ("runway", "Runway")
    assert caps.kinds == {WorkKind.ANIMATE, WorkKind.SHEET}
    assert (caps.default_model, caps.image_model) == ("gen4_turbo", "gen4_image")
    row = caps.row("gen4_turbo")
    assert row.durations == (5, 10)
    assert row.aspect_ratios == ("16:9", "9:16", "1:1")
    assert row.max_images == 1
    assert (row.negative_prompt, row.element_syntax.name, row.prompt_max_chars, row.extend_from) == (
        False,
        "runway",
        1000,
        (),
    )
    assert caps.image_limits.max_bytes * 4 / 3 < 5_000_000  # the base64 data URI stays under 5 MB
    assert set(caps.image_limits.formats) == {"JPEG", "PNG", "WEBP"}
    assert provider.estimate_cost(animate(duration=5)) == Money.from_usd("0.25")  # 5 credits/s, $0.01 a credit
    assert provider.estimate_cost(animate(duration=10)) == Money.from_usd("0.50")
    assert provider.estimate_cost(sheet((), "Ava")) == Money.from_usd("0.08")  # gen4_image at 1080p: 8 credits
    assert provider.estimate_cost(sheet((), "Ava", model="gen4_image_turbo")) == Money.from_usd("0.02")
    assert "key_test" not in repr(provider)


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="key"):
        RunwayProvider(api_key=" ")
    with pytest.raises(ValueError, match="video model"):
        RunwayProvider(api_key="k", video_model="gen9")
    with pytest.raises(ValueError, match="image model"):
        RunwayProvider(api_key="k", image_model="dall-e")


# ------------------------------------------------------------------ clips


@pytest.mark.parametrize(("aspect", "ratio"), [("16:9", "1280:720"), ("9:16", "720:1280"), ("1:1", "960:960")])
async def test_animate_end_to_end(fake: FakeRunway, runway: RunwayProvider, aspect: str, ratio: str) -> None:
    submission = await runway.submit(animate(aspect_ratio=aspect, duration=10, images=(FRONT, SIDE)))
    assert submission.status_url == f"{fake.url}/v1/tasks/{submission.task_id}"
    (create,) = fake.api_requests()
    assert (create.method, create.path) == ("POST", "/v1/image_to_video")
    assert create.headers["Authorization"] == f"Bearer {fake.api_key}"
    assert create.headers["X-Runway-Version"] == VERSION
    body = create.body
    assert set(body) == {"model", "promptImage", "promptText", "ratio", "duration"}
    assert (body["model"], body["ratio"], body["duration"]) == ("gen4_turbo", ratio, 10)
    assert decoded_data_uri(body["promptImage"]) == (FRONT_MIME, FRONT_DATA)  # the first reference only
    # image_to_video binds no tags: the compiled prompt's @front is sent as a plain word.
    assert body["promptText"] == "front (front view) shows Ava: tall woman. Waves at the camera. Slow camera push-in."

    results = await poll_until_done(runway, submission)
    assert [r.status for r in results] == [
        TaskStatus.QUEUED,
        TaskStatus.RUNNING,
        TaskStatus.RUNNING,
        TaskStatus.SUCCEEDED,
    ]
    assert [r.progress for r in results[1:3]] == [pytest.approx(1 / 3, abs=0.01), pytest.approx(2 / 3, abs=0.01)]
    (artifact,) = results[-1].artifacts
    assert artifact.mime == "video/mp4"
    video = await runway.fetch(artifact)
    assert video == sample_video()
    with av.open(io.BytesIO(video)) as container:  # a real MP4
        assert container.streams.video[0].codec_context.name == "h264"
    download = fake.requests[-1]
    assert download.path.startswith("/outputs/")
    assert "Authorization" not in download.headers  # the key never goes to the result host


async def test_throttled_is_queued(fake: FakeRunway, runway: RunwayProvider) -> None:
    fake.throttled_polls = 2
    results = await poll_until_done(runway, await runway.submit(animate()))
    statuses = [r.status for r in results]
    assert statuses == [TaskStatus.QUEUED] * 3 + [TaskStatus.RUNNING] * 2 + [TaskStatus.SUCCEEDED]
    assert [task.throttled for task in fake.tasks.values()] == [2]


async def test_concurrency_over_the_account_limit_waits_throttled(fake: FakeRunway, runway: RunwayProvider) -> None:
    fake.concurrency = 1
    first, second = await runway.submit(animate()), await runway.submit(animate(job_id=8))
    assert (await runway.poll(first)).status is TaskStatus.QUEUED  # PENDING
    assert (await runway.poll(first)).status is TaskStatus.RUNNING
    assert (await runway.poll(second)).status is TaskStatus.QUEUED  # PENDING
    assert (await runway.poll(second)).status is TaskStatus.QUEUED  # THROTTLED: first is running
    assert fake.tasks[second.task_id].status == "THROTTLED"
    await poll_until_done(runway, first)
    assert (await runway.poll(second)).status is TaskStatus.RUNNING


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"duration": 7}, "gen4_turbo clips last 5 or 10 s, not 7 s"),
        ({"aspect_ratio": "4:3"}, "aspect ratio '4:3'"),
        ({"images": ()}, "reference image is needed"),
        ({"model": "gen3a_turbo"}, "unknown model"),
        ({"prompt": "🙂" * 501}, "1002 characters"),  # 501 emoji = 1002 UTF-16 units, Runway's measure
        ({"kind": WorkKind.EXTEND}, "cannot make extend"),
    ],
)
async def test_invalid_clips_are_refused_before_sending(
    fake: FakeRunway, runway: RunwayProvider, changes: dict[str, Any], reason: str
) -> None:
    with pytest.raises(FinalError) as caught:
        await runway.submit(animate(**changes))
    assert reason in caught.value.message
    assert caught.value.code == "invalid"
    assert fake.requests == []


async def test_prompt_at_the_limit_is_sent(fake: FakeRunway, runway: RunwayProvider) -> None:
    await runway.submit(animate(prompt="🙂" * 500))  # exactly 1000 units
    assert fake.count("POST") == 1


async def test_runway_400_is_final_with_its_message(fake: FakeRunway, runway: RunwayProvider) -> None:
    # A JPEG labelled as PNG passes our checks; Runway's asset fetcher rejects it, naming the field.
    jpeg = io.BytesIO()
    Image.new("RGB", (400, 400), (0, 0, 255)).save(jpeg, "JPEG")
    mislabelled = ReferenceImage("front", "view", jpeg.getvalue(), "image/png")
    with pytest.raises(FinalError) as caught:
        await runway.submit(animate(images=(mislabelled,)))
    error = caught.value
    assert type(error) is FinalError
    assert (error.message, error.code) == ("Runway refused this shot.", "invalid")
    assert "promptImage" in error.detail and "invalid data URI" in error.detail


# ------------------------------------------------------------------ sheets and tags


def view(which: View) -> ReferenceView:
    return ReferenceView(
        id=1,
        character_id=1,
        view=which,
        original_blob=f"o-{which.value}",
        cleaned_blob=f"c-{which.value}",
        cutout_blob=None,
        uploaded_by=10,
        created_at=NOW,
    )


def element(name: str, kind: ElementKind) -> Element:
    return Element(
        id=1,
        character_id=1,
        name=name,
        kind=kind,
        original_blob=f"o-{name}",
        cleaned_blob=f"c-{name}",
        cutout_blob=None,
        bound=True,
        created_at=NOW,
    )


SHEET_CASES = {
    "views": ([View.FRONT, View.THREE_QUARTER, View.SIDE], []),
    "elements": (
        [View.FRONT],
        [element("Écharpe rouge", ElementKind.ACCESSORY), element("7 swords", ElementKind.PROP)],
    ),
    "clashing labels": ([View.FRONT], [element("Front", ElementKind.OUTFIT), element("front!", ElementKind.PROP)]),
    "long and short": (
        [View.SIDE],
        [element("a very long jacket name indeed", ElementKind.OUTFIT), element("hat", ElementKind.ACCESSORY)],
    ),
}


def compiled_sheet(views: list[View], elements: list[Element]) -> tuple[Binding, str]:
    binding = choose_references([view(v) for v in views], elements, 3)
    compiled = compile_prompt(
        character=AVA,
        action="character sheet: front, three-quarter and side views on a flat white background",
        camera="static",
        setting=None,
        binding=binding,
        syntax=DIALECT,
        negative_supported=False,
        max_chars=1000,
        negative_presets=(),
        extra_negative=None,
        provider_label="Runway",
    )
    return binding, compiled.prompt


@pytest.mark.parametrize("case", list(SHEET_CASES))
async def test_sheet_tags_match_the_compiled_prompt(fake: FakeRunway, runway: RunwayProvider, case: str) -> None:
    binding, prompt = compiled_sheet(*SHEET_CASES[case])
    colours = (RED, GREEN, BLUE)
    images = tuple(
        ReferenceImage(ref.label, ref.role, *prepared(colours[index])) for index, ref in enumerate(binding.chosen)
    )
    submission = await runway.submit(sheet(images, prompt))
    (create,) = fake.api_requests()
    assert create.path == "/v1/text_to_image"
    body = create.body
    assert (body["model"], body["ratio"], body["promptText"]) == ("gen4_image", "1920:1080", prompt)
    tags = [reference["tag"] for reference in body["referenceImages"]]
    prompt_tags = [token.removeprefix("@") for token in reference_tokens(binding.chosen, DIALECT)]
    assert tags == prompt_tags == sheet_tags(images)
    assert len(set(map(str.casefold, tags))) == len(tags)
    for tag in tags:
        assert f"@{tag}" in prompt
    uris = [decoded_data_uri(reference["uri"]) for reference in body["referenceImages"]]
    assert uris == [(image.mime, image.data) for image in images]

    results = await poll_until_done(runway, submission)
    (artifact,) = results[-1].artifacts
    assert artifact.mime == "image/png"
    png = await runway.fetch(artifact)
    assert png == sample_png()
    with Image.open(io.BytesIO(png)) as opened:
        assert opened.format == "PNG"


async def test_sheet_prompt_without_tags_names_the_references(fake: FakeRunway, runway: RunwayProvider) -> None:
    """The generated-sheet prompt (bot/sheet_split.py) has no @tags: the references are named at its end."""
    prompt = sheet_prompt("Ava", "tall woman, red bob", None)
    await runway.submit(sheet((FRONT, SIDE), prompt))
    body = fake.api_requests()[-1].body
    assert body["promptText"] == f"{prompt} Reference images: @front, @side."
    assert [reference["tag"] for reference in body["referenceImages"]] == ["front", "side"]
    await runway.submit(sheet((FRONT, SIDE), "@side next to the front view"))  # only the missing one is added
    assert fake.api_requests()[-1].body["promptText"] == "@side next to the front view. Reference images: @front."
    full = "x" * 990
    await runway.submit(sheet((FRONT,), full))  # no room left: sent as it is (tags stay optional for Runway)
    assert fake.api_requests()[-1].body["promptText"] == full


async def test_sheet_limits(fake: FakeRunway, runway: RunwayProvider) -> None:
    four = tuple(ReferenceImage(f"view{n}", "view", FRONT_DATA, FRONT_MIME) for n in range(4))
    with pytest.raises(FinalError, match="at most 3 reference images"):
        await runway.submit(sheet(four, "@view0 @view1 @view2 @view3"))
    with pytest.raises(FinalError, match="needs at least one reference image"):
        await runway.submit(sheet((), "Ava", model="gen4_image_turbo"))
    with pytest.raises(FinalError, match="prompt is empty"):
        await runway.submit(sheet((FRONT,), "  "))
    assert fake.requests == []
    await runway.submit(sheet((), "Ava on white", aspect_ratio="1:1"))  # gen4_image takes no reference too
    assert fake.api_requests()[-1].body == {"model": "gen4_image", "promptText": "Ava on white", "ratio": "1080:1080"}


# ------------------------------------------------------------------ auth and HTTP errors


async def test_bad_key_is_final_and_never_echoed(fake: FakeRunway, caplog: pytest.LogCaptureFixture) -> None:
    secret = "key_" + "f" * 128
    provider = RunwayProvider(api_key=secret, base_url=fake.url)
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(FinalError) as caught:
            await provider.submit(animate())
        with pytest.raises(FinalError):
            await provider.poll(Submission("anything"))
    finally:
        await provider.close()
    error = caught.value
    assert type(error) is FinalError and error.code == "auth"
    assert "API key" in error.message and "admin" in error.message
    assert secret not in str(error) and secret not in repr(error.args) and secret not in caplog.text


async def test_the_key_is_not_logged_on_success(
    fake: FakeRunway, runway: RunwayProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    submission = await runway.submit(animate())
    results = await poll_until_done(runway, submission)
    await runway.fetch(results[-1].artifacts[0])
    await runway.cancel(submission)
    assert fake.api_key not in caplog.text


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Authorization": "Bearer KEY"}, "X-Runway-Version: the header is required"),
        ({"Authorization": "Bearer KEY", "X-Runway-Version": "2023-01-01"}, "unknown version"),
    ],
)
async def test_fake_requires_the_version_header(fake: FakeRunway, headers: dict[str, str], expected: str) -> None:
    headers = {name: value.replace("KEY", fake.api_key) for name, value in headers.items()}
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{fake.url}/v1/tasks/x", headers=headers)
    assert response.status_code == 400
    assert expected in response.json()["error"]


@pytest.mark.parametrize(
    ("retry_after_header", "retry_after_ms", "expected"),
    [("7", None, 7.0), (None, "250", 0.25), ("7", "250", 0.25), (None, None, None), ("soon", None, None)],
)
async def test_429_is_retryable_with_retry_after(
    fake: FakeRunway,
    runway: RunwayProvider,
    retry_after_header: str | None,
    retry_after_ms: str | None,
    expected: float | None,
) -> None:
    fake.rate_limit_next = 1
    fake.rate_limit_retry_after = retry_after_header
    fake.rate_limit_retry_after_ms = retry_after_ms
    with pytest.raises(RetryableError) as caught:
        await runway.submit(animate())
    error = caught.value
    assert error.code == "rate_limited" and error.retry_after == expected
    assert "limit" in error.message and "try again later" in error.message
    assert "daily generation limit" in error.detail
    assert fake.tasks == {}  # nothing was created: retrying cannot bill twice
    await runway.submit(animate())  # the next attempt goes through
    assert len(fake.tasks) == 1


def test_retry_after_as_a_date() -> None:
    headers = httpx.Headers({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})  # in the past
    assert retry_after(headers) == 0.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_burst_is_retryable_then_recovers(fake: FakeRunway, runway: RunwayProvider, status: int) -> None:
    submission = await runway.submit(animate())
    fake.server_errors_next, fake.server_error_status, fake.server_error_retry_after = 2, status, "3"
    for _ in range(2):
        with pytest.raises(RetryableError) as caught:
            await runway.poll(submission)
        assert caught.value.code == f"http_{status}" and caught.value.retry_after == 3.0
        assert "busy or having trouble" in caught.value.message
    assert (await runway.poll(submission)).status is TaskStatus.QUEUED
    fake.server_errors_next, fake.server_error_retry_after = 1, None
    with pytest.raises(RetryableError) as caught:
        await runway.submit(animate())
    assert caught.value.retry_after is None


async def test_timeout_is_retryable(fake: FakeRunway) -> None:
    provider = RunwayProvider(api_key=fake.api_key, base_url=fake.url, timeout=0.2)
    fake.stall_next, fake.stall_seconds = 1, 1.0
    try:
        with pytest.raises(RetryableError) as caught:
            await provider.poll(Submission("x"))
    finally:
        await provider.close()
    assert caught.value.code == "timeout" and "in time" in caught.value.message


async def test_unreachable_is_retryable() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = RunwayProvider(api_key="key_x", base_url=f"http://127.0.0.1:{port}", timeout=1.0)
    try:
        with pytest.raises(RetryableError) as caught:
            await provider.submit(animate())
    finally:
        await provider.close()
    assert caught.value.code == "network"


async def test_malformed_answers(fake: FakeRunway, runway: RunwayProvider) -> None:
    submission = await runway.submit(animate())
    fake.malformed_next = 1
    with pytest.raises(RetryableError) as caught:
        await runway.poll(submission)
    assert caught.value.code == "bad_response"
    assert (await runway.poll(submission)).status is TaskStatus.QUEUED


async def test_unknown_task_is_final(runway: RunwayProvider) -> None:
    with pytest.raises(FinalError) as caught:
        await runway.poll(Submission("no-such-task"))
    assert caught.value.code == "not_found" and "no longer knows" in caught.value.message


async def test_closed_provider_is_retryable(fake: FakeRunway) -> None:
    provider = RunwayProvider(api_key=fake.api_key, base_url=fake.url)
    await provider.close()
    with pytest.raises(RetryableError):
        await provider.poll(Submission("x"))


# ------------------------------------------------------------------ failed tasks


@pytest.mark.parametrize(
    ("code", "phrase", "charged"),
    [
        ("SAFETY.INPUT.TEXT", "moderation refused this shot's inputs", True),
        ("SAFETY.INPUT.IMAGE", "can get the Runway account suspended", True),
        ("SAFETY.OUTPUT.IMAGE", "moderation blocked the result. Re-rolling the shot", True),
        ("INTERNAL.BAD_OUTPUT.CODE01", "Re-rolling the shot may work", False),
        ("INTERNAL", "failed on its side while rendering. Re-rolling the shot may work", False),
        ("ASSET.INVALID", "could not use a reference image", False),
    ],
)
async def test_failed_tasks(fake: FakeRunway, runway: RunwayProvider, code: str, phrase: str, charged: bool) -> None:
    fake.fail_next(code)
    results = await poll_until_done(runway, await runway.submit(animate()))
    final = results[-1]
    assert final.status is TaskStatus.FAILED and final.artifacts == ()
    error = final.error
    # The task is over: even where Runway calls it retryable, a new attempt means a new task (a re-roll),
    # which the worker's RetryableError (retry the same call) cannot express.
    assert type(error) is FinalError
    assert phrase in error.message
    assert error.code == code and error.charged is charged
    assert error.detail  # Runway's human-readable `failure`


async def test_failure_without_a_code(fake: FakeRunway, runway: RunwayProvider) -> None:
    fake.fail_next("SOMETHING.NEW")
    final = (await poll_until_done(runway, await runway.submit(animate())))[-1]
    assert final.error is not None
    assert (final.error.message, final.error.code) == ("Runway could not render this shot.", "SOMETHING.NEW")


# ------------------------------------------------------------------ results


async def test_expired_url_is_final_and_a_new_poll_gives_a_fresh_one(fake: FakeRunway, runway: RunwayProvider) -> None:
    fake.url_ttl = 0.05
    submission = await runway.submit(animate())
    stale = (await poll_until_done(runway, submission))[-1].artifacts[0]
    await asyncio.sleep(0.1)
    with pytest.raises(FinalError) as caught:
        await runway.fetch(stale)
    assert caught.value.code == "expired" and "expired" in caught.value.message
    fake.url_ttl = 60
    fresh = (await runway.poll(submission)).artifacts[0]
    assert fresh.url != stale.url
    assert await runway.fetch(fresh) == sample_video()


async def test_tampered_url_is_refused(fake: FakeRunway, runway: RunwayProvider) -> None:
    artifact = (await poll_until_done(runway, await runway.submit(animate())))[-1].artifacts[0]
    with pytest.raises(FinalError, match="expired"):
        await runway.fetch(Artifact(artifact.url.replace("sig=", "sig=0"), "video/mp4"))
    with pytest.raises(FinalError) as caught:
        await runway.fetch(Artifact("file:///etc/passwd", "video/mp4"))
    assert caught.value.code == "bad_url"


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversized_result_is_refused(fake: FakeRunway, chunked: bool) -> None:
    provider = RunwayProvider(api_key=fake.api_key, base_url=fake.url, max_download_bytes=600_000)
    fake.output_size, fake.output_chunked = 1_000_000, chunked
    try:
        artifact = (await poll_until_done(provider, await provider.submit(animate())))[-1].artifacts[0]
        with pytest.raises(FinalError) as caught:
            await provider.fetch(artifact)
        assert caught.value.code == "too_large" and "larger than this bot accepts" in caught.value.message
        fake.output_size = 500_000  # under the cap: downloaded whole, chunked or not
        data = await provider.fetch(artifact)
        assert len(data) == 500_000 and data.startswith(sample_video())
    finally:
        await provider.close()


async def test_result_host_errors(fake: FakeRunway, runway: RunwayProvider) -> None:
    artifact = (await poll_until_done(runway, await runway.submit(animate())))[-1].artifacts[0]
    fake.output_errors_next = 1
    with pytest.raises(RetryableError) as caught:
        await runway.fetch(artifact)
    assert caught.value.code == "http_503" and "try the download again" in caught.value.message
    assert await runway.fetch(artifact) == sample_video()
    task_id = artifact.url.split("/outputs/")[1].split("/")[0]
    fake.tasks[task_id].status = "RUNNING"  # the result host answers 404 when the file is gone
    with pytest.raises(FinalError, match="expired"):
        await runway.fetch(artifact)


# ------------------------------------------------------------------ cancel and find


async def test_cancel(fake: FakeRunway, runway: RunwayProvider) -> None:
    submission = await runway.submit(animate())
    assert (await runway.poll(submission)).status is TaskStatus.QUEUED
    await runway.cancel(submission)
    deletes = [r for r in fake.requests if r.method == "DELETE"]
    assert [r.path for r in deletes] == [f"/v1/tasks/{submission.task_id}"]
    assert deletes[0].headers["X-Runway-Version"] == VERSION
    assert (await runway.poll(submission)).status is TaskStatus.CANCELED
    # Deleting a finished task removes it; a second cancel of a gone task is quietly fine.
    await runway.cancel(submission)
    await runway.cancel(submission)
    with pytest.raises(FinalError, match="no longer knows"):
        await runway.poll(submission)


async def test_cancel_errors_other_than_gone_are_raised(fake: FakeRunway, runway: RunwayProvider) -> None:
    fake.server_errors_next = 1
    with pytest.raises(RetryableError):
        await runway.cancel(Submission("x"))


async def test_find_has_no_idempotency(fake: FakeRunway, runway: RunwayProvider) -> None:
    await runway.submit(animate(job_id=42))
    assert await runway.find(42) is None  # Runway has no idempotency key: documented risk
    assert fake.requests[-1].method == "POST"  # find asked Runway nothing


# ------------------------------------------------------------------ the fake's own rules (it must catch real bugs)


PNG_URI = "data:image/png;base64," + base64.b64encode(sample_png()).decode()


def t2i(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "gen4_image",
        "promptText": "@Aria on white",
        "ratio": "1920:1080",
        "referenceImages": [{"uri": PNG_URI, "tag": "Aria"}],
    }
    body.update(changes)
    return body


FIRST_AND_LAST = [{"uri": PNG_URI, "position": "first"}, {"uri": PNG_URI, "position": "last"}]
SHOTS = [{"prompt": "a", "duration": 3}, {"prompt": "b", "duration": 3}, {"prompt": "c", "duration": 4}]


def i2v(model: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "promptImage": PNG_URI,
        "promptText": "Ava waves",
        "ratio": "1280:720",
        "duration": 8,
    }
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


def recipe(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"mode": "custom", "version": "2026-06", "shots": SHOTS, "duration": 10, "ratio": "1280:720"}
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


def ref(uri: str, tag: str | None = "Aria") -> dict[str, str]:
    return {"uri": uri} if tag is None else {"uri": uri, "tag": tag}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/text_to_image", t2i(promptText="x" * 1001), "promptText"),
        ("/v1/text_to_image", t2i(ratio="1280:768"), "ratio"),
        ("/v1/text_to_image", t2i(referenceImages=[ref(PNG_URI, f"tag{n}") for n in range(4)]), "referenceImages"),
        ("/v1/text_to_image", t2i(referenceImages=[ref(PNG_URI, "ab")]), "referenceImages[0].tag"),
        ("/v1/text_to_image", t2i(referenceImages=[ref(PNG_URI, "1abc")]), "referenceImages[0].tag"),
        ("/v1/text_to_image", t2i(referenceImages=[ref(PNG_URI, "bad-tag")]), "referenceImages[0].tag"),
        ("/v1/text_to_image", t2i(referenceImages=[ref(PNG_URI, "a" * 17)]), "referenceImages[0].tag"),
        ("/v1/text_to_image", t2i(referenceImages=[ref(PNG_URI, "Aria"), ref(PNG_URI, "aria")]), "duplicate"),
        ("/v1/text_to_image", t2i(model="gen4_image_turbo", referenceImages=[]), "gen4_image_turbo needs"),
        ("/v1/text_to_image", t2i(referenceImages=[ref("http://cdn.example/a.png")]), "only HTTPS"),
        ("/v1/text_to_image", t2i(referenceImages=[ref("https://127.0.0.1/a.png")]), "not an IP address"),
        ("/v1/text_to_image", t2i(referenceImages=[ref("https://cdn.example/unknown.png")]), "failed to fetch"),
        ("/v1/text_to_image", t2i(referenceImages=[ref("https://cdn.example/octet")]), "Content-Type"),
        ("/v1/text_to_image", t2i(referenceImages=[ref("https://cdn.example/moved")]), "redirects"),
        ("/v1/text_to_image", t2i(referenceImages=[ref("data:image/gif;base64,R0lGOD")]), "unsupported asset type"),
        ("/v1/image_to_video", i2v("gen4.5", duration=None), "duration"),  # gen4.5's duration is required
        ("/v1/image_to_video", i2v("gen4.5", duration=12), "duration"),
        ("/v1/image_to_video", i2v("gen4.5", promptText=None), "promptText"),
        ("/v1/image_to_video", i2v("gen4.5", promptImage=FIRST_AND_LAST), "position"),
        ("/v1/image_to_video", i2v("gen4.5", audio=True), "audio"),
        ("/v1/image_to_video", i2v("veo3.1", duration=5), "duration"),
        ("/v1/image_to_video", i2v("veo3.1", ratio="960:960"), "ratio"),
        ("/v1/image_to_video", i2v("veo3.1", promptImage=[{"uri": PNG_URI, "position": "last"}]), "first frame"),
        ("/v1/image_to_video", i2v("veo3.1_fast", audio="yes"), "audio"),
        ("/v1/recipes/multi_shot_video", recipe(version=None), "version"),
        ("/v1/recipes/multi_shot_video", recipe(shots=SHOTS[:2]), "shots"),
        ("/v1/recipes/multi_shot_video", recipe(duration=15), "add up to 10"),
        ("/v1/recipes/multi_shot_video", recipe(duration=8, shots=[*SHOTS[:2], {"prompt": "c", "duration": 4}]), "5"),
        ("/v1/recipes/multi_shot_video", recipe(ratio="1584:672"), "ratio"),
        ("/v1/recipes/multi_shot_video", recipe(mode="custom", prompt="a story"), "prompt"),
        ("/v1/image_to_video", {"model": "gen4_turbo", "promptImage": PNG_URI, "duration": 5}, "ratio"),
        (
            "/v1/image_to_video",
            {"model": "gen4_turbo", "promptImage": [{"uri": PNG_URI, "position": "last"}], "ratio": "960:960"},
            "position",
        ),
    ],
)
async def test_fake_validates_like_runway(fake: FakeRunway, path: str, body: dict[str, Any], field: str) -> None:
    fake.assets["https://cdn.example/octet"] = Asset(content_type="application/octet-stream")
    fake.assets["https://cdn.example/moved"] = Asset(redirect=True)
    headers = {"Authorization": f"Bearer {fake.api_key}", "X-Runway-Version": VERSION}
    async with httpx.AsyncClient() as client:
        response = await client.post(fake.url + path, json=body, headers=headers)
    assert response.status_code == 400
    assert field in response.json()["error"]
    assert fake.tasks == {}


async def test_fake_accepts_a_registered_https_asset(fake: FakeRunway) -> None:
    fake.assets["https://cdn.example/aria.png"] = Asset()
    headers = {"Authorization": f"Bearer {fake.api_key}", "X-Runway-Version": VERSION}
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{fake.url}/v1/text_to_image",
            json=t2i(referenceImages=[ref("https://cdn.example/aria.png"), ref(PNG_URI, None)]),
            headers=headers,
        )
    assert response.status_code == 200 and response.json()["estimatedCost"] == {"credits": 8}


# ------------------------------------------------------------------ through the real worker


class WatchingDelivery(NoDelivery):
    def __init__(self) -> None:
        super().__init__()
        self.finished = asyncio.Event()

    async def show_status(self, job: Job, progress: Progress) -> None:
        if job.state.finished:
            self.finished.set()


async def run_through_worker(
    tmp_path: Path, fake: FakeRunway, kind: WorkKind = WorkKind.ANIMATE, labels: tuple[str, ...] = ("front",)
) -> tuple[Job, WatchingDelivery]:
    """One job queued in a real database and driven to its end by the real Worker, against the fake."""
    provider = RunwayProvider(api_key=fake.api_key, base_url=fake.url, timeout=10.0)
    provider.capabilities = replace(provider.capabilities, typical_seconds=0.01)  # poll at once, not in a minute
    fake.pending_polls = fake.running_polls = 0  # done at the first poll: the worker's next poll is 0.5 s later
    storage = await Storage.open(tmp_path / "db.sqlite3", tmp_path / "blobs")
    delivery = WatchingDelivery()
    worker = Worker(storage.jobs, storage.blobs, ProviderRegistry({"runway": provider}, "runway"), delivery)
    try:
        character = await storage.characters.create(1, "Ava", "tall woman", owner_id=1)
        blob = await storage.blobs.put(png_bytes(figure(RED)))
        job = await storage.jobs.create(
            guild_id=1,
            channel_id=1,
            user_id=1,
            character_id=character.id,
            character_name="Ava",
            character_version=1,
            kind=kind.value,
            provider="runway",
            model="gen4_turbo" if kind is WorkKind.ANIMATE else "gen4_image",
            action="waves",
            prompt=" ".join(f"@{label}" for label in labels) + " Ava waves at the camera.",
            negative_prompt=None,
            params=ShotParams(duration=5, aspect_ratio="16:9", camera="push_in"),
            bound=[BoundImage(label=label, role="view", blob=blob) for label in labels],
            cost_estimate=provider.estimate_cost(animate()),
        )
        await worker.start()
        async with asyncio.timeout(20):
            await delivery.finished.wait()
        await worker.stop()
        current = await storage.jobs.get(job.id)
        assert current is not None
        return current, delivery
    finally:
        await worker.stop()
        await storage.close()
        await provider.close()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


async def test_worker_delivers_a_clip_through_429s_and_5xx(tmp_path: Path, fake: FakeRunway) -> None:
    fake.rate_limit_next, fake.rate_limit_retry_after_ms = 2, "10"
    fake.server_errors_next, fake.server_error_retry_after = 1, "0"
    job, delivery = await run_through_worker(tmp_path, fake)
    assert job.state is JobState.DONE, job.error
    assert delivery.posted[job.id] == sample_video()
    assert fake.served["429"] == 2 and fake.served["5xx"] == 1
    assert len(fake.tasks) == 1  # retried creates never made a second task


async def test_worker_makes_a_sheet(tmp_path: Path, fake: FakeRunway) -> None:
    job, delivery = await run_through_worker(tmp_path, fake, WorkKind.SHEET, ("front", "side", "back"))
    assert job.state is JobState.DONE, job.error
    assert delivery.posted[job.id] == sample_png()
    (create,) = [r for r in fake.requests if r.method == "POST"]
    assert [reference["tag"] for reference in create.body["referenceImages"]] == ["front", "side", "back"]


async def test_worker_shows_a_failed_task_and_its_cost(tmp_path: Path, fake: FakeRunway) -> None:
    fake.fail_next("SAFETY.OUTPUT.VIDEO")
    job, delivery = await run_through_worker(tmp_path, fake)
    assert job.state is JobState.FAILED and delivery.posted == {}
    assert job.error is not None
    assert job.error.startswith("Runway's moderation blocked the result. Re-rolling the shot")
    assert "(provider said: The output did not pass content moderation.)" in job.error
    assert job.cost_final == Money.from_usd("0.25")  # moderated runs are billed
    assert len(fake.tasks) == 1  # a failed task is not resubmitted by the worker


async def test_which_create_failures_leave_the_outcome_unknown(fake: FakeRunway, runway: RunwayProvider) -> None:
    """Runway cannot be asked whether it made a task: a 500/502/504 or an unreadable success is an unknown outcome;
    a 503 or 429 is "busy" (not taken, waited for); polls keep plain retries."""
    for status in (500, 502, 504):
        fake.server_errors_next, fake.server_error_status = 1, status
        with pytest.raises(OutcomeUnknownError):
            await runway.submit(animate())
    fake.server_errors_next, fake.server_error_status = 1, 503
    with pytest.raises(RetryableError) as busy:
        await runway.submit(animate())
    assert busy.value.rate_limited and not isinstance(busy.value, OutcomeUnknownError)
    fake.malformed_next = 1
    with pytest.raises(OutcomeUnknownError):
        await runway.submit(animate())
    submission = await runway.submit(animate())
    fake.server_errors_next, fake.server_error_status = 1, 500
    with pytest.raises(RetryableError) as polled:
        await runway.poll(submission)
    assert not isinstance(polled.value, OutcomeUnknownError)
    assert runway.capabilities.findable is False


# ------------------------------------------------------------------ gen4.5, the resold Veo models, the recipe, cost


END = Frame(*prepared(GREEN))
START = Frame(*prepared(BLUE))


async def test_gen45_with_a_prompt_and_8_seconds(fake: FakeRunway, runway: RunwayProvider) -> None:
    request = animate(model="gen4.5", duration=8)
    assert runway.estimate_cost(request) == Money.from_usd("0.96")  # 12 credits/s
    submission = await runway.submit(request)
    (create,) = fake.api_requests()
    assert create.path == "/v1/image_to_video"
    assert create.body["model"] == "gen4.5" and create.body["duration"] == 8
    assert create.body["promptText"].startswith("front (front view) shows Ava")
    assert isinstance(create.body["promptImage"], str)  # first frame only
    assert set(create.body) == {"model", "promptImage", "promptText", "ratio", "duration"}
    results = await poll_until_done(runway, submission)
    assert results[-1].status is TaskStatus.SUCCEEDED
    assert results[-1].charged == Money.from_usd("0.96")  # cost.credits 96
    assert all(r.charged is None for r in results[:-1])  # only an estimate while it runs


async def test_gen45_start_frame_is_sent_instead_of_the_view(fake: FakeRunway, runway: RunwayProvider) -> None:
    await runway.submit(animate(model="gen4.5", duration=3, start_frame=START))
    (create,) = fake.api_requests()
    assert decoded_data_uri(create.body["promptImage"]) == (START.mime, START.data)


async def test_veo_with_an_end_frame_and_audio(fake: FakeRunway, runway: RunwayProvider) -> None:
    request = animate(model="veo3.1_fast", duration=6, end_frame=END, audio=True, negative_prompt="blur, text")
    assert runway.estimate_cost(request) == Money.from_usd("0.90")  # 15 credits/s with audio
    assert runway.estimate_cost(replace(request, audio=False)) == Money.from_usd("0.60")
    submission = await runway.submit(request)
    (create,) = fake.api_requests()
    first, last = create.body["promptImage"]
    assert first["position"] == "first" and decoded_data_uri(first["uri"]) == (FRONT_MIME, FRONT_DATA)
    assert last["position"] == "last" and decoded_data_uri(last["uri"]) == (END.mime, END.data)
    assert (create.body["audio"], create.body["negativePrompt"], create.body["duration"]) == (True, "blur, text", 6)
    result = (await poll_until_done(runway, submission))[-1]
    assert result.status is TaskStatus.SUCCEEDED and result.charged == Money.from_usd("0.90")
    assert (await runway.fetch(result.artifacts[0])) == sample_video()


async def test_the_multi_shot_recipe(fake: FakeRunway, runway: RunwayProvider) -> None:
    shots = (ShotPrompt("@front Ava walks in", 3), ShotPrompt("She looks up", 3), ShotPrompt("She smiles", 4))
    request = animate(model="gen4.5", duration=10, shots=shots)
    submission = await runway.submit(request)
    (create,) = fake.api_requests()
    assert create.path == "/v1/recipes/multi_shot_video"
    body = create.body
    assert (body["mode"], body["version"], body["duration"], body["ratio"]) == ("custom", "2026-06", 10, "1280:720")
    assert body["shots"] == [
        {"prompt": "front Ava walks in", "duration": 3},
        {"prompt": "She looks up", "duration": 3},
        {"prompt": "She smiles", "duration": 4},
    ]
    assert decoded_data_uri(body["firstFrame"]["uri"]) == (FRONT_MIME, FRONT_DATA)
    result = (await poll_until_done(runway, submission))[-1]
    assert result.status is TaskStatus.SUCCEEDED and result.charged == Money.from_usd("1.20")
    assert result.artifacts[0].mime == "video/mp4"


async def test_charged_is_what_runway_says_not_the_estimate(fake: FakeRunway, runway: RunwayProvider) -> None:
    fake.charge_next(40, 0)  # unused credits returned: 40 of the 60 estimated; then a fully refunded one
    result = (await poll_until_done(runway, await runway.submit(animate(model="gen4.5"))))[-1]
    assert result.charged == Money.from_usd("0.40") != runway.estimate_cost(animate(model="gen4.5"))
    fake.fail_next("SAFETY.INPUT.TEXT")
    failed = (await poll_until_done(runway, await runway.submit(animate(model="gen4.5"))))[-1]
    assert failed.status is TaskStatus.FAILED and failed.charged == Money.ZERO
    assert failed.error is not None and failed.error.charged is False  # Runway's figure beats the code's rule
    canceled = await runway.submit(animate())
    await runway.cancel(canceled)
    assert (await runway.poll(canceled)) == PollResult(TaskStatus.CANCELED, charged=Money.ZERO)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"duration": 12}, "gen4.5 clips last 2-10 s, not 12 s"),
        ({"end_frame": END}, "gen4.5 takes no end frame"),
        ({"prompt": "  "}, "gen4.5 needs a prompt"),
        ({"audio": True}, "gen4.5 renders no audio"),
        ({"shots": (ShotPrompt("a", 2), ShotPrompt("b", 3))}, "3-5 shots"),
        ({"duration": 7, "shots": (ShotPrompt("a", 2), ShotPrompt("b", 2), ShotPrompt("c", 3))}, "5 or 10 or 15"),
        ({"model": "veo3.1", "aspect_ratio": "1:1"}, "aspect ratio '1:1'"),
        ({"model": "veo3.1", "duration": 5}, "4, 6 or 8 s"),
        ({"model": "gen4_turbo", "shots": (ShotPrompt("a", 2), ShotPrompt("b", 3))}, "one shot per task"),
    ],
)
async def test_refusals_from_the_models_row(
    fake: FakeRunway, runway: RunwayProvider, changes: dict[str, Any], reason: str
) -> None:
    request = animate(**{"model": "gen4.5", **changes})
    with pytest.raises(FinalError) as caught:
        await runway.submit(request)
    assert reason in caught.value.message.replace("5, 10 or 15", "5 or 10 or 15")
    assert caught.value.code == "invalid"
    assert fake.requests == []  # refused before anything was sent


def test_request_problems_name_the_limits_of_gen45() -> None:
    row = ROWS[1]
    assert row.model == "gen4.5"
    assert request_problems(row, animate(model="gen4.5", duration=12, end_frame=END)) == [
        "gen4.5 clips last 2-10 s, not 12 s",
        "gen4.5 takes no end frame",
    ]
    assert request_problems(row, animate(model="gen4.5", duration=8)) == []


def test_the_rows() -> None:
    rows = {row.model: row for row in ROWS}
    assert rows["gen4.5"].durations[0] == 5 and sorted(rows["gen4.5"].durations) == list(range(2, 11))
    assert rows["gen4.5"].free_durations and rows["gen4.5"].seconds_text() == "2-10 s"
    assert rows["gen4.5"].end_frame is None and rows["gen4.5"].multi_shot is not None
    assert rows["veo3.1"].takes_end_frame(None) and rows["veo3.1"].audio
    assert rows["veo3.1"].per_second(None, audio=True) == Money.from_usd("0.40")
    assert rows["veo3.1"].per_second(None) == Money.from_usd("0.20")
    assert RunwayProvider(api_key="k", video_model="gen4.5").capabilities.default_model == "gen4.5"


async def test_worker_resumes_a_gen45_render_after_a_restart_and_records_the_charge(
    tmp_path: Path, fake: FakeRunway
) -> None:
    """Submit, stop the worker while Runway renders, a new worker and provider resume from the stored task id:
    one task only, and the job's final cost is what Runway said it charged (cost.credits), not the estimate."""
    fake.pending_polls, fake.running_polls = 1, 3
    fake.charge_next(45)  # 15 of the 60 estimated credits returned
    storage = await Storage.open(tmp_path / "db.sqlite3", tmp_path / "blobs")
    delivery = WatchingDelivery()

    async def started() -> tuple[Worker, RunwayProvider]:
        provider = RunwayProvider(api_key=fake.api_key, base_url=fake.url, timeout=10.0)
        provider.capabilities = replace(provider.capabilities, typical_seconds=0.01)
        worker = Worker(storage.jobs, storage.blobs, ProviderRegistry({"runway": provider}, "runway"), delivery)
        await worker.start()
        return worker, provider

    async def reached(job_id: int, states: set[JobState]) -> Job:
        async with asyncio.timeout(20):
            while True:
                current = await storage.jobs.get(job_id)
                assert current is not None
                if current.state in states:
                    return current
                await asyncio.sleep(0.01)  # a state check, not a wait for time

    try:
        character = await storage.characters.create(1, "Ava", "tall woman", owner_id=1)
        blob = await storage.blobs.put(png_bytes(figure(RED)))
        job = await storage.jobs.create(
            guild_id=1,
            channel_id=1,
            user_id=1,
            character_id=character.id,
            character_name="Ava",
            character_version=1,
            kind=WorkKind.ANIMATE.value,
            provider="runway",
            model="gen4.5",
            action="waves",
            prompt="@front Ava waves at the camera.",
            negative_prompt=None,
            params=ShotParams(duration=5, aspect_ratio="16:9", camera="push_in"),
            bound=[BoundImage(label="front", role="view", blob=blob)],
            cost_estimate=Money.from_usd("0.60"),
        )
        worker, provider = await started()
        running = await reached(job.id, {JobState.RUNNING})
        await worker.stop()
        await provider.close()
        assert running.task_id in fake.tasks and fake.tasks[running.task_id].status != "SUCCEEDED"

        worker, provider = await started()
        try:
            async with asyncio.timeout(20):
                await delivery.finished.wait()
        finally:
            await worker.stop()
            await provider.close()
        done = await reached(job.id, {JobState.DONE, JobState.FAILED})
        assert done.state is JobState.DONE, done.error
        assert done.cost_final == Money.from_usd("0.45")
        assert delivery.posted[job.id] == sample_video()
        assert fake.count("POST") == 1  # resumed by its task id, never created twice
        (create,) = [r for r in fake.requests if r.method == "POST"]
        assert (create.body["model"], create.body["promptText"]) == ("gen4.5", "front Ava waves at the camera.")
    finally:
        await storage.close()
