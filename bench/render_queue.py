"""The render queue under load: 500 jobs from 50 servers through the real worker and database, with a fake
remote provider (3 s per render, 20 at once). Prints one JSON object as its last line:
total time against the ideal bound (jobs x render / cap), polls per job, fairness (the server that waited
longest on average, against the mean), and peak RSS."""

from __future__ import annotations

import asyncio
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

from bot.domain import Job, JobState, Money, ShotParams, WorkKind
from bot.imaging.prep import KLING
from bot.jobs.delivery import NoDelivery
from bot.jobs.worker import Worker, WorkerConfig
from bot.providers.base import (
    PLAIN,
    Artifact,
    Capabilities,
    ModelRow,
    PollResult,
    RenderRequest,
    Submission,
    TaskStatus,
)
from bot.providers.registry import ProviderRegistry
from storage import Storage

JOBS = 500
GUILDS = 50
USERS_PER_GUILD = 2
RENDER_SECONDS = 3.0
CAP = 20


class CountingDelivery(NoDelivery):
    def __init__(self) -> None:
        super().__init__()
        self.all_posted = asyncio.Event()

    async def post_result(self, job: Job, video: bytes) -> int:
        message_id = await super().post_result(job, video)
        if len(self.posted) >= JOBS:
            self.all_posted.set()
        return message_id


class RemoteLike:
    """Answers like a remote API: a task is done RENDER_SECONDS after it was submitted."""

    def __init__(self) -> None:
        self.capabilities = Capabilities(
            name="remote",
            kinds=frozenset({WorkKind.ANIMATE}),
            rows=(
                ModelRow(
                    "m",
                    frozenset({WorkKind.ANIMATE}),
                    durations=(5,),
                    aspect_ratios=("16:9",),
                    max_images=4,
                    negative_prompt=True,
                    element_syntax=PLAIN,
                ),
            ),
            default_model="m",
            image_limits=KLING,
            max_concurrency=CAP,
            typical_seconds=RENDER_SECONDS,
        )
        self.submitted: dict[str, float] = {}
        self.polls: dict[str, int] = {}
        self.running = 0
        self.max_running = 0

    async def submit(self, request: RenderRequest) -> Submission:
        await asyncio.sleep(0.02)  # a network round trip
        task_id = f"t{request.job_id}"
        self.submitted[task_id] = time.monotonic()
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        return Submission(task_id)

    async def find(self, job_id: int) -> Submission | None:
        return Submission(f"t{job_id}") if f"t{job_id}" in self.submitted else None

    async def poll(self, submission: Submission) -> PollResult:
        await asyncio.sleep(0.02)
        self.polls[submission.task_id] = self.polls.get(submission.task_id, 0) + 1
        if time.monotonic() - self.submitted[submission.task_id] >= RENDER_SECONDS:
            return PollResult(
                TaskStatus.SUCCEEDED, artifacts=(Artifact(f"remote://{submission.task_id}", "video/mp4"),)
            )
        return PollResult(TaskStatus.RUNNING)

    async def cancel(self, submission: Submission) -> None:
        return None

    async def fetch(self, artifact: Artifact) -> bytes:
        await asyncio.sleep(0.02)
        self.running -= 1
        return f"video of {artifact.url}".encode()

    def estimate_cost(self, request: RenderRequest) -> Money:
        return Money.ZERO

    async def close(self) -> None:
        return None


async def main() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        storage = await Storage.open(Path(tmp) / "db.sqlite3", Path(tmp) / "blobs")
        provider = RemoteLike()
        delivery = CountingDelivery()
        worker = Worker(
            storage.jobs,
            storage.blobs,
            ProviderRegistry({"remote": provider}, default="remote"),
            delivery,
            WorkerConfig(per_user=2),
        )
        # The busiest servers queue first: a FIFO queue would make the last servers wait for all of them.
        enqueued: dict[int, float] = {}
        character = await storage.characters.create(0, "Ava", "tall, red hair", owner_id=1)
        for n in range(JOBS):
            guild = n // (JOBS // GUILDS)
            job = await storage.jobs.create(
                guild_id=guild,
                channel_id=guild,
                user_id=guild * 10 + n % USERS_PER_GUILD,
                character_id=character.id,
                character_name="Ava",
                character_version=1,
                kind="animate",
                provider="remote",
                model="m",
                action=f"shot {n}",
                prompt="p",
                negative_prompt=None,
                params=ShotParams(duration=5, aspect_ratio="16:9", camera="static"),
                bound=[],
                cost_estimate=Money.ZERO,
            )
            enqueued[job.id] = time.time()
        started = time.monotonic()
        await worker.start()
        await delivery.all_posted.wait()
        total = time.monotonic() - started
        await worker.stop()
        jobs = await storage.jobs.in_states([JobState.DONE])
        waits: dict[int, list[float]] = {}
        for job in jobs:
            assert job.started_at is not None
            waits.setdefault(job.guild_id, []).append(job.started_at - enqueued[job.id])
        await storage.close()

    ideal = JOBS * RENDER_SECONDS / CAP
    per_guild = {guild: statistics.mean(w) for guild, w in waits.items()}
    mean_wait = statistics.mean(w for ws in waits.values() for w in ws)
    polls = list(provider.polls.values())
    return {
        "jobs": JOBS,
        "guilds": GUILDS,
        "cap": CAP,
        "render_s": RENDER_SECONDS,
        "done": len(jobs),
        "total_s": round(total, 2),
        "ideal_s": ideal,
        "total_over_ideal": round(total / ideal, 3),
        "max_concurrent_at_provider": provider.max_running,
        "polls_per_job_mean": round(statistics.mean(polls), 2),
        "polls_per_job_max": max(polls),
        "mean_wait_s": round(mean_wait, 2),
        "longest_guild_mean_wait_s": round(max(per_guild.values()), 2),
        "longest_guild_over_mean": round(max(per_guild.values()) / mean_wait, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "targets": {"total_over_ideal": 1.25, "polls_per_job_max": 6, "longest_guild_over_mean": 2.0},
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
