"""Shots whose provider the bot is no longer set up with (an admin removed its key while they waited)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.domain import Job, JobState, Money
from bot.jobs.delivery import NoDelivery
from bot.jobs.worker import Worker
from bot.providers.registry import ProviderRegistry
from storage import Storage
from tests.support.factories import new_job, open_storage
from tests.support.scripted_provider import Backend, ScriptedProvider

GUILD = 1


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    async for opened in open_storage(tmp_path):
        yield opened


async def state_of(storage: Storage, job_id: int, wanted: Callable[[Job], bool], what: str) -> Job:
    """The job once `wanted` holds (a bounded poll of the database)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        job = await storage.jobs.get(job_id)
        if job is not None and wanted(job):
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} never became {what}: {await storage.jobs.get(job_id)}")


async def test_a_queued_shot_on_a_removed_provider_fails_clearly_and_the_queue_goes_on(storage: Storage) -> None:
    ava = await storage.characters.create(GUILD, "Ava", "tall", owner_id=10)
    gone = await new_job(storage, guild_id=GUILD, user_id=10, character_id=ava.id, provider="kling")
    later = await new_job(storage, guild_id=GUILD, user_id=11, character_id=ava.id)
    backend = Backend()
    registry = ProviderRegistry({"scripted": ScriptedProvider(backend)}, "scripted")
    worker = Worker(storage.jobs, storage.blobs, registry, NoDelivery())
    await worker.start()
    try:
        failed = await state_of(storage, gone.id, lambda job: job.state is JobState.FAILED, "failed")
        assert failed.error is not None and "**kling** is not set up on this bot" in failed.error
        assert "Nothing was charged." in failed.error and failed.cost_final == Money.from_usd("0")
        await state_of(storage, later.id, lambda job: job.state is JobState.DONE, "done")
        assert backend.submits == {later.id: 1}
    finally:
        await worker.stop()


async def test_a_rendering_shot_on_a_removed_provider_waits_for_it(storage: Storage) -> None:
    """It may be rendering (and billed) there: it waits, shown as such, and is not failed or released."""
    ava = await storage.characters.create(GUILD, "Ava", "tall", owner_id=10)
    job = await new_job(storage, guild_id=GUILD, user_id=10, character_id=ava.id, provider="kling")
    await storage.jobs.transition(job.id, [JobState.QUEUED], JobState.RUNNING, task_id="t-1", account="")
    registry = ProviderRegistry({"scripted": ScriptedProvider(Backend())}, "scripted")
    worker = Worker(storage.jobs, storage.blobs, registry, NoDelivery())
    await worker.start()
    try:
        waiting = await state_of(storage, job.id, lambda job: job.waiting_since is not None, "waiting")
        assert waiting.state is JobState.RUNNING and waiting.error is None and waiting.attempts == 0
    finally:
        await worker.stop()
