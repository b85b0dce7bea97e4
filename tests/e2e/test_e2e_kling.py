"""/animate through the real bot and the fake Discord, rendered by the Kling provider on the fake Kling server."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from PIL import Image

from bot.domain import JobState, Money
from tests.support.bot_runner import BotRunner, World
from tests.support.characters import ava_with_front_view
from tests.support.fake_discord import FakeDiscord
from tests.support.fake_providers.kling import IMAGE2VIDEO, FakeKling, sample_video
from tests.support.figures import RED, figure_png
from tests.support.kling_keys import running_kling, use_kling
from tests.support.shots import animate, job_state, queued_id, result_of
from tests.support.waiting import until


@pytest.fixture
async def kling() -> AsyncIterator[FakeKling]:
    async with running_kling() as fake:
        yield fake


async def until_done(runner: BotRunner, job_id: int) -> None:
    """The result is posted just before the job is marked done."""
    async with asyncio.timeout(10):
        while await job_state(runner, job_id) is not JobState.DONE:  # noqa: ASYNC110 - state is in the DB
            await asyncio.sleep(0.02)


async def test_animate_with_kling_delivers_the_clip(
    kling: FakeKling, fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    use_kling(runner, kling)
    await ava_with_front_view(fake, world)
    job_id = await animate(fake, world, "waves at the camera and smiles", provider="kling")
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the Kling clip")
    [result] = result_of(fake, world, job_id)
    assert "kling/kling-v1-6" in result.content
    [(filename, data, _type)] = result.attachments
    assert filename == f"ava-shot-{job_id}.mp4" and data == sample_video()

    [body] = kling.bodies(IMAGE2VIDEO)
    assert body["external_task_id"] == str(job_id) and body["duration"] == "5" and body["mode"] == "std"
    assert "Waves at the camera and smiles" in body["prompt"] and body["negative_prompt"]
    assert kling.create_attempts == 1 and len(kling.downloads()) == 1
    await until_done(runner, job_id)
    assert runner.bot is not None
    job = await runner.bot.services.storage.jobs.get(job_id)
    assert job is not None
    assert job.cost_estimate.usd == Decimal("0.28") and (job.cost_final or Money.ZERO).usd == Decimal("0.28")


async def test_a_job_stopped_mid_submit_is_recovered_without_a_second_task(
    kling: FakeKling, fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    use_kling(runner, kling)
    await ava_with_front_view(fake, world)
    kling.hold_submits.clear()  # Kling creates the task; its answer never reaches the bot
    job_id = await animate(fake, world, "submitting when the bot stops", provider="kling")
    await until(fake, lambda: len(kling.tasks) == 1, "the task to exist at Kling")
    assert await job_state(runner, job_id) is JobState.SUBMITTING

    await runner.stop()
    kling.hold_submits.set()
    await runner.start()

    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the recovered clip")
    await asyncio.sleep(0.3)  # nothing more arrives late
    assert len(result_of(fake, world, job_id)) == 1
    assert kling.create_attempts == 1 and len(kling.tasks) == 1  # found by external_task_id, never sent again
    [task] = kling.tasks.values()
    assert task.external_task_id == str(job_id)
    lookups = [r for r in kling.api_requests("GET", IMAGE2VIDEO) if r.path == f"{IMAGE2VIDEO}/{job_id}"]
    assert [r.status for r in lookups][-1] == 200  # the lookup after the restart found it
    await until_done(runner, job_id)


async def test_kling_v3_renders_12_s_with_audio_and_an_end_frame(
    kling: FakeKling, fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    use_kling(runner, kling)
    await ava_with_front_view(fake, world)
    choices = await fake.autocomplete(
        world.studio_a,
        world.alice,
        "animate",
        {"character": "Ava", "prompt": "x", "provider": "kling", "model": "kling-v3"},
        focused="model",
    )
    [v3] = [c for c in choices if c["value"] == "kling-v3"]
    assert "3-15 s" in v3["name"] and "audio" in v3["name"] and "end frame" in v3["name"]
    seconds = await fake.autocomplete(
        world.studio_a,
        world.alice,
        "animate",
        {"character": "Ava", "prompt": "x", "provider": "kling", "model": "kling-v3", "duration": "1"},
        focused="duration",
    )
    assert [c["value"] for c in seconds] == [10, 11, 12, 13, 14, 15]  # any whole second of 3-15 with a "1"

    end = fake.upload(figure_png((200, 60, 60)), "end.png", "image/png")
    options = {"provider": "kling", "model": "kling-v3", "duration": 12, "audio": True, "end_frame": end}
    h = await fake.slash(
        world.studio_a, world.alice, "animate", {"character": "Ava", "prompt": "walks to the door", **options}
    )
    await h.wait_settled()
    assert h.ephemeral and "This 12 s shot of **Ava** with Kling is estimated at **$1.51**" in h.content, h.content
    assert h.result is not None
    press = await fake.press(h.result, h.components[0]["components"][0]["custom_id"], world.alice)
    await press.wait_settled()
    job_id = queued_id(press)
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the Kling 3.0 clip")
    [body] = kling.bodies(IMAGE2VIDEO)
    assert body["model_name"] == "kling-v3" and body["duration"] == "12" and body["sound"] == "on"
    assert body["image"] and body["image_tail"] and body["image_tail"] != body["image"]
    await until_done(runner, job_id)
    assert runner.bot is not None
    job = await runner.bot.services.storage.jobs.get(job_id)
    assert job is not None and job.cost_estimate.usd == Decimal("1.512")  # 12 s of std with audio, $0.126/s


async def test_a_shot_the_model_cannot_take_is_refused_before_anything_is_held(
    kling: FakeKling, fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    use_kling(runner, kling)
    await ava_with_front_view(fake, world)
    for options, refusal in (
        ({"duration": 12}, "`kling-v1-6` renders 5 or 10 s clips, not 12 s. For 12 s, choose the model `kling-v3`"),
        ({"audio": True}, "`kling-v1-6` renders no audio. For native audio, choose the model `kling-v2-6`"),
        ({"model": "kling-v2-master", "end_frame": fake.upload(figure_png(), "end.png", "image/png")}, "no end frame"),
    ):
        h = await fake.slash(
            world.studio_a, world.alice, "animate", {"character": "Ava", "prompt": "x", "provider": "kling", **options}
        )
        await h.wait_settled()
        assert h.ephemeral and refusal in h.content, (options, h.content)
    assert runner.bot is not None
    assert await runner.bot.services.storage.jobs.recent_in_guild(world.studio_a.id) == []
    assert kling.create_attempts == 0


async def test_kling_3_0_on_the_new_api_delivers_the_clip_and_records_klings_billing(
    kling: FakeKling, fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    kling.api_key = "kling-single-key"
    use_kling(runner, kling, "kling-3.0", api_key="kling-single-key")
    await ava_with_front_view(fake, world)
    start = fake.upload(figure_png(RED), "start.png", "image/png")
    job_id = await animate(fake, world, "turns to the window", provider="kling", duration=6, start_frame=start)
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the Kling 3.0 clip")
    [result] = result_of(fake, world, job_id)
    assert "kling/kling-3.0" in result.content
    [body] = kling.bodies("/image-to-video/kling-3.0")
    assert body["settings"]["duration"] == 6 and body["options"]["external_task_id"] == str(job_id)
    [first] = [item["url"] for item in body["contents"] if item["type"] == "first_frame"]
    with Image.open(io.BytesIO(base64.b64decode(first))) as frame:  # the member's start frame, not Ava's view
        centre = frame.convert("RGB").getpixel((frame.width // 2, frame.height // 2))
    assert isinstance(centre, tuple)
    assert all(abs(got - want) < 16 for got, want in zip(centre, RED, strict=True)), centre
    await until_done(runner, job_id)
    assert runner.bot is not None
    job = await runner.bot.services.storage.jobs.get(job_id)
    assert job is not None and (job.cost_final or Money.ZERO).usd == Decimal("0.504")  # 0.6 U/s x 6 s, billed
