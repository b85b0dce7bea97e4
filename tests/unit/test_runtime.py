"""The composition root (bot.runtime.Services.open), without Discord: leaving it closes what it built, newest
first (the worker stops, then the delivery's last edits go out, then the front leaves, then the storage closes),
and a failure halfway closes what was built so far."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from bot.infra.config import Settings, SettingsError
from bot.jobs.delivery import NoDelivery
from bot.runtime import Offline, Services


def worker_running() -> bool:
    return any(t.get_name() == "likeness-worker" and not t.done() for t in asyncio.all_tasks())


class RecordingDelivery(NoDelivery):
    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events

    async def flush_all(self) -> None:
        self.events.append("flush, worker running" if worker_running() else "flush, worker stopped")


class RecordingFront(Offline):
    """`Offline`, telling when its delivery is flushed and when it is asked to leave."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []
        self.delivery = RecordingDelivery(self.events)

    async def disconnect(self) -> None:
        self.events.append("disconnect")


def settings(tmp_path: Path, **changes: object) -> Settings:
    # no background model in models_dir: nothing for the warm-up to load
    return Settings(data_dir=tmp_path / "data", models_dir=tmp_path / "models").model_copy(
        update={"local_delay": 0.0, **changes}  # a provider setting (bot.providers.local)
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_leaving_closes_newest_first(tmp_path: Path) -> None:
    front = RecordingFront()
    async with Services.open(settings(tmp_path), front) as services:
        await services.worker.start()
        services.janitor.start()
        assert worker_running()
        storage = services.storage
        assert await storage.db.fetchall("SELECT 1") is not None
    assert front.events == ["flush, worker stopped", "disconnect"]
    assert not worker_running()
    with pytest.raises(ValueError, match="Connection closed"):  # the storage closed last
        await storage.db.fetchall("SELECT 1")  # the database itself (characters are answered from memory)


async def test_a_failure_halfway_closes_what_was_built(tmp_path: Path) -> None:
    callback_port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics_port = int(taken.getsockname()[1])
        front = RecordingFront()
        opening = Services.open(
            settings(
                tmp_path,
                callback_url="https://likeness.example.org",
                callback_port=callback_port,
                metrics_port=metrics_port,
            ),
            front,
        )
        with pytest.raises(SettingsError, match="LIKENESS_METRICS_PORT: cannot listen"):
            async with opening:
                pass
    assert front.events == ["flush, worker stopped", "disconnect"]
    with socket.socket() as again:  # the callback listener, opened before the metrics one failed, is closed
        again.bind(("127.0.0.1", callback_port))
