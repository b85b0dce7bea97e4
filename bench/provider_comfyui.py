"""The ComfyUI provider against the fake ComfyUI (tests/support/fake_providers/comfyui.py), driven like the worker
drives a provider: submit, poll (as soon as the websocket has news, else on the worker's pace), fetch.

The fake runs on its own event loop in its own thread, so the client CPU measured here is only the provider's.
Each prompt runs 12 nodes with 8 sampler steps of `step_delay` s each, one prompt at a time, like one GPU.

Figures: jobs completed, lost (not completed), duplicates (prompts ComfyUI ran more than once for one job), HTTP
requests per job (uploads, prompt, history, view; polls the websocket answered cost none) and the provider's
overhead per job: wall time of its own calls (submit, every poll, fetch), median and p95, and client CPU ms per
job. `python -m bench.provider_comfyui` prints one JSON object as its last line.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from pathlib import Path

from bot.domain import WorkKind
from bot.imaging.prep import prepare_for_provider
from bot.providers.base import ReferenceImage, RenderRequest, TaskStatus
from bot.providers.comfyui import IMAGE_LIMITS, ComfyUIProvider, Workflow
from tests.support.fake_providers.comfyui import FakeComfyUI, in_thread, sample_video
from tests.support.figures import BLUE, RED, figure

WORKFLOW = Path(__file__).resolve().parents[1] / "tests" / "support" / "comfyui_workflow.json"
ENDS = (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELED)


def references() -> tuple[ReferenceImage, ...]:
    front = prepare_for_provider(figure(RED, width=400, height=900), IMAGE_LIMITS)
    side = prepare_for_provider(figure(BLUE, width=300, height=900), IMAGE_LIMITS)
    return ReferenceImage("front", "view", *front), ReferenceImage("side", "view", *side)


async def one_job(provider: ComfyUIProvider, job_id: int, images: tuple[ReferenceImage, ...]) -> tuple[bool, float]:
    """(completed, seconds spent inside the provider's calls)."""
    request = RenderRequest(
        job_id=job_id,
        kind=WorkKind.ANIMATE,
        model="comfyui-workflow",
        prompt="Ava (front view): tall woman, red bob, green eyes. Waves at the camera.",
        negative_prompt="blurry",
        duration=5,
        aspect_ratio="16:9",
        camera="static",
        images=images,
    )
    spent = 0.0
    started = time.perf_counter()
    submission = await provider.submit(request)
    spent += time.perf_counter() - started
    while True:
        started = time.perf_counter()
        result = await provider.poll(submission)
        spent += time.perf_counter() - started
        if result.status in ENDS:
            break
        await provider.next_event(submission.task_id)
    if result.status is not TaskStatus.SUCCEEDED:
        return False, spent
    started = time.perf_counter()
    data = await provider.fetch(result.artifacts[0])
    spent += time.perf_counter() - started
    return data == sample_video(), spent


async def run(jobs: int = 30, step_delay: float = 0.002) -> dict[str, object]:
    images = await asyncio.to_thread(references)
    fake = FakeComfyUI(step_delay=step_delay, steps=8)
    with in_thread(fake):
        provider = ComfyUIProvider(
            base_url=fake.url, workflow=Workflow.load(WORKFLOW), install_id="lkbench-", max_concurrency=2
        )
        gate = asyncio.Semaphore(provider.capabilities.max_concurrency)
        try:

            async def slot(job_id: int) -> tuple[bool, float]:
                async with gate:
                    return await one_job(provider, job_id, images)

            cpu, wall = time.thread_time(), time.perf_counter()
            results = await asyncio.gather(*(slot(n) for n in range(1, jobs + 1)))
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        finally:
            await provider.close()
    completed = sum(1 for ok, _ in results if ok)
    overheads = sorted(spent * 1000 for _, spent in results)
    per_job = Counter(prompt.extra_data.get("likeness_job") for prompt in fake.prompts.values())
    requests = Counter(r.path.split("/")[1] for r in fake.requests if r.path != "/ws")
    return {
        "jobs": jobs,
        "completed": completed,
        "lost": jobs - completed,
        "duplicates": sum(count - 1 for count in per_job.values()),
        "requests_per_job": round(sum(requests.values()) / jobs, 2),
        "requests_by_route": dict(sorted(requests.items())),
        "overhead_ms_per_job": {
            "median": round(statistics.median(overheads), 2),
            "p95": round(overheads[max(0, round(0.95 * len(overheads)) - 1)], 2),
        },
        "client_cpu_ms_per_job": round(cpu * 1000 / jobs, 2),
        "wall_seconds": round(wall, 3),
        "sampler": {"steps": fake.steps, "step_delay_s": step_delay},
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run())))
