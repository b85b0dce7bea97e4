"""The fal.ai provider against the fake fal queue server (tests/support/fake_providers/fal.py), over real HTTP on
127.0.0.1.

Each switch of the fake is driven through the provider, asserting what the worker would see: a Submission, a
PollResult, or a typed error with the member-facing message. One test runs the real worker, with a restart.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from bot.domain import BoundImage, JobState, Money, ShotParams, WorkKind
from bot.generation.prompts import reference_tokens
from bot.imaging import video
from bot.jobs.delivery import NoDelivery
from bot.jobs.worker import Worker, WorkerConfig
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
)
from bot.providers.fal import DIALECT, SPEC, VIDEO_ENDPOINTS, FalProvider, _retry_after
from bot.providers.registry import ProviderRegistry
from storage import Storage
from tests.support.fake_providers.fal import Failure, FakeFal, content_policy, runner_error
from tests.support.fal_requests import (
    BACK,
    FACE,
    FRONT,
    JACKET,
    SIDE,
    SWORD,
    THREE_QUARTER,
    VIDEO_MODEL,
    animate,
    jpeg,
    ref,
)

DONE = {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELED}
WRONG_KEY = "fal-wrong-key-SECRET-9f8e7d"


def uri(image: ReferenceImage) -> str:
    return f"data:{image.mime};base64,{base64.b64encode(image.data).decode()}"


def sheet(job_id: int = 2) -> RenderRequest:
    return RenderRequest(
        job_id=job_id,
        kind=WorkKind.SHEET,
        model="fal-ai/bytedance/seedream/v4/edit",
        prompt="A character sheet of Ava: front, three-quarter and side views on flat white.",
        negative_prompt=None,
        duration=0,
        aspect_ratio="16:9",
        camera="static",
        images=(FRONT, THREE_QUARTER, SIDE),
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeFal]:
    server = FakeFal()  # 5 ms per answer
    server.queue_polls, server.progress_polls = 1, 1
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def provider(fake: FakeFal) -> AsyncIterator[FalProvider]:
    client = FalProvider(key=fake.key, base_url=fake.url, timeout=15.0)
    try:
        yield client
    finally:
        await client.close()


async def run_to_end(provider: FalProvider, submission: Submission, limit: int = 10) -> PollResult:
    for _ in range(limit):
        result = await provider.poll(submission)
        if result.status in DONE:
            return result
    raise AssertionError("the request never finished")


def submitted_body(fake: FakeFal) -> dict[str, Any]:
    body = fake.submits()[-1].body
    assert isinstance(body, dict)
    return body


def handle(submission: Submission) -> dict[str, Any]:
    assert submission.status_url is not None
    return json.loads(submission.status_url)


# ------------------------------------------------------------------------------------------------ capabilities


async def test_capabilities(provider: FalProvider) -> None:
    caps = provider.capabilities
    assert isinstance(provider, Provider)
    row = caps.default_row
    assert (caps.name, caps.label, row.element_syntax.name) == ("fal", "fal.ai", "fal")
    assert caps.kinds == frozenset({WorkKind.ANIMATE, WorkKind.SHEET})
    assert caps.models == tuple(VIDEO_ENDPOINTS) and caps.default_model == VIDEO_MODEL  # a server may pick any
    assert row.durations[0] == 5 and set(row.durations) == set(range(3, 11)) and row.free_durations
    assert row.aspect_ratios == ("16:9", "9:16", "1:1")
    assert row.max_images == 7 and row.negative_prompt is False
    assert caps.image_model == "fal-ai/bytedance/seedream/v4/edit"
    assert caps.image_limits.min_side == 300 and caps.image_limits.max_aspect == 2.5
    assert row.per_second(None) == Money.from_usd("0.112")


async def test_estimate_cost(provider: FalProvider) -> None:
    assert provider.estimate_cost(animate()) == Money.from_usd("0.560")
    assert provider.estimate_cost(animate(duration=10)) == Money.from_usd("1.120")
    assert provider.estimate_cost(sheet()) == Money.from_usd("0.03")


def test_unknown_models_are_refused_at_start() -> None:
    with pytest.raises(ValueError, match="unsupported fal video model"):
        FalProvider(key="k", video_model="fal-ai/some/other-video")
    with pytest.raises(ValueError, match="unsupported fal image model"):
        FalProvider(key="k", image_model="fal-ai/flux/dev")
    with pytest.raises(ValueError, match="key"):
        FalProvider(key="  ")


# ------------------------------------------------------------------------------------------------ the happy path


async def test_animate_lifecycle_body_and_download(fake: FakeFal, provider: FalProvider) -> None:
    fake.queue_polls, fake.progress_polls = 2, 1
    submission = await provider.submit(animate())

    request_id = fake.accepted_submits()[0]
    assert request_id.path == f"/{VIDEO_MODEL}" and request_id.authorization == f"Key {fake.key}"
    assert submission.task_id in fake.queued
    body = submitted_body(fake)
    assert body["prompt"].startswith("@Element1")
    assert body["elements"] == [
        {"frontal_image_url": uri(FRONT), "reference_image_urls": [uri(THREE_QUARTER), uri(SIDE)]},
        {"frontal_image_url": uri(JACKET), "reference_image_urls": [uri(JACKET)]},  # fal needs 1..3 references
    ]
    assert "image_urls" not in body and "negative_prompt" not in body
    assert (body["duration"], body["aspect_ratio"]) == ("5", "16:9")

    statuses = [(await provider.poll(submission)).status for _ in range(3)]
    assert statuses == [TaskStatus.QUEUED, TaskStatus.QUEUED, TaskStatus.RUNNING]
    result = await provider.poll(submission)
    assert result.status is TaskStatus.SUCCEEDED and result.error is None
    (artifact,) = result.artifacts
    assert artifact.mime == "video/mp4" and artifact.duration == 5.0

    info = video.probe(await provider.fetch(artifact))
    assert (info.width, info.height, info.frames, info.codec) == (320, 180, 12, "h264")  # the fake's real clip

    polls = [r for r in fake.api_requests() if r.path.endswith("/status")]
    assert len(polls) == 4 and all(r.query == {"logs": "0"} for r in polls)
    downloads = [r for r in fake.requests if r.path.startswith("/fal-media/")]
    assert len(downloads) == 1 and downloads[0].authorization is None  # the key never goes to the file host


async def test_seven_references_match_the_prompt_tokens(fake: FakeFal, provider: FalProvider) -> None:
    """The order bot/prompts.py binds them in: front, 3/4, side, elements, face, back."""
    images = (FRONT, THREE_QUARTER, SIDE, JACKET, SWORD, FACE, BACK)
    assert reference_tokens(images, DIALECT) == (
        "@Element1",
        "@Element1",
        "@Element1",
        "@Element2",
        "@Element3",
        "@Element1",
        "@Image1",
    )
    submission = await provider.submit(animate(images=images, duration=8, aspect_ratio="9:16"))
    body = submitted_body(fake)
    assert body["elements"] == [
        {"frontal_image_url": uri(FRONT), "reference_image_urls": [uri(THREE_QUARTER), uri(SIDE), uri(FACE)]},
        {"frontal_image_url": uri(JACKET), "reference_image_urls": [uri(JACKET)]},
        {"frontal_image_url": uri(SWORD), "reference_image_urls": [uri(SWORD)]},
    ]
    assert body["image_urls"] == [uri(BACK)]
    assert (body["duration"], body["aspect_ratio"]) == ("8", "9:16")
    result = await run_to_end(provider, submission)
    assert result.status is TaskStatus.SUCCEEDED  # the fake's checks (7 in all, 1..3 references) passed


async def test_status_urls_are_used_as_given() -> None:
    """The returned URLs live under a prefix a rebuild from base_url + model cannot guess; the provider follows them."""
    fake = FakeFal(latency=0.001, url_prefix="/edge/queue-v2")
    fake.queue_polls, fake.progress_polls = 1, 1
    await fake.start()
    provider = FalProvider(key=fake.key, base_url=fake.url)
    try:
        submission = await provider.submit(animate())
        result = await run_to_end(provider, submission)
        assert result.status is TaskStatus.SUCCEEDED
        await provider.cancel(submission)  # finished: cancel is a no-op, but it goes to the cancel URL given
        app_path = f"/edge/queue-v2/fal-ai/kling-video/requests/{submission.task_id}"
        followed = [(r.method, r.path) for r in fake.api_requests()[1:]]
        assert followed == [
            ("GET", f"{app_path}/status"),
            ("GET", f"{app_path}/status"),
            ("GET", f"{app_path}/status"),
            ("GET", app_path),
            ("PUT", f"{app_path}/cancel"),
        ]
        stored = handle(submission)
        assert stored["status_url"] == f"{fake.url}{app_path}/status"
        assert stored["response_url"] == f"{fake.url}{app_path}"
        # what a naive rebuild would call does not exist at this fake (nor, for the subpath, at fal)
        async with httpx.AsyncClient() as client:
            naive = await client.get(
                f"{fake.url}/{VIDEO_MODEL}/requests/{submission.task_id}/status",
                headers={"Authorization": f"Key {fake.key}"},
            )
        assert naive.status_code == 404
    finally:
        await provider.close()
        await fake.stop()


async def test_a_new_provider_resumes_from_the_stored_submission(fake: FakeFal, provider: FalProvider) -> None:
    submission = await provider.submit(animate())
    assert (await provider.poll(submission)).status is TaskStatus.QUEUED
    await provider.close()

    stored = Submission(task_id=str(submission.task_id), status_url=str(submission.status_url))  # as in the DB
    restarted = FalProvider(key=fake.key, base_url=fake.url)
    try:
        assert await restarted.find(1) is None  # fal has no lookup by our job id
        result = await run_to_end(restarted, stored)
        assert result.status is TaskStatus.SUCCEEDED
        assert (await restarted.fetch(result.artifacts[0]))[4:8] == b"ftyp"
    finally:
        await restarted.close()


async def test_a_plain_status_url_is_followed_too(fake: FakeFal, provider: FalProvider) -> None:
    submission = await provider.submit(animate())
    plain = Submission(submission.task_id, handle(submission)["status_url"])
    result = await run_to_end(provider, plain)
    assert result.status is TaskStatus.SUCCEEDED and result.artifacts[0].mime == "video/mp4"


async def test_sheet_with_the_image_model(fake: FakeFal, provider: FalProvider) -> None:
    submission = await provider.submit(sheet())
    assert fake.submits()[0].path == "/fal-ai/bytedance/seedream/v4/edit"
    body = submitted_body(fake)
    assert body["image_urls"] == [uri(FRONT), uri(THREE_QUARTER), uri(SIDE)]
    assert body["image_size"] == {"width": 2048, "height": 1152}
    assert body["num_images"] == 1 and body["prompt"].startswith("A character sheet")
    result = await run_to_end(provider, submission)
    assert result.status is TaskStatus.SUCCEEDED
    (artifact,) = result.artifacts
    assert artifact.mime == "image/png" and artifact.duration is None

    with Image.open(io.BytesIO(await provider.fetch(artifact))) as image:
        assert image.format == "PNG" and abs(image.width / image.height - 16 / 9) < 0.05
        inked: np.ndarray = np.asarray(image.convert("L")).min(axis=0) < 240  # columns with ink
    runs = int(inked[0]) + int(np.count_nonzero(inked[1:] & ~inked[:-1]))
    assert runs == 3  # three figures side by side, white between them


async def test_kling_1_6_elements_takes_input_images_and_a_negative_prompt(fake: FakeFal) -> None:
    model = "fal-ai/kling-video/v1.6/standard/elements"
    provider = FalProvider(key=fake.key, base_url=fake.url, video_model=model)
    try:
        row = provider.capabilities.row(model)
        assert (row.durations, row.max_images, row.negative_prompt) == ((5, 10), 4, True)
        assert row.element_syntax.name == "plain"
        submission = await provider.submit(animate(model=model, negative_prompt="blurry, extra fingers"))
        body = submitted_body(fake)
        assert body["input_image_urls"] == [uri(FRONT), uri(THREE_QUARTER), uri(SIDE), uri(JACKET)]
        assert body["negative_prompt"] == "blurry, extra fingers" and "elements" not in body
        assert (await run_to_end(provider, submission)).status is TaskStatus.SUCCEEDED
        assert provider.estimate_cost(animate(model=model)) == Money.from_usd("0.280")
    finally:
        await provider.close()


# ------------------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"images": (FRONT, THREE_QUARTER, SIDE, FACE, BACK, JACKET, SWORD, FRONT)}, "at most 7 reference images"),
        ({"duration": 11}, "clips last 3-10 s, not 11 s"),
        ({"aspect_ratio": "4:3"}, "aspect ratio '4:3'"),
        ({"model": "kling-v2"}, "unknown model 'kling-v2'"),
        ({"images": ()}, "at least one reference image"),
        ({"prompt": "x" * 2501}, "longer than 2500"),
    ],
)
async def test_the_provider_refuses_what_fal_would_before_sending(
    fake: FakeFal, provider: FalProvider, changes: dict[str, Any], words: str
) -> None:
    with pytest.raises(FinalError) as caught:
        await provider.submit(animate(**changes))
    assert words in caught.value.message and caught.value.code == "invalid"
    assert fake.requests == []


async def test_extend_is_not_offered(fake: FakeFal, provider: FalProvider) -> None:
    with pytest.raises(FinalError, match="cannot do extend"):
        await provider.submit(animate(kind=WorkKind.EXTEND))
    assert fake.requests == []


async def test_a_sheet_needs_the_image_model_and_references(fake: FakeFal, provider: FalProvider) -> None:
    with pytest.raises(FinalError, match="unknown image model 'fal-ai/flux/dev'"):
        await provider.submit(replace(sheet(), model="fal-ai/flux/dev"))
    with pytest.raises(FinalError, match="at least one reference image"):
        await provider.submit(replace(sheet(), images=()))
    assert fake.requests == []


async def test_validation_error_at_submit_lists_the_fields(fake: FakeFal, provider: FalProvider) -> None:
    fake.validate_at_submit = True
    with pytest.raises(FinalError) as caught:
        await provider.submit(animate(prompt=" "))
    assert caught.value.message == "fal.ai refused this shot: prompt: String should have at least 1 character."
    assert caught.value.code == "string_too_short" and not caught.value.retryable
    assert fake.queued == {}


async def test_validation_error_at_completion_fails_the_task(fake: FakeFal, provider: FalProvider) -> None:
    """fal queues first and validates on the runner: the 422 comes back as the result of a COMPLETED request."""
    tiny = ref("front", "view", (10, 10, 10), (200, 200))
    submission = await provider.submit(animate(images=(tiny,)))
    result = await run_to_end(provider, submission)
    assert result.status is TaskStatus.FAILED and isinstance(result.error, FinalError)
    assert result.error.message == (
        "fal.ai refused this shot: elements.0.frontal_image_url: Image is too small; "
        "elements.0.reference_image_urls.0: Image is too small."
    )
    assert result.error.code == "image_too_small" and result.error.charged is False


async def test_completed_with_error_and_detail_list(fake: FakeFal, provider: FalProvider) -> None:
    fake.fail_next = [Failure()]  # prompt: field required
    result = await run_to_end(provider, await provider.submit(animate()))
    assert result.status is TaskStatus.FAILED and result.error is not None
    assert result.error.message == "fal.ai refused this shot: prompt: field required."
    assert result.error.code == "missing"


async def test_completed_without_error_but_the_result_fails(fake: FakeFal, provider: FalProvider) -> None:
    """COMPLETED is not success: the provider reads the result before saying so."""
    detail = [
        {
            "loc": ["body", "elements", 0, "reference_image_urls"],
            "msg": "elementReferList: size must be between 1 and 3",
            "type": "invalid_value",
        }
    ]
    fake.fail_next = [Failure(detail=detail, in_status=False)]
    result = await run_to_end(provider, await provider.submit(animate()))
    assert result.status is TaskStatus.FAILED and result.error is not None
    assert "elements.0.reference_image_urls: elementReferList: size must be between 1 and 3" in result.error.message


async def test_content_policy_is_a_final_safety_error(fake: FakeFal, provider: FalProvider) -> None:
    fake.fail_next = [content_policy("prompt")]
    result = await run_to_end(provider, await provider.submit(animate()))
    assert result.status is TaskStatus.FAILED and result.error is not None
    assert result.error.code == "content_policy"
    assert result.error.message.startswith("fal.ai's content checker blocked this shot (prompt).")
    assert "flagged by a content checker" in result.error.detail


async def test_flagged_sheet_image_is_a_safety_error(fake: FakeFal, provider: FalProvider) -> None:
    fake.flag_nsfw = True
    result = await run_to_end(provider, await provider.submit(sheet()))
    assert result.status is TaskStatus.FAILED and result.error is not None
    assert result.error.code == "content_policy" and "safety checker" in result.error.message


async def test_runner_failure_is_final_and_not_charged(fake: FakeFal, provider: FalProvider) -> None:
    fake.fail_next = [runner_error()]
    result = await run_to_end(provider, await provider.submit(animate()))
    assert result.status is TaskStatus.FAILED and result.error is not None
    assert result.error.code == "runner_server_error" and result.error.charged is False
    assert "problem on its side; nothing was charged" in result.error.message


async def test_wrong_key_is_final_and_never_echoed(fake: FakeFal, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    provider = FalProvider(key=WRONG_KEY, base_url=fake.url)
    try:
        with pytest.raises(FinalError) as caught:
            await provider.submit(animate())
        error = caught.value
        assert error.code == "auth" and "fal.ai key" in error.message and "admin" in error.message
        assert WRONG_KEY not in f"{error} {error.message} {error.detail} {error!r}"
        assert fake.submits()[0].authorization == f"Key {WRONG_KEY}" and fake.queued == {}
        assert caplog.records and WRONG_KEY not in caplog.text  # httpx/httpcore debug logs included
    finally:
        await provider.close()


async def test_a_key_rejected_while_polling_is_final(fake: FakeFal, provider: FalProvider) -> None:
    submission = await provider.submit(animate())
    fake.key = "rotated-key"
    with pytest.raises(FinalError) as caught:
        await provider.poll(submission)
    assert caught.value.code == "auth"


async def test_exhausted_balance(fake: FakeFal, provider: FalProvider) -> None:
    fake.locked_balance = True
    with pytest.raises(FinalError) as caught:
        await provider.submit(animate())
    assert caught.value.code == "balance" and "out of credit" in caught.value.message


async def test_unknown_request_is_final(fake: FakeFal, provider: FalProvider) -> None:
    submission = await provider.submit(animate())
    stored = handle(submission)
    other = {
        key: value.replace(submission.task_id, "0000-gone") for key, value in stored.items() if key.endswith("_url")
    }
    with pytest.raises(FinalError) as caught:
        await provider.poll(Submission("0000-gone", json.dumps({**stored, **other})))
    assert caught.value.code == "not_found"


async def test_urls_on_another_host_are_refused(fake: FakeFal, provider: FalProvider) -> None:
    fake.foreign_urls = True
    with pytest.raises(FinalError) as caught:
        await provider.submit(animate())
    assert caught.value.code == "bad_url"

    tampered = json.dumps(
        {"v": 1, "status_url": "http://evil.invalid/s", "response_url": "http://evil.invalid/r", "cancel_url": "x"}
    )
    before = len(fake.requests)
    with pytest.raises(FinalError, match="another host"):
        await provider.poll(Submission("id", tampered))
    with pytest.raises(FinalError, match="lost track"):
        await provider.poll(Submission("id", "not a handle"))
    assert len(fake.requests) == before


# ------------------------------------------------------------------------------------------------ retryable


@pytest.mark.parametrize(("header", "expected"), [("3", 3.0), (None, None)])
async def test_429_on_submit_is_retryable(
    fake: FakeFal, provider: FalProvider, header: str | None, expected: float | None
) -> None:
    fake.rate_limit_submits, fake.retry_after = 1, header
    with pytest.raises(RetryableError) as caught:
        await provider.submit(animate())
    assert caught.value.retry_after == expected and caught.value.rate_limited  # the worker waits longer
    assert caught.value.code == "concurrent_requests_limit" and "busy" in caught.value.message
    assert fake.queued == {}
    submission = await provider.submit(animate())  # the retry goes through
    assert (await run_to_end(provider, submission)).status is TaskStatus.SUCCEEDED


def test_retry_after_as_an_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    seconds = _retry_after(when)
    assert seconds is not None and 28 <= seconds <= 30
    assert _retry_after("soon") is None and _retry_after("99999") == 600.0


async def test_429_on_status_is_retryable(fake: FakeFal, provider: FalProvider) -> None:
    submission = await provider.submit(animate())
    fake.rate_limit_polls = 1
    with pytest.raises(RetryableError):
        await provider.poll(submission)
    assert (await run_to_end(provider, submission)).status is TaskStatus.SUCCEEDED


async def test_a_burst_of_server_errors_is_retryable(fake: FakeFal, provider: FalProvider) -> None:
    fake.server_errors = 2
    for _ in range(2):
        with pytest.raises(RetryableError) as caught:
            await provider.submit(animate())
        assert caught.value.code == "server_error" and "server problem" in caught.value.message
        assert not caught.value.rate_limited
    submission = await provider.submit(animate())
    fake.server_errors = 1
    with pytest.raises(RetryableError):
        await provider.poll(submission)
    assert (await run_to_end(provider, submission)).status is TaskStatus.SUCCEEDED
    assert len(fake.accepted_submits()) == 1


async def test_an_ingress_error_on_the_result_is_retryable(fake: FakeFal, provider: FalProvider) -> None:
    """A 5xx without x-fal-request-id came from fal's edge, not the request: ask again."""
    fake.fail_next = [Failure(status=502, detail="Bad gateway", request_id_header=False, in_status=False)]
    submission = await provider.submit(animate())
    await provider.poll(submission)
    await provider.poll(submission)
    with pytest.raises(RetryableError):
        await provider.poll(submission)


async def test_timeouts_are_retryable(fake: FakeFal) -> None:
    """A poll that times out is simply asked again; a submit that times out may have been queued at fal, which
    cannot be asked: its outcome is unknown (the worker never re-sends it on its own)."""
    provider = FalProvider(key=fake.key, base_url=fake.url, timeout=0.1)
    try:
        fake.stall_next = 0.5
        with pytest.raises(OutcomeUnknownError) as caught:
            await provider.submit(animate())
        assert caught.value.code == "timeout" and "fal may have queued it" in caught.value.detail
        submission = await provider.submit(animate(job_id=2))
        fake.stall_next = 0.5
        with pytest.raises(RetryableError):
            await provider.poll(submission)
    finally:
        await provider.close()


# ------------------------------------------------------------------------------------------------ downloads


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_result_over_the_cap_is_refused(fake: FakeFal, chunked: bool) -> None:
    fake.result_size, fake.chunked_results = 300_000, chunked
    provider = FalProvider(key=fake.key, base_url=fake.url, max_download_bytes=200_000)
    try:
        result = await run_to_end(provider, await provider.submit(animate()))
        with pytest.raises(FinalError) as caught:
            await provider.fetch(result.artifacts[0])
        assert caught.value.code == "too_large" and "larger than this bot accepts" in caught.value.message
    finally:
        await provider.close()


async def test_a_result_under_the_cap_streams_whole(fake: FakeFal) -> None:
    fake.result_size, fake.chunked_results = 300_000, True
    provider = FalProvider(key=fake.key, base_url=fake.url, max_download_bytes=400_000)
    try:
        result = await run_to_end(provider, await provider.submit(animate()))
        assert len(await provider.fetch(result.artifacts[0])) == 300_000
    finally:
        await provider.close()


async def test_an_expired_result_link_is_final(fake: FakeFal, provider: FalProvider) -> None:
    result = await run_to_end(provider, await provider.submit(animate()))
    fake.expire_files()
    with pytest.raises(FinalError) as caught:
        await provider.fetch(result.artifacts[0])
    assert caught.value.code == "expired" and "expired" in caught.value.message


async def test_data_uri_results_are_decoded(provider: FalProvider) -> None:
    data = await provider.fetch(Artifact("data:video/mp4;base64," + base64.b64encode(b"clip").decode(), "video/mp4"))
    assert data == b"clip"


# ------------------------------------------------------------------------------------------------ cancel


async def test_cancel_a_queued_request(fake: FakeFal, provider: FalProvider) -> None:
    submission = await provider.submit(animate())
    await provider.cancel(submission)
    cancel = fake.api_requests()[-1]
    assert (cancel.method, cancel.path, cancel.status) == (
        "PUT",
        f"/fal-ai/kling-video/requests/{submission.task_id}/cancel",
        202,
    )
    assert (await provider.poll(submission)).status is TaskStatus.CANCELED
    await provider.cancel(submission)  # again: already over, no error


# ------------------------------------------------------------------------------------------------ the fake's checks


@pytest.mark.parametrize(
    ("body", "field", "kind"),
    [
        ({"elements": [], "duration": "5"}, ["body", "prompt"], "missing"),
        ({"prompt": "p", "duration": "11"}, ["body", "duration"], "literal_error"),
        ({"prompt": "p", "duration": 5}, ["body", "duration"], "literal_error"),
        ({"prompt": "p", "image_urls": ["https://x/a.png"] * 8}, ["body", "elements"], "too_long"),
        (
            {"prompt": "p", "elements": [{"frontal_image_url": "https://x/a.png"}]},
            ["body", "elements", 0, "reference_image_urls"],
            "invalid_value",
        ),
    ],
)
async def test_the_fake_checks_inputs_like_fal(
    fake: FakeFal, body: dict[str, Any], field: list[Any], kind: str
) -> None:
    fake.validate_at_submit = True
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{fake.url}/{VIDEO_MODEL}", json=body, headers={"Authorization": f"Key {fake.key}"})
    assert answer.status_code == 422
    problems = answer.json()["detail"]
    assert any(p["loc"] == field and p["type"] == kind for p in problems), problems


# ------------------------------------------------------------------------------------------------ with the worker


async def test_the_worker_drives_fal_across_a_restart(tmp_path: Path, fake: FakeFal) -> None:
    """The real worker and database: submit, stop while running, a new worker and provider resume and deliver."""
    fake.queue_polls, fake.progress_polls = 2, 2
    storage = await Storage.open(tmp_path / "db.sqlite3", tmp_path / "blobs")
    delivery = NoDelivery()
    try:
        character = await storage.characters.create(1, "Ava", "tall, red hair", owner_id=1)
        bound = [
            BoundImage(label="front", role="view", blob=await storage.blobs.put(FRONT.data)),
            BoundImage(label="jacket", role="element", blob=await storage.blobs.put(JACKET.data)),
        ]
        job = await storage.jobs.create(
            guild_id=1,
            channel_id=1,
            user_id=1,
            character_id=character.id,
            character_name="Ava",
            character_version=1,
            kind="animate",
            provider="fal",
            model=VIDEO_MODEL,
            action="waves",
            prompt="@Element1 shows Ava: waves. Wearing @Element2 (outfit: jacket).",
            negative_prompt=None,
            params=ShotParams(duration=5, aspect_ratio="16:9", camera="static"),
            bound=bound,
            cost_estimate=Money.from_usd("0.56"),
        )

        async def worker_with_new_provider() -> tuple[Worker, FalProvider]:
            provider = FalProvider(key=fake.key, base_url=fake.url)
            provider.capabilities = replace(provider.capabilities, typical_seconds=0.05)
            registry = ProviderRegistry({"fal": provider}, default="fal")
            worker = Worker(storage.jobs, storage.blobs, registry, delivery, WorkerConfig())
            await worker.start()
            return worker, provider

        async def wait_for(states: set[JobState]) -> JobState:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                current = await storage.jobs.get(job.id)
                assert current is not None
                if current.state in states:
                    return current.state
                await asyncio.sleep(0.02)
            raise AssertionError(f"job never reached {states}")

        worker, provider = await worker_with_new_provider()
        await wait_for({JobState.RUNNING})
        await worker.stop()
        await provider.close()
        assert not any(r.path.startswith("/fal-media/") for r in fake.requests)

        worker, provider = await worker_with_new_provider()
        try:
            assert await wait_for({JobState.DONE, JobState.FAILED}) is JobState.DONE
        finally:
            await worker.stop()
            await provider.close()
        done = await storage.jobs.get(job.id)
        assert done is not None and done.task_id in fake.queued and done.cost_final == Money.from_usd("0.56")
        assert done.status_url is not None and json.loads(done.status_url)["kind"] == "animate"
        assert delivery.posted[job.id][4:8] == b"ftyp"
        assert len(fake.accepted_submits()) == 1  # resumed by its stored URLs, never submitted twice
        sent = submitted_body(fake)
        assert len(sent["elements"]) == 2 and sent["elements"][0]["frontal_image_url"].startswith("data:image/")
    finally:
        await storage.close()


# ------------------------------------------------------------------------------------------------ unknown outcomes


async def test_which_submit_failures_leave_the_outcome_unknown(fake: FakeFal, provider: FalProvider) -> None:
    """fal cannot be asked whether it queued a shot: a 5xx other than 503 (it may have queued it) is an unknown
    outcome; a 503 or 429 is "busy" (not taken, waited for); no connection at all is a plain retry."""
    fake.server_errors = 1  # an ingress 502
    with pytest.raises(OutcomeUnknownError) as unknown:
        await provider.submit(animate())
    assert unknown.value.code == "server_error"
    fake.rate_limit_submits = 1
    with pytest.raises(RetryableError) as busy:
        await provider.submit(animate())
    assert busy.value.rate_limited and not isinstance(busy.value, OutcomeUnknownError)
    assert provider.capabilities.findable is False and await provider.find(1) is None
    closed = FalProvider(key=fake.key, base_url="http://127.0.0.1:9", timeout=1.0)  # nothing listens there
    try:
        with pytest.raises(RetryableError) as refused:
            await closed.submit(animate())
        assert refused.value.code == "network" and not isinstance(refused.value, OutcomeUnknownError)
    finally:
        await closed.close()


# ------------------------------------------------------------------------------------------------ Kling O3

O3 = "fal-ai/kling-video/o3/pro/reference-to-video"
O3_STANDARD = "fal-ai/kling-video/o3/standard/reference-to-video"
V16 = "fal-ai/kling-video/v1.6/standard/elements"
BEN_FRONT = replace(ref("ben_front", "view", (20, 120, 200)), subject=1)
BEN_SIDE = replace(ref("ben_side", "view", (200, 120, 20)), subject=1)
START = Frame(jpeg((240, 240, 240), (720, 405)), "image/jpeg")
END = Frame(jpeg((10, 90, 40), (720, 405)), "image/jpeg")
TWO = (FRONT, THREE_QUARTER, BEN_FRONT, BEN_SIDE, JACKET)


def o3(**changes: Any) -> RenderRequest:
    """Ava (front, 3/4) and Ben (front, side) in one shot, Ava in the jacket, on O3 pro."""
    prompt = "@Element1 and @Element2 meet in the square; @Element1 wears @Element3."
    return replace(animate(model=O3, images=TWO, prompt=prompt), **changes)


def frame_uri(frame: Frame) -> str:
    return f"data:{frame.mime};base64,{base64.b64encode(frame.data).decode()}"


async def test_the_o3_row(provider: FalProvider) -> None:
    row = provider.capabilities.row(O3)
    assert (row.max_images, row.max_subjects, row.audio) == (7, 7, True)  # fal's "max 7 total": one element each
    assert (row.start_frame, row.end_frame) == ("start_image_url", "end_image_url")
    assert row.multi_shot is not None and (row.multi_shot.max_shots, row.multi_shot.min_shot_seconds) == (6, 3)
    assert row.durations[0] == 5 and set(row.durations) == set(range(3, 16)) and row.free_durations
    assert (row.per_second(None), row.per_second(None, audio=True)) == (Money.from_usd("0.112"), Money.from_usd("0.14"))
    old = provider.capabilities.row(V16)
    assert (old.audio, old.end_frame, old.multi_shot, old.max_subjects) == (False, None, None, 1)
    o1 = provider.capabilities.default_row
    assert (o1.audio, o1.end_frame, o1.multi_shot) == (False, None, None)
    assert {row.model for row in SPEC.rows if row.makes_clips} == set(provider.capabilities.models)


async def test_two_characters_on_o3_are_two_elements(fake: FakeFal, provider: FalProvider) -> None:
    assert reference_tokens(TWO, DIALECT) == ("@Element1", "@Element1", "@Element2", "@Element2", "@Element3")
    submission = await provider.submit(o3())
    assert fake.submits()[0].path == f"/{O3}"
    body = submitted_body(fake)
    assert body["prompt"].startswith("@Element1 and @Element2")
    assert body["elements"] == [
        {"frontal_image_url": uri(FRONT), "reference_image_urls": [uri(THREE_QUARTER)]},
        {"frontal_image_url": uri(BEN_FRONT), "reference_image_urls": [uri(BEN_SIDE)]},
        {"frontal_image_url": uri(JACKET), "reference_image_urls": [uri(JACKET)]},
    ]
    assert (body["duration"], body["generate_audio"]) == ("5", False)  # a string enum; audio said either way
    assert "start_image_url" not in body and "end_image_url" not in body and "multi_prompt" not in body
    assert handle(submission)["status_url"].endswith(f"/fal-ai/kling-video/requests/{submission.task_id}/status")
    assert (await run_to_end(provider, submission)).status is TaskStatus.SUCCEEDED  # the fake's checks passed


async def test_a_characters_views_stay_together_in_any_order(fake: FakeFal, provider: FalProvider) -> None:
    """Views of two characters interleaved still form one element per character, numbered by first appearance."""
    images = (BEN_FRONT, FRONT, BEN_SIDE, THREE_QUARTER)
    assert reference_tokens(images, DIALECT) == ("@Element1", "@Element2", "@Element1", "@Element2")
    await provider.submit(o3(images=images))
    assert [e["frontal_image_url"] for e in submitted_body(fake)["elements"]] == [uri(BEN_FRONT), uri(FRONT)]


async def test_start_and_end_frames_on_o3(fake: FakeFal, provider: FalProvider) -> None:
    submission = await provider.submit(o3(start_frame=START, end_frame=END, duration=10))
    body = submitted_body(fake)
    assert (body["start_image_url"], body["end_image_url"]) == (frame_uri(START), frame_uri(END))
    assert body["duration"] == "10"
    assert (await run_to_end(provider, submission)).status is TaskStatus.SUCCEEDED


async def test_audio_on_o3_is_asked_for_and_priced(fake: FakeFal, provider: FalProvider) -> None:
    request = o3(audio=True, duration=8)
    submission = await provider.submit(request)
    assert submitted_body(fake)["generate_audio"] is True
    assert provider.estimate_cost(request) == Money.from_usd("1.12")  # $0.14/s with audio
    assert provider.estimate_cost(o3(duration=8)) == Money.from_usd("0.896")  # $0.112/s without
    assert provider.estimate_cost(o3(model=O3_STANDARD, audio=True, duration=8)) == Money.from_usd("1.12")
    assert (await run_to_end(provider, submission)).status is TaskStatus.SUCCEEDED


async def test_a_storyboard_on_o3(fake: FakeFal, provider: FalProvider) -> None:
    shots = (ShotPrompt("@Element1 waves at @Element2.", 3), ShotPrompt("@Element2 waves back, smiling.", 5))
    submission = await provider.submit(o3(shots=shots, duration=8))
    body = submitted_body(fake)
    assert body["multi_prompt"] == [
        {"prompt": "@Element1 waves at @Element2.", "duration": "3"},
        {"prompt": "@Element2 waves back, smiling.", "duration": "5"},
    ]
    assert body["shot_type"] == "customize" and "prompt" not in body  # one or the other, never both
    assert len(body["elements"]) == 3 and body["duration"] == "8"
    assert (await run_to_end(provider, submission)).status is TaskStatus.SUCCEEDED


async def test_a_single_view_repeats_as_its_reference(fake: FakeFal, provider: FalProvider) -> None:
    """fal answers 422 to an element with a frontal image and no reference images: the provider never sends one."""
    submission = await provider.submit(o3(images=(FRONT, BEN_FRONT)))
    elements = submitted_body(fake)["elements"]
    assert [e["reference_image_urls"] for e in elements] == [[uri(FRONT)], [uri(BEN_FRONT)]]
    assert (await run_to_end(provider, submission)).status is TaskStatus.SUCCEEDED


async def test_empty_reference_images_are_fals_422(fake: FakeFal, provider: FalProvider) -> None:
    """The same element sent raw, with `reference_image_urls: []`: queued, COMPLETED with an error, and its result
    a 422 `detail[]` in fal's shape, which the provider reads into the member's message."""
    body = {
        "prompt": "@Element1 waves.",
        "elements": [{"frontal_image_url": uri(FRONT), "reference_image_urls": []}],
        "duration": "5",
    }
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{fake.url}/{O3}", json=body, headers={"Authorization": f"Key {fake.key}"})
    assert answer.status_code == 200
    request_id = answer.json()["request_id"]
    result = await run_to_end(provider, Submission(request_id, answer.json()["status_url"]))
    assert result.status is TaskStatus.FAILED and result.error is not None
    assert result.error.message == (
        "fal.ai refused this shot: elements.0.reference_image_urls: elementReferList: size must be between 1 and 3."
    )
    assert result.error.code == "invalid_value"
    async with httpx.AsyncClient() as client:
        raw = await client.get(answer.json()["response_url"], headers={"Authorization": f"Key {fake.key}"})
    assert raw.status_code == 422
    (item,) = raw.json()["detail"]
    assert item["loc"] == ["body", "elements", 0, "reference_image_urls"] and item["input"] == []
    assert set(item) == {"loc", "msg", "type", "url", "input", "ctx"}


@pytest.mark.parametrize(
    ("body", "field", "kind"),
    [
        ({"prompt": "p", "duration": 5}, ["body", "duration"], "literal_error"),  # a number, not "5"
        ({"prompt": "p", "duration": "16"}, ["body", "duration"], "literal_error"),
        ({"prompt": "p", "generate_audio": "yes"}, ["body", "generate_audio"], "bool_type"),
        (
            {"prompt": "p", "multi_prompt": [{"prompt": "a", "duration": "5"}]},
            ["body", "prompt"],
            "value_error",
        ),
        (
            {"multi_prompt": [{"prompt": "a", "duration": 3}, {"prompt": "b", "duration": "2"}], "duration": "5"},
            ["body", "multi_prompt", 0, "duration"],
            "literal_error",
        ),
        (
            {"multi_prompt": [{"prompt": "a", "duration": "3"}, {"prompt": "b", "duration": "3"}], "duration": "5"},
            ["body", "multi_prompt"],
            "value_error",
        ),
        ({"prompt": "p", "end_image_url": "not a url"}, ["body", "end_image_url"], "file_download_error"),
    ],
)
async def test_the_fake_checks_o3_inputs_like_fal(
    fake: FakeFal, body: dict[str, Any], field: list[Any], kind: str
) -> None:
    fake.validate_at_submit = True
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{fake.url}/{O3}", json=body, headers={"Authorization": f"Key {fake.key}"})
    assert answer.status_code == 422
    problems = answer.json()["detail"]
    assert any(p["loc"] == field and p["type"] == kind for p in problems), problems


SEVEN_ELEMENTS = tuple(ref(f"prop{n}", "element", (40 * n, 20, 20), (500, 500)) for n in range(1, 7))


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        (
            {"model": V16, "images": (FRONT,), "audio": True},
            "fal-ai/kling-video/v1.6/standard/elements renders no audio",
        ),
        ({"model": V16, "images": (FRONT,), "end_frame": END}, "takes no end frame"),
        ({"model": V16, "images": (FRONT, BEN_FRONT)}, "at most 1 characters in one shot, not 2"),
        ({"model": VIDEO_MODEL, "audio": True}, "renders no audio"),
        ({"model": VIDEO_MODEL, "start_frame": START}, "takes no start frame"),
        ({"model": VIDEO_MODEL, "shots": (ShotPrompt("a", 5),)}, "renders one shot per task"),
        ({"duration": 16}, "clips last 3-15 s, not 16 s"),
        ({"shots": (ShotPrompt("a", 2), ShotPrompt("b", 3))}, "each shot lasts at least 3 s"),
        ({"shots": (ShotPrompt("a", 3), ShotPrompt("b", 3))}, "add up to 6, not the clip's 5"),
        ({"images": (FRONT, *SEVEN_ELEMENTS[:5]), "end_frame": END, "start_frame": START}, "at most 7 characters"),
    ],
)
async def test_what_an_endpoint_cannot_do_is_refused_before_sending(
    fake: FakeFal, provider: FalProvider, changes: dict[str, Any], words: str
) -> None:
    with pytest.raises(FinalError) as caught:
        await provider.submit(o3(**changes))
    assert words in caught.value.message and caught.value.code == "invalid"
    assert fake.requests == []


async def test_the_worker_renders_two_characters_on_o3_across_a_restart(tmp_path: Path, fake: FakeFal) -> None:
    """Two characters, audio and an end frame on O3, through the real worker: stopped while fal renders, resumed
    by a new worker and provider from the stored URLs, delivered once, submitted once, at the audio price."""
    fake.queue_polls, fake.progress_polls = 2, 2
    storage = await Storage.open(tmp_path / "db.sqlite3", tmp_path / "blobs")
    delivery = NoDelivery()
    try:
        ava = await storage.characters.create(1, "Ava", "tall, red hair", owner_id=1)
        bound = [
            BoundImage(label="front", role="view", blob=await storage.blobs.put(FRONT.data)),
            BoundImage(label="side", role="view", blob=await storage.blobs.put(SIDE.data)),
            BoundImage(label="front", role="view", blob=await storage.blobs.put(BEN_FRONT.data), subject=1),
        ]
        estimate = Money.from_usd("0.84")  # 6 s at $0.14/s with audio
        job = await storage.jobs.create(
            guild_id=1,
            channel_id=1,
            user_id=1,
            character_id=ava.id,
            character_name="Ava",
            character_version=1,
            kind="animate",
            provider="fal",
            model=O3,
            action="meet",
            prompt="@Element1 and @Element2 meet in the square and talk.",
            negative_prompt=None,
            params=ShotParams(
                duration=6,
                aspect_ratio="16:9",
                camera="static",
                audio=True,
                end_frame=await storage.blobs.put(END.data),
            ),
            bound=bound,
            cost_estimate=estimate,
        )

        async def worker_with_new_provider() -> tuple[Worker, FalProvider]:
            provider = FalProvider(key=fake.key, base_url=fake.url)
            provider.capabilities = replace(provider.capabilities, typical_seconds=0.05)
            registry = ProviderRegistry({"fal": provider}, default="fal")
            worker = Worker(storage.jobs, storage.blobs, registry, delivery, WorkerConfig())
            await worker.start()
            return worker, provider

        async def wait_for(states: set[JobState]) -> JobState:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                current = await storage.jobs.get(job.id)
                assert current is not None
                if current.state in states:
                    return current.state
                await asyncio.sleep(0.02)
            raise AssertionError(f"job never reached {states}")

        worker, provider = await worker_with_new_provider()
        await wait_for({JobState.RUNNING})
        await worker.stop()
        await provider.close()
        assert not any(r.path.startswith("/fal-media/") for r in fake.requests)

        worker, provider = await worker_with_new_provider()
        try:
            assert await wait_for({JobState.DONE, JobState.FAILED}) is JobState.DONE
        finally:
            await worker.stop()
            await provider.close()
        done = await storage.jobs.get(job.id)
        assert done is not None and done.cost_final == estimate
        assert delivery.posted[job.id][4:8] == b"ftyp"
        assert len(fake.accepted_submits()) == 1 and fake.accepted_submits()[0].path == f"/{O3}"
        sent = submitted_body(fake)
        assert [len(e["reference_image_urls"]) for e in sent["elements"]] == [1, 1]  # Ava: side; Ben: his front
        assert sent["generate_audio"] is True and sent["end_image_url"].startswith("data:image/")
        assert sent["duration"] == "6"
    finally:
        await storage.close()
