"""The Runway provider against the fake Runway server (tests/support/fake_providers/runway.py), driven like the worker
drives a provider: submit, poll until done, fetch, retrying RetryableError as the worker does (`next_retry`: a
429/503 "busy" waits without counting as an attempt, other errors count; its back-off scaled down 100x), and never
re-sending a submit whose outcome is unknown (the worker leaves it to a manager: counted as `unsure`).

The fake runs on its own event loop in its own thread, so the client CPU measured here (the calling thread's
CPU time) does not include the server's work. Each task takes 1 PENDING poll and 2 RUNNING polls.

Two runs:
- `steady`: `jobs` clips through the provider's concurrency slots (as the worker schedules them): requests
  per completed job and client CPU ms per job (a 1024 px JPEG reference, a 2 MB result).
- `storm`: every job submitted at once into a burst of 429s (2 per job, `retry-after-ms`) and 503s (one per
  2 jobs, no Retry-After): jobs completed, jobs lost, orphan tasks (created at Runway but never finished
  by us), retries and the longest run of retries one step needed.
- `gen4_5`: gen4.5 image-to-video, 8 s; `recipe`: the multi-shot recipe (3 shots in a 10 s gen4.5 clip); both
  through the provider's slots: completed, lost, orphan tasks, requests per job.

`python -m bench.provider_runway` prints the result of `run()` as one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from PIL import Image, ImageDraw, ImageFilter

from bot.domain import WorkKind
from bot.imaging.prep import prepare_for_provider
from bot.jobs.worker import WorkerConfig, next_retry
from bot.providers.base import (
    FinalError,
    OutcomeUnknownError,
    ReferenceImage,
    RenderRequest,
    RetryableError,
    ShotPrompt,
    TaskStatus,
)
from bot.providers.runway import RUNWAY_IMAGE_LIMITS, RunwayProvider
from tests.support.fake_providers.runway import FakeRunway, in_thread

T = TypeVar("T")

WORKER = WorkerConfig()  # the worker's defaults: max_attempts, max_wait_seconds
SCALE = 0.01  # the worker's own back-off (when no Retry-After is given) and deadline, scaled down for the fake
RESULT_BYTES = 2_000_000  # about a 5 s 720p clip
PROMPT = "@front (front view) shows Ava: tall woman, red bob, green eyes. Waves at the camera. Slow camera push-in."


@dataclass
class Tally:
    completed: int = 0
    failed: list[str] = field(default_factory=list)
    retries: int = 0
    longest_retry_run: int = 0
    polls: int = 0
    unsure: int = 0  # submits whose outcome was unknown: left to a manager, never re-sent


def reference_image() -> ReferenceImage:
    """A photo-like 1024 px reference (gradient, shapes and noise), prepared as the worker prepares it."""
    rng = random.Random(7)
    image = Image.linear_gradient("L").resize((1024, 1024)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(60):
        x, y, size = rng.randrange(1024), rng.randrange(1024), rng.randrange(20, 200)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.ellipse((x, y, x + size, y + size), fill=colour)
    noise = Image.effect_noise((1024, 1024), 40).convert("RGB")
    image = Image.blend(image, noise, 0.25).filter(ImageFilter.SMOOTH)
    data, mime = prepare_for_provider(image, RUNWAY_IMAGE_LIMITS)
    return ReferenceImage("front", "view", data, mime)


async def with_retries(call: Callable[[], Awaitable[T]], tally: Tally) -> T:
    """One worker step: retry RetryableError as the worker does (bot.jobs.worker.next_retry), jittered."""
    attempts, retries, since = 0, 0, time.monotonic()
    while True:
        try:
            return await call()
        except OutcomeUnknownError:
            raise  # never sent again without a manager
        except RetryableError as error:
            retries += 1
            tally.retries += 1
            tally.longest_retry_run = max(tally.longest_retry_run, retries)
            decision = next_retry(error, attempts, (time.monotonic() - since) / SCALE, WORKER)
            if decision is None:
                raise FinalError(f"{error.message} I tried {retries} times and gave up.") from error
            attempts, delay = decision
            if error.retry_after is None:
                delay *= SCALE
            await asyncio.sleep(delay * (1 + random.random() * 0.2))


async def one_job(
    provider: RunwayProvider,
    job_id: int,
    image: ReferenceImage,
    tally: Tally,
    pause: float,
    changes: dict[str, Any] | None = None,
) -> None:
    request = RenderRequest(
        job_id=job_id,
        kind=WorkKind.ANIMATE,
        model="gen4_turbo",
        prompt=PROMPT,
        negative_prompt=None,
        duration=5,
        aspect_ratio="16:9",
        camera="push_in",
        images=(image,),
    )
    request = replace(request, **(changes or {}))
    try:
        submission = await with_retries(lambda: provider.submit(request), tally)
        while True:
            await asyncio.sleep(pause)
            result = await with_retries(lambda: provider.poll(submission), tally)
            tally.polls += 1
            if result.status is TaskStatus.SUCCEEDED:
                break
            if result.status in (TaskStatus.FAILED, TaskStatus.CANCELED):
                raise FinalError(f"task ended {result.status.value}")
        data = await with_retries(lambda: provider.fetch(result.artifacts[0]), tally)
        if len(data) != RESULT_BYTES:
            raise FinalError(f"short download: {len(data)} bytes")
        tally.completed += 1
    except OutcomeUnknownError:
        tally.unsure += 1
    except FinalError as error:
        tally.failed.append(error.message)


async def batch(
    fake: FakeRunway,
    provider: RunwayProvider,
    jobs: int,
    slots: int,
    image: ReferenceImage,
    first_id: int,
    changes: dict[str, Any] | None = None,
) -> dict[str, object]:
    tally = Tally()
    requests_before, tasks_before = len(fake.requests), len(fake.tasks)
    served_before = dict(fake.served)
    gate = asyncio.Semaphore(slots)

    async def slot(job_id: int) -> None:
        async with gate:
            await one_job(provider, job_id, image, tally, pause=fake.latency, changes=changes)

    cpu, wall = time.thread_time(), time.perf_counter()
    await asyncio.gather(*(slot(first_id + n) for n in range(jobs)))
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    created = len(fake.tasks) - tasks_before
    done = max(tally.completed, 1)
    return {
        "jobs": jobs,
        "slots": slots,
        "completed": tally.completed,
        "lost": jobs - tally.completed,
        "orphan_tasks": created - tally.completed,
        "failures": sorted(set(tally.failed)),
        "unsure": tally.unsure,
        "requests_per_completed_job": round((len(fake.requests) - requests_before) / done, 2),
        "polls_per_completed_job": round(tally.polls / done, 2),
        "retries": tally.retries,
        "longest_retry_run": tally.longest_retry_run,
        "served_429": fake.served["429"] - served_before["429"],
        "served_5xx": fake.served["5xx"] - served_before["5xx"],
        "client_cpu_ms_per_job": round(cpu * 1000 / done, 2),
        "wall_seconds": round(wall, 3),
    }


async def run(latency: float = 0.005, jobs: int = 50) -> dict[str, object]:
    image = await asyncio.to_thread(reference_image)
    fake = FakeRunway(latency=latency, pending_polls=1, running_polls=2)
    fake.output_size = RESULT_BYTES
    with in_thread(fake):
        provider = RunwayProvider(api_key=fake.api_key, base_url=fake.url, timeout=10.0)
        try:
            steady = await batch(fake, provider, jobs, provider.capabilities.max_concurrency, image, first_id=1)
            fake.rate_limit_next = 2 * jobs
            fake.rate_limit_retry_after_ms = "20"
            fake.server_errors_next = jobs // 2
            fake.server_error_status = 503
            storm = await batch(fake, provider, jobs, jobs, image, first_id=jobs + 1)
            slots = provider.capabilities.max_concurrency
            gen45 = await batch(fake, provider, jobs, slots, image, 10_000, {"model": "gen4.5", "duration": 8})
            shots = (ShotPrompt("she opens the door", 3), ShotPrompt("she looks up", 3), ShotPrompt("she runs", 4))
            recipe = {"model": "gen4.5", "duration": 10, "shots": shots}
            multi = await batch(fake, provider, jobs, slots, image, 20_000, recipe)
        finally:
            await provider.close()
    return {
        "latency_s": latency,
        "reference_image_bytes": len(image.data),
        "result_bytes": RESULT_BYTES,
        "backoff": {"scale": SCALE, "max_attempts": WORKER.max_attempts, "max_wait_s": WORKER.max_wait_seconds},
        "steady": steady,
        "storm": storm,
        "gen4_5": gen45,
        "recipe": multi,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run())))
