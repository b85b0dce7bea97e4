"""The Kling provider against the fake Kling server: requests and client CPU per job, and a 1303 storm.

The fake runs on its own event loop in a thread (tests/support/fake_providers/kling.py, `FakeKlingThread`) with
`latency` added to every answer; its thread's CPU time is taken out of the process's, so the CPU figure is
the client's own work (JSON, JWT, HTTP, re-encoding the first frame). Jobs are driven the way the worker
drives a provider, at most `max_concurrency` at once: `find` then `submit` (a RetryableError waits its
`retry_after`, with the worker's jitter, then find + submit again), `poll` until the task ends, `fetch`.

- steady: `jobs` jobs, a task ends at its second poll.
- storm: the same again while the fake answers 1303 with HTTP 429 to 80 % of creates for 3 s (its own
  concurrency cap at the provider's as well); every job must still complete, once.
- kling_v3: Kling 3.0 on the `/v1` routes, 12 s with native audio and an end frame (`image_tail`, `sound`).
- kling_3_0_paths: kling-3.0 on the new-standard API (API key, `contents[]`, `GET /tasks`), where one create in
  five loses its answer (the connection drops after the task is made): each is found by its external id, never
  created twice.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from bot.domain import WorkKind
from bot.providers.base import (
    Frame,
    PollResult,
    ReferenceImage,
    RenderRequest,
    RetryableError,
    Submission,
    TaskStatus,
)
from bot.providers.kling import KlingProvider
from tests.support.fake_providers.kling import FakeKling, FakeKlingThread

ACCESS = "ak-bench"
SECRET = "sk-bench-0123456789abcdef0123456789abcdef"
API_KEY = "kling-bench-api-key"
POLL_INTERVAL = 0.02  # seconds between polls (the fake ends a task at its second poll)
WORKER_MAX_ATTEMPTS = 6  # bot.jobs.worker.WorkerConfig.max_attempts: retryable errors in a row before a job fails
STORM_SECONDS = 3.0
STORM_SHARE = 0.8


@dataclass
class Outcome:
    job_id: int
    done: bool = False
    attempts: int = 0  # submit rounds (find + submit) it took
    busy: int = 0  # 1303 answers it got
    size: int = 0
    errors: list[str] = field(default_factory=list)


def reference() -> ReferenceImage:
    """A front view as the worker hands it over: a 768x1024 JPEG on white (padded to 16:9 by the provider)."""
    image = Image.new("RGB", (768, 1024), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.ellipse((300, 80, 468, 280), fill=(230, 190, 160))
    draw.rectangle((260, 280, 508, 680), fill=(40, 90, 200))
    draw.rectangle((280, 680, 370, 960), fill=(50, 50, 60))
    draw.rectangle((398, 680, 488, 960), fill=(50, 50, 60))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return ReferenceImage("front", "view", buffer.getvalue(), "image/jpeg")


async def drive(provider: KlingProvider, request: RenderRequest, rng: random.Random) -> Outcome:
    outcome = Outcome(request.job_id)
    submission: Submission | None = None
    while submission is None:
        outcome.attempts += 1
        try:
            # as the worker does: a job fresh from the queue is sent at once; a retry first asks Kling for it
            found = await provider.find(request.job_id) if outcome.attempts > 1 else None
            submission = found or await provider.submit(request)
        except RetryableError as error:
            outcome.busy += error.code == "1303"
            delay = error.retry_after if error.retry_after is not None else min(60.0, 2.0**outcome.attempts)
            await asyncio.sleep(delay * (1 + rng.random() * 0.2))
    result = PollResult(TaskStatus.QUEUED)
    while result.status not in (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELED):
        await asyncio.sleep(POLL_INTERVAL)
        result = await provider.poll(submission)
    if result.status is TaskStatus.SUCCEEDED:
        outcome.size = len(await provider.fetch(result.artifacts[0]))
        outcome.done = outcome.size > 0
    else:
        outcome.errors.append(str(result.error))
    return outcome


async def phase(
    runner: FakeKlingThread,
    jobs: int,
    first_job: int,
    *,
    storm: bool,
    model: str = "kling-v1-6",
    seconds: int = 5,
    audio: bool = False,
    end_frame: Frame | None = None,
    api_key: bool = False,
    lose_every: int = 0,
) -> dict[str, object]:
    if api_key:
        provider = KlingProvider(base_url=runner.base_url, model=model, api_key=API_KEY)
    else:
        provider = KlingProvider(base_url=runner.base_url, model=model, access_key=ACCESS, secret_key=SECRET)
    cap = provider.capabilities.max_concurrency
    slots = asyncio.Semaphore(cap)
    rng = random.Random(first_job)
    image = reference()

    async def one(job_id: int) -> Outcome:
        request = RenderRequest(
            job_id=job_id,
            kind=WorkKind.ANIMATE,
            model=model,
            prompt="Ava, the character in the reference image: waves at the camera and smiles. Slow push-in.",
            negative_prompt="blur, extra fingers, melting face",
            duration=seconds,
            aspect_ratio="16:9",
            camera="push_in",
            images=(image,),
            audio=audio,
            end_frame=end_frame,
        )
        async with slots:
            return await drive(provider, request, rng)

    def arm(fake: FakeKling) -> None:
        fake.concurrency_limit = cap
        if storm:
            fake.storm(STORM_SECONDS, STORM_SHARE, http_status=429)
        fake.lose_submits = jobs // lose_every if lose_every else 0
        fake.lose_mode = "drop"

    runner.call(arm)
    fake_cpu, cpu, wall = runner.cpu_seconds(), time.process_time(), time.perf_counter()
    outcomes = await asyncio.gather(*(one(first_job + n) for n in range(jobs)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    fake_cpu = runner.cpu_seconds() - fake_cpu
    await provider.close()

    def records(fake: FakeKling) -> tuple[Counter[str], int, int, int]:
        kinds: Counter[str] = Counter()
        for r in fake.requests:
            if r.path.startswith("/results/"):
                kinds["download"] += 1
            elif r.method == "POST":
                kinds["create_busy" if r.code == 1303 else "create"] += 1
            elif r.code == 1203:
                kinds["lookup_not_found"] += 1
            else:
                kinds["query"] += 1
        externals = [t.external_task_id for t in fake.tasks.values()]
        return kinds, len(fake.requests), len(externals), len(externals) - len(set(externals))

    kinds, total, tasks, duplicates = runner.call(records)
    runner.call(lambda fake: (fake.requests.clear(), fake.tasks.clear()))
    done = [o for o in outcomes if o.done]
    client_cpu = max(0.0, cpu - fake_cpu)
    figures: dict[str, object] = {
        "jobs": jobs,
        "completed": len(done),
        "lost": jobs - len(done),
        "tasks_at_kling": tasks,
        "duplicate_tasks": duplicates,
        "wall_s": round(wall, 3),
        "requests_per_job": round(total / jobs, 2),
        "requests": dict(sorted(kinds.items())),
        "client_cpu_ms_per_job": round(client_cpu * 1000 / jobs, 2),
        "fake_cpu_ms_per_job": round(fake_cpu * 1000 / jobs, 2),
    }
    if storm:
        figures |= {
            "storm_s": STORM_SECONDS,
            "storm_share": STORM_SHARE,
            "busy_answers": sum(o.busy for o in outcomes),
            "submit_rounds_max": max(o.attempts for o in outcomes),
            "jobs_over_worker_attempt_limit": sum(1 for o in outcomes if o.attempts > WORKER_MAX_ATTEMPTS),
        }
    return figures


async def run(latency: float = 0.005, jobs: int = 50) -> dict[str, object]:
    """Figures of one run (see the module docstring); prints nothing."""
    end = Frame(reference().data, "image/jpeg")
    with FakeKlingThread(access_key=ACCESS, secret_key=SECRET, api_key=API_KEY, latency=latency) as runner:
        steady = await phase(runner, jobs, 1, storm=False)
        storm = await phase(runner, jobs, 100_000, storm=True)
        v3 = await phase(runner, jobs, 200_000, storm=False, model="kling-v3", seconds=12, audio=True, end_frame=end)
        paths = await phase(
            runner, jobs, 300_000, storm=False, model="kling-3.0", seconds=12, api_key=True, lose_every=5
        )
    return {
        "latency_ms": latency * 1000,
        "max_concurrency": 5,
        "steady": steady,
        "storm": storm,
        "kling_v3": v3,
        "kling_3_0_paths": paths,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run())))
