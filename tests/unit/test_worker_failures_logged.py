"""Issue 13: the worker goes on past a failure it can survive, but never silently (no bare suppress(Exception))."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.jobs.delivery import NoDelivery
from bot.jobs.worker import Worker
from bot.providers.base import FinalError, Provider
from bot.providers.registry import ProviderRegistry
from storage import Storage
from tests.support.factories import new_job, open_storage
from tests.support.scripted_provider import Backend, ScriptedProvider

GUILD = 1


class BrokenRegistry(ProviderRegistry):
    """A registry whose server-key lookups fail with `failure`."""

    def __init__(self, provider: Provider, failure: Exception) -> None:
        super().__init__({"scripted": provider}, "scripted")
        self.failure = failure

    async def purge_retired(self) -> None:
        raise self.failure

    async def for_guild(self, guild_id: int, name: str | None) -> Provider:
        raise self.failure


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    async for opened in open_storage(tmp_path):
        yield opened


async def logged(caplog: pytest.LogCaptureFixture, words: str, level: int) -> logging.LogRecord:
    """The first log record at `level` whose message has `words`, waited for (a bounded poll)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for record in caplog.records:
            if record.levelno == level and words in record.getMessage():
                return record
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {logging.getLevelName(level)} line with {words!r}: {caplog.messages}")


async def running_worker(storage: Storage, failure: Exception) -> Worker:
    """A started worker with one queued job that cannot start (its provider takes no shots at once)."""
    ava = await storage.characters.create(GUILD, "Ava", "tall", owner_id=10)
    await new_job(storage, guild_id=GUILD, user_id=10, character_id=ava.id)
    provider = ScriptedProvider(Backend(), max_concurrency=0)
    worker = Worker(storage.jobs, storage.blobs, BrokenRegistry(provider, failure), NoDelivery())
    await worker.start()
    return worker


async def test_a_failed_purge_at_start_is_logged_and_the_worker_runs(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.jobs.worker")
    worker = await running_worker(storage, RuntimeError("database is locked"))
    try:
        record = await logged(caplog, "could not delete retired server keys at start", logging.WARNING)
        assert record.exc_info is not None and "database is locked" in str(record.exc_info[1])
        assert worker._loop_task is not None and not worker._loop_task.done()
    finally:
        await worker.stop()


async def test_an_account_that_cannot_be_looked_up_is_logged(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.jobs.worker")
    worker = await running_worker(storage, RuntimeError("database is locked"))
    try:
        record = await logged(caplog, "could not look up the scripted account", logging.ERROR)
        assert record.exc_info is not None
    finally:
        await worker.stop()


async def test_a_server_key_that_does_not_open_is_one_warning_line(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.jobs.worker")
    worker = await running_worker(storage, FinalError("The server's key cannot be opened."))
    try:
        record = await logged(caplog, "the scripted account for its jobs is unknown", logging.WARNING)
        assert "cannot be opened" in record.getMessage() and record.exc_info is None
    finally:
        await worker.stop()


async def test_the_render_time_of_a_provider_no_longer_set_up_is_a_logged_guess(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.jobs.worker")
    ava = await storage.characters.create(GUILD, "Ava", "tall", owner_id=10)
    job = await new_job(storage, guild_id=GUILD, user_id=10, character_id=ava.id, provider="gone")
    registry = ProviderRegistry({"scripted": ScriptedProvider(Backend())}, "scripted")
    worker = Worker(storage.jobs, storage.blobs, registry, NoDelivery())
    assert worker._estimate(job) == 60.0
    assert any("provider gone is not set up" in line for line in caplog.messages)
