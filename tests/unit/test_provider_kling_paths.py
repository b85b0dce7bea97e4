"""Kling's new-standard API (bot.providers.kling_paths) against the fake Kling over real HTTP: kling-3.0 with its
lengths, audio, frames and storyboards, kling-3.0-omni with two characters, a lost answer found by external id, a
restart mid-render, the new callback shape, and Standard Webhooks signatures on callbacks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from bot.domain import Money
from bot.jobs.callbacks import CallbackServer, CallbackUrls, callback_secret
from bot.providers import kling_paths
from bot.providers.base import FinalError, Frame, ReferenceImage, ShotPrompt, TaskStatus
from bot.providers.kling import KlingProvider, parse_callback
from tests.support.fake_providers.kling import FakeKling, sample_video
from tests.support.figures import figure_png
from tests.unit.test_provider_kling import ACCESS, FRONT, JACKET, SECRET, SIDE, shot, submit_like_the_worker, until_done

API_KEY = "kling-api-key-for-tests"
V3 = "/image-to-video/kling-3.0"
OMNI = "/omni-video/kling-3.0-omni"
END = Frame(figure_png((200, 60, 60), size=(600, 800)), "image/png")
KAI = ReferenceImage("front", "view", figure_png((30, 90, 200), size=(600, 800)), "image/png", subject=1)
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
async def kling() -> AsyncIterator[FakeKling]:
    fake = FakeKling(access_key=ACCESS, secret_key=SECRET, api_key=API_KEY)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def provider(kling: FakeKling) -> AsyncIterator[KlingProvider]:
    made = KlingProvider(base_url=kling.base_url, api_key=API_KEY, model="kling-3.0")
    try:
        yield made
    finally:
        await made.close()


async def test_kling_3_0_renders_12_s_with_audio_and_an_end_frame(kling: FakeKling, provider: KlingProvider) -> None:
    request = shot(model="kling-3.0", duration=12, audio=True, end_frame=END, negative_prompt=None)
    assert provider.estimate_cost(request) == Money.from_usd("1.512")  # 0.9 U/s with audio x 12 s at $0.14
    submission = await provider.submit(request)
    [body] = kling.bodies(V3)
    kinds = [item["type"] for item in body["contents"]]
    assert kinds == ["prompt", "first_frame", "last_frame"]
    assert body["settings"] == {"resolution": "720p", "duration": 12, "audio": "native", "multi_shot": False}
    assert body["options"]["external_task_id"] == "1"
    assert submission.status_url == "/tasks?task_ids=" + submission.task_id
    [*_, done] = await until_done(provider, submission)
    assert done.status is TaskStatus.SUCCEEDED and done.charged == Money.from_usd("1.512")
    assert await provider.fetch(done.artifacts[0]) == sample_video()


async def test_a_storyboard_goes_as_settings_shots_with_no_prompt(kling: FakeKling, provider: KlingProvider) -> None:
    shots = (ShotPrompt("she opens the door", 4), ShotPrompt("she steps out into the rain", 6))
    submission = await provider.submit(shot(model="kling-3.0", duration=10, shots=shots))
    [body] = kling.bodies(V3)
    assert "prompt" not in [item["type"] for item in body["contents"]]
    assert body["settings"]["multi_shot"] is True and body["settings"]["shot_type"] == "customize"
    assert [s["duration"] for s in body["settings"]["shots"]] == [4, 6]
    [*_, done] = await until_done(provider, submission)
    assert done.status is TaskStatus.SUCCEEDED


async def test_two_characters_are_two_elements_of_one_kling_3_0_omni_shot(kling: FakeKling) -> None:
    provider = KlingProvider(base_url=kling.base_url, api_key=API_KEY, model="kling-3.0-omni")
    try:
        request = shot(
            model="kling-3.0-omni",
            images=(FRONT, SIDE, KAI, JACKET),
            prompt="<<<element_1>>> hands <<<image_1>>> to <<<element_2>>>",
            negative_prompt=None,
        )
        submission = await submit_like_the_worker(provider, request)
        [body] = kling.bodies(OMNI)
        elements = [item for item in body["contents"] if item["type"] == "element"]
        assert [e["id"] for e in elements] == ["element_1", "element_2"]
        assert all(isinstance(e["element_id"], str) for e in elements) and len({e["element_id"] for e in elements}) == 2
        assert [item["type"] for item in body["contents"]].count("image") == 1  # the jacket
        assert body["settings"]["aspect_ratio"] == "16:9"  # no first frame given
        [*_, done] = await until_done(provider, submission)
        assert done.status is TaskStatus.SUCCEEDED
    finally:
        await provider.close()


async def test_a_lost_answer_is_found_by_external_id_and_never_sent_twice(
    kling: FakeKling, provider: KlingProvider
) -> None:
    kling.lose_submits = 1
    request = shot(model="kling-3.0", job_id=7)
    with pytest.raises(Exception):  # noqa: B017 - the transport error, typed by the provider
        await provider.submit(request)
    found = await provider.find(7)
    assert found is not None and len(kling.tasks) == 1
    assert found.task_id == next(iter(kling.tasks)) and kling_paths.is_status_path(found.status_url)
    assert await provider.find(8) is None


async def test_a_restarted_bot_polls_the_stored_task_to_its_end(kling: FakeKling, provider: KlingProvider) -> None:
    submission = await provider.submit(shot(model="kling-3.0"))
    first = await provider.poll(submission)
    assert first.status in (TaskStatus.QUEUED, TaskStatus.RUNNING)
    await provider.close()
    again = KlingProvider(base_url=kling.base_url, api_key=API_KEY, model="kling-3.0")
    try:
        [*_, done] = await until_done(again, replace(submission))
        assert done.status is TaskStatus.SUCCEEDED and len(kling.tasks) == 1
    finally:
        await again.close()


async def test_a_failed_task_keeps_klings_words(kling: FakeKling, provider: KlingProvider) -> None:
    kling.fail_with = "Failure to pass the risk control system"
    submission = await provider.submit(shot(model="kling-3.0"))
    [*_, done] = await until_done(provider, submission)
    assert done.status is TaskStatus.FAILED and done.error is not None
    assert "content safety" in done.error.message and done.error.detail == "Failure to pass the risk control system"


async def test_what_the_new_api_cannot_take_is_refused_before_sending(
    kling: FakeKling, provider: KlingProvider
) -> None:
    for request, words in (
        (shot(model="kling-3.0", duration=20), "3-15 s, not 20 s"),
        (shot(model="kling-3.0-turbo", audio=True), "renders no audio"),
        (shot(model="kling-3.0", images=(FRONT, KAI)), "at most 1 characters"),
    ):
        with pytest.raises(FinalError) as refused:
            await provider.submit(request)
        assert words in refused.value.message, refused.value.message
    assert kling.create_attempts == 0


async def test_the_key_pair_cannot_reach_the_new_api(kling: FakeKling) -> None:
    with pytest.raises(ValueError, match="LIKENESS_KLING_API_KEY"):
        KlingProvider(base_url=kling.base_url, access_key=ACCESS, secret_key=SECRET, model="kling-3.0")
    pair = KlingProvider(base_url=kling.base_url, access_key=ACCESS, secret_key=SECRET)
    assert "kling-3.0" not in pair.capabilities.models and "kling-v3" in pair.capabilities.models
    keyed = KlingProvider(base_url=kling.base_url, api_key=API_KEY)
    assert {"kling-3.0", "kling-3.0-turbo", "kling-3.0-omni"} <= set(keyed.capabilities.models)
    await pair.close()
    await keyed.close()


def test_a_new_api_callback_reads_as_an_update() -> None:
    body = {
        "id": "9001",
        "status": "succeeded",
        "external_task_id": "42",
        "updated_at": 1700000000000,
        "outputs": [{"type": "video", "url": "https://cdn.example/v.mp4", "duration": "12.0"}],
        "billing": [{"resource": "video", "units": "10.8"}],
    }
    update = parse_callback(body)
    assert update.task_id == "9001" and update.external_task_id == "42" and update.updated_at == 1700000000000
    assert update.result.status is TaskStatus.SUCCEEDED and update.result.charged == Money.from_usd("1.512")
    assert update.result.artifacts[0].duration == 12.0
    assert parse_callback({**body, "status": "processing"}).result.status is TaskStatus.RUNNING


async def test_signed_callbacks_are_taken_and_unsigned_or_forged_ones_refused(
    kling: FakeKling, provider: KlingProvider, tmp_path: Path
) -> None:
    urls = CallbackUrls("http://127.0.0.1:1/", callback_secret(tmp_path))
    nudged: list[int] = []
    counted: list[tuple[str, str]] = []
    server = CallbackServer(
        urls,
        lambda _provider, job: nudged.append(job),
        "127.0.0.1",
        0,
        min_interval=0.0,
        count=lambda name, outcome: counted.append((name, outcome)),
        signing_secrets={"kling": WEBHOOK_SECRET},
    )
    await server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"

        async def render(job_id: int) -> None:
            callback = urls.url_for("kling", job_id).replace("http://127.0.0.1:1", base)
            submission = await provider.submit(shot(model="kling-3.0", job_id=job_id, callback_url=callback))
            await until_done(provider, submission)
            async with asyncio.timeout(10):
                while len([c for c in kling.callbacks if c[1].get("status") == "succeeded"]) < job_id:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)

        kling.webhook_secret = WEBHOOK_SECRET
        await render(1)
        assert nudged == [1] and all(status == 200 for _url, _body, status in kling.callbacks)

        kling.webhook_secret, kling.sign_with = None, None  # unsigned
        await render(2)
        kling.sign_with = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="  # another secret: a forgery
        await render(3)
        assert nudged == [1]
        refused = [status for _url, body, status in kling.callbacks if body.get("external_task_id") in ("2", "3")]
        assert refused and set(refused) == {401}
        assert ("kling", "refused") in counted
    finally:
        await server.close()
