"""A full provider is a queue, not a failure (issue 12, item 4), and a paid result survives a bad moment (item 5):
through the real bot and the fake Discord."""

from __future__ import annotations

import errno
import logging
from dataclasses import replace

import pytest

from bot.domain import JobState
from bot.providers.base import RenderRequest, RetryableError, Submission
from bot.providers.fal import FalProvider
from tests.support.bot_runner import BotRunner, World
from tests.support.characters import ava_with_front_view
from tests.support.fake_discord import FakeDiscord
from tests.support.fake_providers.fal import MEDIA_PATH, FakeFal
from tests.support.scripted_provider import Backend, ScriptedProvider
from tests.support.shots import animate, held, is_state, result_of, status_of
from tests.support.waiting import eventually, until

STORM = 6 * 5 + 5  # more 429s in a row than the old limit (max_attempts x rate-limit patience) allowed


class Full(ScriptedProvider):
    """Answers 429 to every submit while `full`; counts the refusals."""

    full = True
    refusals = 0

    async def submit(self, request: RenderRequest) -> Submission:
        if self.full:
            self.refusals += 1
            raise RetryableError(
                "The provider is at its limit.", code="rate_limited", retry_after=0.01, rate_limited=True
            )
        return await super().submit(request)


def stage(fake: FakeDiscord, world: World, job_id: int) -> str:
    return {f["name"]: f["value"] for f in status_of(fake, world, job_id).embeds[0].get("fields", [])}.get("Stage", "")


async def test_a_long_429_storm_is_waited_out(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    provider = Full(Backend())
    assert runner.bot is not None
    runner.bot.services.providers.register(provider)
    await ava_with_front_view(fake, world)
    job_id = await animate(fake, world, "patient", provider="scripted")
    await until(fake, lambda: provider.refusals > STORM, "a storm longer than the old retry limit")
    await until(
        fake, lambda: "waiting for provider capacity" in stage(fake, world, job_id), "the status to say it waits"
    )
    assert await is_state(runner, job_id, JobState.SUBMITTING)
    provider.full = False
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the clip after the storm")
    await eventually(lambda: is_state(runner, job_id, JobState.DONE), "the shot to be done")
    assert provider.backend.submits == {job_id: 1}


async def test_past_the_overall_deadline_a_full_provider_fails_the_shot_clearly(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    provider = Full(Backend())
    assert runner.bot is not None
    runner.bot.services.providers.register(provider)
    runner.bot.services.worker.config = replace(
        runner.bot.services.worker.config, max_wait_seconds=0.5
    )  # LIKENESS_MAX_WAIT_HOURS
    await ava_with_front_view(fake, world)
    job_id = await animate(fake, world, "too patient", provider="scripted")
    await eventually(lambda: is_state(runner, job_id, JobState.FAILED), "the shot to fail at the deadline")
    job = await runner.bot.services.storage.jobs.get(job_id)
    assert job is not None and job.error is not None
    assert "The provider is at its limit." in job.error and "stopped waiting" in job.error
    assert "Nothing was charged" in job.error and await held(runner, world, job_id) == 0
    await until(fake, lambda: "stopped waiting" in str(status_of(fake, world, job_id).embeds), "the reason shown")
    assert provider.backend.submits == {}


async def test_a_full_disk_while_storing_the_clip_is_retried_and_the_clip_posted_once(
    fake: FakeDiscord,
    world: World,
    runner: BotRunner,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = Backend()
    assert runner.bot is not None
    runner.bot.services.providers.register(ScriptedProvider(backend))
    blobs = runner.bot.services.worker.blobs
    store = blobs.put
    failures = [OSError(errno.ENOSPC, "No space left on device")]

    async def put(data: bytes) -> str:
        if data == backend.video and failures:
            raise failures.pop()
        return await store(data)

    monkeypatch.setattr(blobs, "put", put)
    await ava_with_front_view(fake, world)
    job_id = await animate(fake, world, "stored at the second try", provider="scripted")
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the clip")
    await eventually(lambda: is_state(runner, job_id, JobState.DONE), "the shot to be done")
    assert not failures and len(result_of(fake, world, job_id)) == 1
    assert any("disk is full (ENOSPC)" in r.getMessage() and r.levelno >= logging.ERROR for r in caplog.records)


async def test_a_restart_while_the_disk_is_full_recovers_the_clip(
    fake: FakeDiscord, world: World, runner: BotRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = Backend()
    assert runner.bot is not None
    provider = ScriptedProvider(backend)
    runner.providers[:] = [provider]
    runner.bot.services.providers.register(provider)
    blobs = runner.bot.services.worker.blobs
    store = blobs.put
    refused = 0

    async def full(data: bytes) -> str:
        nonlocal refused
        if data == backend.video:
            refused += 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return await store(data)

    monkeypatch.setattr(blobs, "put", full)
    await ava_with_front_view(fake, world)
    job_id = await animate(fake, world, "stored after a restart", provider="scripted")
    await until(fake, lambda: refused >= 2, "the store to be refused twice")
    assert await is_state(runner, job_id, JobState.DOWNLOADING)  # paid, kept, waiting for room
    await until(fake, lambda: "waiting for disk space" in stage(fake, world, job_id), "the status to say why")
    await runner.restart()  # a new bot, with room on the disk again
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the clip after the restart")
    await eventually(lambda: is_state(runner, job_id, JobState.DONE), "the shot to be done")
    assert len(result_of(fake, world, job_id)) == 1 and backend.submits == {job_id: 1}


async def test_a_dripping_download_hits_its_deadline_and_is_fetched_again(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    fal = FakeFal(latency=0.001)
    fal.queue_polls, fal.progress_polls = 1, 1
    fal.drip_downloads = 1  # one byte every 50 ms: each read is quick, the whole download would take many minutes
    await fal.start()
    try:
        provider = FalProvider(key=fal.key, base_url=fal.url, download_deadline=0.5)
        provider.capabilities = replace(provider.capabilities, typical_seconds=0.1)
        assert runner.bot is not None
        runner.bot.services.providers.register(provider)
        await ava_with_front_view(fake, world)
        job_id = await animate(fake, world, "a slow host", provider="fal")
        await until(fake, lambda: bool(result_of(fake, world, job_id)), "the clip at the second download")
        await eventually(lambda: is_state(runner, job_id, JobState.DONE), "the shot to be done")
        downloads = [r for r in fal.requests if r.path.startswith(MEDIA_PATH)]
        assert len(downloads) == 2 and len(fal.accepted_submits()) == 1
        assert len(result_of(fake, world, job_id)) == 1
    finally:
        await fal.stop()
