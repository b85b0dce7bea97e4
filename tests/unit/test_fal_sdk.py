"""The official `fal-client` SDK against the fake fal queue server, over a real socket on 127.0.0.1.

The fake is what the provider's own tests trust; the SDK is fal's reading of its own API. If the SDK cannot talk
to the fake, the fake is wrong (providers-2026.md §A, F1/F2: the `logs` key in every status answer, HTTP 200 on
status). The SDK builds its submit URL from `QUEUE_URL_FORMAT` (`https://{FAL_QUEUE_RUN_HOST}/`, fixed at import),
so the test points that module attribute at the fake's plain-HTTP address; everything after the submit follows the
URLs the fake answered with, as the SDK does with fal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import fal_client
import fal_client.client as fal_sdk
import pytest

from bot.providers.fal import FalProvider
from tests.support.fake_providers.fal import FakeFal
from tests.support.fal_requests import VIDEO_MODEL, animate

O3 = "fal-ai/kling-video/o3/pro/reference-to-video"
APP = "fal-ai/kling-video"  # what status, result and cancel URLs keep (no subpath)


def o3_input() -> dict[str, object]:
    """An O3 input as fal's page shows it: two elements, each with a reference image, the duration a string."""
    art = "https://v3b.fal.media/files/b/0a8d1b1a/"
    return {
        "prompt": "@Element1 and @Element2 enter the scene from two sides.",
        "elements": [
            {"frontal_image_url": f"{art}ava_front.png", "reference_image_urls": [f"{art}ava_side.png"]},
            {"frontal_image_url": f"{art}ben_front.png", "reference_image_urls": [f"{art}ben_side.png"]},
        ],
        "duration": "8",
        "aspect_ratio": "16:9",
        "generate_audio": True,
    }


@pytest.fixture
async def fake() -> AsyncIterator[FakeFal]:
    server = FakeFal(latency=0.001)
    server.queue_polls, server.progress_polls = 2, 1
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def sdk(fake: FakeFal, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[fal_client.AsyncClient]:
    monkeypatch.setattr(fal_sdk, "QUEUE_URL_FORMAT", f"{fake.url}/")
    monkeypatch.setenv("FAL_KEY", fake.key)  # the SDK's own way to find the key
    client = fal_client.AsyncClient()
    try:
        yield client
    finally:
        http = await client._client  # pyright: ignore[reportPrivateUsage]
        await http.aclose()


async def test_submit_status_with_logs_and_result(fake: FakeFal, sdk: fal_client.AsyncClient) -> None:
    handle = await sdk.submit(O3, arguments=o3_input())
    submit = fake.accepted_submits()[0]
    assert (submit.path, submit.authorization) == (f"/{O3}", f"Key {fake.key}")
    assert handle.request_id in fake.queued
    assert handle.status_url == f"{fake.url}/{APP}/requests/{handle.request_id}/status"

    first = await handle.status(with_logs=True)
    assert first == fal_client.Queued(position=1)
    assert await handle.status() == fal_client.Queued(position=0)
    running = await handle.status(with_logs=True)
    assert isinstance(running, fal_client.InProgress)
    assert running.logs is not None and running.logs[0]["message"] == "Generating..."
    done = await handle.status()  # without logs: the key is there, empty
    assert isinstance(done, fal_client.Completed) and done.logs is None and done.error is None
    assert done.metrics == {"inference_time": 1.25}

    polls = [r for r in fake.api_requests() if r.path.endswith("/status")]
    assert [r.status for r in polls] == [200, 200, 200, 200]  # fal's status answers are 200 in every state
    assert [r.query["logs"] for r in polls] == ["true", "false", "true", "false"]  # how the SDK asks

    result = await handle.get()
    assert result["video"]["content_type"] == "video/mp4" and result["video"]["url"].startswith(fake.url)


async def test_a_handle_rebuilt_from_the_request_id(fake: FakeFal, sdk: fal_client.AsyncClient) -> None:
    """The SDK's own restart path (`from_request_id`) lands on the URLs the fake gave: no subpath."""
    handle = await sdk.submit(VIDEO_MODEL, arguments={"prompt": "p", "image_urls": ["https://x.invalid/a.png"]})
    http = await sdk._client  # pyright: ignore[reportPrivateUsage]
    again = fal_client.AsyncRequestHandle.from_request_id(http, VIDEO_MODEL, handle.request_id)
    assert (again.status_url, again.response_url, again.cancel_url) == (
        handle.status_url,
        handle.response_url,
        handle.cancel_url,
    )
    seen = [status async for status in again.iter_events(with_logs=True, interval=0.0)]
    assert [type(status) for status in seen] == [
        fal_client.Queued,
        fal_client.Queued,
        fal_client.InProgress,
        fal_client.Completed,
    ]
    last = seen[-1]
    assert isinstance(last, fal_client.Completed) and last.logs is not None and last.logs[0]["level"] == "INFO"
    assert "video" in await again.get(interval=0.0)


async def test_cancel_a_queued_request(fake: FakeFal, sdk: fal_client.AsyncClient) -> None:
    handle = await sdk.submit(O3, arguments=o3_input())
    await handle.cancel()
    assert fake.queued[handle.request_id].state == "canceled"
    status = await handle.status()
    assert isinstance(status, fal_client.Completed) and status.error_type == "client_cancelled"
    with pytest.raises(fal_client.FalClientHTTPError) as caught:
        await handle.get()
    assert caught.value.status_code == 499
    with pytest.raises(fal_client.FalClientHTTPError) as again:  # already over: fal says so with a 400
        await handle.cancel()
    assert again.value.status_code == 400


async def test_a_validation_error_reaches_the_sdk_as_fal_sends_it(fake: FakeFal, sdk: fal_client.AsyncClient) -> None:
    """O3 with an element whose reference_image_urls is empty: COMPLETED with an error, then a 422 `detail[]`."""
    arguments = o3_input()
    arguments["elements"] = [{"frontal_image_url": "https://x.invalid/a.png", "reference_image_urls": []}]
    arguments["duration"] = 8  # a number, where fal takes the string enum "3".."15"
    handle = await sdk.submit(O3, arguments=arguments)
    *_, last = [status async for status in handle.iter_events(interval=0.0)]
    assert isinstance(last, fal_client.Completed) and last.error == "Invalid status code: 422"
    with pytest.raises(fal_client.FalClientHTTPError) as caught:
        await handle.get()
    assert caught.value.status_code == 422
    detail = caught.value.response.json()["detail"]
    by_field = {tuple(item["loc"]): item for item in detail}
    empty = by_field[("body", "elements", 0, "reference_image_urls")]
    assert (empty["type"], empty["input"], empty["url"]) == (
        "invalid_value",
        [],
        "https://docs.fal.ai/errors#invalid_value",
    )
    assert by_field[("body", "duration")]["type"] == "literal_error"


async def test_the_sdk_retries_a_busy_submit_by_itself(fake: FakeFal, sdk: fal_client.AsyncClient) -> None:
    """F4: the SDK re-sends a 429 submit on its own (the bot's provider never does); the fake's 429 is one it
    recognises."""
    fake.rate_limit_submits = 1
    handle = await sdk.submit(O3, arguments=o3_input())
    assert [r.status for r in fake.submits()] == [429, 200] and handle.request_id in fake.queued


async def test_the_provider_and_the_sdk_follow_the_same_request(fake: FakeFal, sdk: fal_client.AsyncClient) -> None:
    """A request the bot's provider submitted, read back through the SDK by its request id: one contract."""
    provider = FalProvider(key=fake.key, base_url=fake.url)
    try:
        submission = await provider.submit(animate())
    finally:
        await provider.close()
    http = await sdk._client  # pyright: ignore[reportPrivateUsage]
    handle = fal_client.AsyncRequestHandle.from_request_id(http, VIDEO_MODEL, submission.task_id)
    result = await handle.get(interval=0.0)
    assert result["video"]["file_name"] == "output.mp4"
    assert fake.queued[submission.task_id].failure is None  # the provider's body passed the fake's checks
