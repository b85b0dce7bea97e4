"""/animate through the real bot and the fake Discord, rendered by the Kling provider on the fake Kling server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal

import pytest

from bot.domain import JobState, Money
from bot.providers.kling import KlingProvider
from tests.support.bot_runner import BotRunner, World
from tests.support.characters import ava_with_front_view
from tests.support.fake_discord import FakeDiscord
from tests.support.fake_providers.kling import IMAGE2VIDEO, FakeKling, sample_video
from tests.support.kling_keys import ACCESS, SECRET, running_kling
from tests.support.shots import animate, job_state, result_of
from tests.support.waiting import until


@pytest.fixture
async def kling() -> AsyncIterator[FakeKling]:
    async with running_kling() as fake:
        yield fake


def use_kling(runner: BotRunner, kling: FakeKling) -> KlingProvider:
    """Kling set up with keys, as an admin would; registered now and at every start of the bot."""
    provider = KlingProvider(base_url=kling.base_url, access_key=ACCESS, secret_key=SECRET)
    # The fake renders in two polls, not in Kling's minute and a half: the first poll comes at once.
    provider.capabilities = replace(provider.capabilities, typical_seconds=0.2)
    runner.providers.append(provider)
    assert runner.bot is not None
    runner.bot.services.providers.register(provider)
    return provider


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
