"""How soon a finished render is picked up: polling alone against provider callbacks.

60 shots through the real worker, database and Kling provider, against the fake Kling over HTTP, 20 rendering at
once; each render takes 2 to 8 s (random, as real renders vary), and ends on its own as at Kling. Run twice: once
polled only, once with the real callback listener (LIKENESS_CALLBACK_URL) receiving Kling's callbacks over a
socket. For each shot: the lag from the render's end to its result being delivered, and the polls it took. Prints
one JSON object as its last line."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bot.domain import BoundImage, Job
from bot.jobs.callbacks import CallbackServer, CallbackUrls, callback_secret
from bot.jobs.delivery import NoDelivery
from bot.jobs.worker import Worker, WorkerConfig
from bot.providers.kling import KlingProvider
from bot.providers.registry import ProviderRegistry
from storage import Storage
from tests.support.factories import new_job
from tests.support.fake_providers.kling import IMAGE2VIDEO, FakeKling, sample_image

JOBS = 60
CAP = 20
ACCESS, SECRET = "ak-bench", "sk-bench-0123456789abcdef0123456789"


class TimedDelivery(NoDelivery):
    def __init__(self) -> None:
        super().__init__()
        self.delivered: dict[int, float] = {}
        self.all_done = asyncio.Event()

    async def post_result(self, job: Job, video: bytes) -> int:
        self.delivered[job.id] = time.time()
        if len(self.delivered) >= JOBS:
            self.all_done.set()
        return await super().post_result(job, video)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run(with_callbacks: bool) -> dict[str, Any]:
    kling = FakeKling(access_key=ACCESS, secret_key=SECRET, latency=0.0)
    durations = random.Random(7)  # a fixed seed: both runs see the same renders
    kling.finish_after = lambda: durations.uniform(2.0, 8.0)  # each render ends on its own, as at Kling
    await kling.start()
    with tempfile.TemporaryDirectory() as tmp:
        storage = await Storage.open(Path(tmp) / "db.sqlite3", Path(tmp) / "blobs")
        provider = KlingProvider(base_url=kling.base_url, access_key=ACCESS, secret_key=SECRET, max_concurrency=CAP)
        provider.capabilities = replace(provider.capabilities, typical_seconds=5.0)  # Kling's mean, here
        delivery = TimedDelivery()
        port = free_port()
        urls = CallbackUrls(f"http://127.0.0.1:{port}", callback_secret(Path(tmp))) if with_callbacks else None
        worker = Worker(
            storage.jobs,
            storage.blobs,
            ProviderRegistry({"kling": provider}, default="kling"),
            delivery,
            WorkerConfig(),
            callback_url_for=urls.url_for if urls is not None else None,
        )
        listener: CallbackServer | None = None
        if urls is not None:
            listener = CallbackServer(urls, lambda _provider, job_id: worker.nudge(job_id), "127.0.0.1", port)
            await listener.start()
        character = await storage.characters.create(1, "Ava", "tall, red hair", owner_id=1)
        front = await storage.blobs.put(sample_image())
        for n in range(JOBS):
            await new_job(
                storage,
                guild_id=1 + n % 10,
                user_id=n,
                character_id=character.id,
                provider="kling",
                model="kling-v1-6",
                bound=[BoundImage(label="front", role="view", blob=front)],
            )
        await worker.start()
        await asyncio.wait_for(delivery.all_done.wait(), 300)
        await worker.stop()
        if listener is not None:
            await listener.close()
        await provider.close()
        await storage.close()
    lags = []
    polls = []
    for task in kling.tasks.values():
        job_id = int(task.external_task_id or 0)
        assert task.finished_at is not None
        lags.append(delivery.delivered[job_id] - task.finished_at)
        polls.append(sum(1 for r in kling.requests if r.method == "GET" and r.path == f"{IMAGE2VIDEO}/{task.task_id}"))
    await kling.stop()
    ordered = sorted(lags)
    return {
        "lag_p50_s": round(statistics.median(lags), 2),
        "lag_p95_s": round(ordered[round(0.95 * (len(ordered) - 1))], 2),
        "lag_max_s": round(max(lags), 2),
        "polls_per_job_mean": round(statistics.mean(polls), 2),
        "callbacks_received": len(kling.callbacks) if with_callbacks else 0,
    }


async def main() -> dict[str, Any]:
    polled = await run(with_callbacks=False)
    called_back = await run(with_callbacks=True)
    return {
        "jobs": JOBS,
        "cap": CAP,
        "render_s": "2-8",
        "polling": polled,
        "callbacks": called_back,
        "lag_p50_ratio": round(called_back["lag_p50_s"] / max(polled["lag_p50_s"], 1e-9), 3),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
