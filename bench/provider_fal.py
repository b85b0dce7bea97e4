"""The fal.ai provider's cost on the client, against the fake fal queue (tests/support/fake_providers/fal.py)
served by its own thread and event loop, so the fake's CPU is not counted.

Jobs are driven the way the worker drives them (bot.jobs.worker.next_retry): a RetryableError is retried after its
Retry-After, else after the worker's back-off (scaled down 100x here); a 429 "busy" waits without counting as an
attempt (until the worker's max_wait_seconds, scaled), other errors give the job up after 6 in a row
(WorkerConfig.max_attempts); a submit whose outcome is unknown is never re-sent (left to a manager: `unsure`).
The fake finishes a request on its third status poll (one IN_QUEUE,
one IN_PROGRESS, then COMPLETED), so the floor is 1 submit + 3 polls + 1 result + 1 download per job.

Figures: HTTP requests per completed job, client CPU per job (process CPU minus the fake thread's CPU), and a
429 storm (9 submits in 10 refused for a while): jobs completed, none lost, no shot submitted twice; and Kling O3
(`o3`): two characters as two elements, an end frame, native audio, 10 s, every job once.
Run as `python -m bench.provider_fal`; the last line printed is one JSON object.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

import numpy as np
from PIL import Image, ImageDraw

from bot.domain import WorkKind
from bot.jobs.worker import WorkerConfig, next_retry
from bot.providers.base import (
    Frame,
    OutcomeUnknownError,
    ProviderError,
    ReferenceImage,
    RenderRequest,
    RetryableError,
    TaskStatus,
)
from bot.providers.fal import DEFAULT_VIDEO_MODEL, FalProvider
from tests.support.fake_providers.fal import MEDIA_PATH, FakeFal, serve_in_thread

T = TypeVar("T")

CONCURRENCY = 10  # jobs in flight at once (an account past fal's starting concurrency of 2)
WORKER = WorkerConfig()  # max_attempts, max_wait_seconds
BACKOFF_SCALE = 0.01  # the worker's back-off and deadline, scaled down
POLL_INTERVAL = 0.005
STORM_SECONDS = 0.3
STORM_PASS_EVERY = 10


def reference(seed: int, size: tuple[int, int]) -> ReferenceImage:
    """A view as the worker sends it: a figure on white with some texture, JPEG (~100-200 KB)."""
    rng = np.random.default_rng(seed)
    width, height = size
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    colour = tuple(int(c) for c in rng.integers(40, 220, 3))
    draw.ellipse((width * 0.35, height * 0.05, width * 0.65, height * 0.25), fill=colour)
    draw.rectangle((width * 0.25, height * 0.25, width * 0.75, height * 0.65), fill=colour)
    draw.rectangle((width * 0.3, height * 0.65, width * 0.7, height * 0.95), fill=(40, 40, 60))
    texture = rng.normal(0, 6, (height, width, 3))
    pixels = np.clip(np.asarray(image, dtype=np.float64) + texture, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=88)
    return ReferenceImage(f"ref{seed}", "view" if seed < 3 else "element", buffer.getvalue(), "image/jpeg")


O3 = "fal-ai/kling-video/o3/pro/reference-to-video"


def o3_requests(jobs: int, images: tuple[ReferenceImage, ...], first_id: int) -> list[RenderRequest]:
    """Two characters (the first two views are Ava, the third Kai), an end frame, audio, 10 s on O3 pro."""
    ava, ava_side, kai = images[0], images[1], replace(images[2], subject=1)
    end = Frame(images[0].data, images[0].mime)
    return [
        replace(
            request,
            model=O3,
            prompt="@Element1 hands a cup to @Element2; they laugh.",
            images=(ava, ava_side, kai),
            duration=10,
            audio=True,
            end_frame=end,
        )
        for request in requests_for(jobs, images, first_id)
    ]


def requests_for(jobs: int, images: tuple[ReferenceImage, ...], first_id: int) -> list[RenderRequest]:
    return [
        RenderRequest(
            job_id=first_id + n,
            kind=WorkKind.ANIMATE,
            model=DEFAULT_VIDEO_MODEL,
            prompt="@Element1 (front, three-quarter and side views) shows Ava: waves. Wearing @Element2 (outfit).",
            negative_prompt=None,
            duration=5,
            aspect_ratio="16:9",
            camera="static",
            images=images,
        )
        for n in range(jobs)
    ]


class Driver:
    """Drives jobs like bot/jobs/worker.py, counting retries."""

    def __init__(self, provider: FalProvider) -> None:
        self.provider = provider
        self.retries = 0
        self.gave_up = 0
        self.unsure = 0

    async def retried(self, step: Callable[[], Awaitable[T]]) -> T:
        attempts, since = 0, time.monotonic()
        while True:
            try:
                return await step()
            except OutcomeUnknownError:
                self.unsure += 1
                raise
            except RetryableError as error:
                self.retries += 1
                decision = next_retry(error, attempts, (time.monotonic() - since) / BACKOFF_SCALE, WORKER)
                if decision is None:
                    self.gave_up += 1
                    raise
                attempts, delay = decision
                await asyncio.sleep(delay * BACKOFF_SCALE * (1 + random.random() * 0.2))

    async def job(self, request: RenderRequest) -> bool:
        try:
            submission = await self.retried(lambda: self.provider.submit(request))
            while True:
                result = await self.retried(lambda: self.provider.poll(submission))
                if result.status is TaskStatus.SUCCEEDED:
                    break
                if result.status in (TaskStatus.FAILED, TaskStatus.CANCELED):
                    return False
                await asyncio.sleep(POLL_INTERVAL)
            clip = await self.retried(lambda: self.provider.fetch(result.artifacts[0]))
        except ProviderError:
            return False
        return clip[4:8] == b"ftyp"

    async def all(self, requests: list[RenderRequest]) -> int:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(request: RenderRequest) -> bool:
            async with gate:
                return await self.job(request)

        return sum(await asyncio.gather(*(one(request) for request in requests)))


async def run(latency: float = 0.005, jobs: int = 50) -> dict[str, object]:
    images = (
        reference(0, (768, 1152)),
        reference(1, (768, 1152)),
        reference(2, (768, 1152)),
        reference(3, (900, 900)),
    )
    fake = FakeFal(latency=latency)
    fake.queue_polls, fake.progress_polls = 1, 1
    with serve_in_thread(fake) as server:
        provider = FalProvider(key=fake.key, base_url=server.url, max_concurrency=CONCURRENCY)
        try:
            driver = Driver(provider)
            await driver.job(requests_for(1, images, first_id=10_000)[0])  # warm the connection pool and caches
            first = len(fake.requests)

            fake_cpu, cpu, started = server.thread_cpu(), time.process_time(), time.perf_counter()
            completed = await driver.all(requests_for(jobs, images, first_id=1))
            wall = time.perf_counter() - started
            client_cpu = (time.process_time() - cpu) - (server.thread_cpu() - fake_cpu)
            calls = fake.requests[first:]
            api = [r for r in calls if not r.path.startswith(MEDIA_PATH)]
            body_bytes = len(json.dumps(provider.body(requests_for(1, images, first_id=0)[0])))

            storm_driver = Driver(provider)
            accepted_before, refused_before = len(fake.accepted_submits()), fake.rate_limited
            fake.storm(STORM_SECONDS, STORM_PASS_EVERY)
            storm_started = time.perf_counter()
            storm_completed = await storm_driver.all(requests_for(jobs, images, first_id=20_000))
            storm_wall = time.perf_counter() - storm_started
            storm_accepted = len(fake.accepted_submits()) - accepted_before

            o3_driver = Driver(provider)
            accepted_before, o3_first = len(fake.accepted_submits()), len(fake.requests)
            o3_completed = await o3_driver.all(o3_requests(jobs, images, first_id=40_000))
            o3_accepted = len(fake.accepted_submits()) - accepted_before
            o3_calls = fake.requests[o3_first:]
        finally:
            await provider.close()

    per_job = max(completed, 1)
    return {
        "jobs": jobs,
        "latency_ms": round(latency * 1000, 2),
        "concurrency": CONCURRENCY,
        "completed": completed,
        "lost": jobs - completed,
        "http_requests_per_job": round(len(calls) / per_job, 2),
        "api_requests_per_job": round(len(api) / per_job, 2),
        "status_polls_per_job": round(sum(r.path.endswith("/status") for r in api) / per_job, 2),
        "submit_body_kb": round(body_bytes / 1024, 1),
        "client_cpu_ms_per_job": round(client_cpu * 1000 / per_job, 2),
        "wall_s": round(wall, 3),
        "storm": {
            "seconds": STORM_SECONDS,
            "as_worker_seconds": round(STORM_SECONDS / BACKOFF_SCALE),  # the same storm at the worker's real backoff
            "refused": f"{STORM_PASS_EVERY - 1} in {STORM_PASS_EVERY} submits",
            "jobs": jobs,
            "completed": storm_completed,
            "lost": jobs - storm_completed,
            "gave_up": storm_driver.gave_up,
            "unsure": storm_driver.unsure,
            "submits_refused_429": fake.rate_limited - refused_before,
            "retries": storm_driver.retries,
            "submits_accepted": storm_accepted,
            "duplicate_submits": storm_accepted - storm_completed,
            "wall_s": round(storm_wall, 3),
        },
        "o3": {
            "model": O3,
            "jobs": jobs,
            "completed": o3_completed,
            "lost": jobs - o3_completed,
            "duplicate_submits": o3_accepted - o3_completed,
            "http_requests_per_job": round(len(o3_calls) / max(o3_completed, 1), 2),
        },
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run())))
