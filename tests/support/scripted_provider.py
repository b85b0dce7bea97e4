"""A provider test double with a "remote" backend that outlives bot restarts, like a real provider does.

The backend counts submits and polls per job, tracks how many tasks render at once, and can be told to
hold renders or submits, fail, or answer with retryable errors, so tests can stop the bot at any stage.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from bot.domain import Money, WorkKind
from bot.imaging.prep import KLING
from bot.providers.base import (
    Artifact,
    Capabilities,
    FinalError,
    ModelRow,
    PollResult,
    ProviderError,
    RenderRequest,
    RetryableError,
    Submission,
    TaskStatus,
)
from bot.providers.kling import IMAGES_DIALECT


@dataclass
class Task:
    job_id: int
    request: RenderRequest
    submitted_at: float
    status: TaskStatus = TaskStatus.RUNNING
    finished_at: float | None = None


@dataclass
class Backend:
    """The provider's side of the wire: survives the bot."""

    render_seconds: float = 0.1
    video: bytes = b"\x00\x00\x00\x18ftypmp42fake-video"
    tasks: dict[str, Task] = field(default_factory=dict)
    submits: dict[int, int] = field(default_factory=dict)  # job id -> submit calls that reached us
    polls: dict[int, int] = field(default_factory=dict)
    canceled: list[int] = field(default_factory=list)
    hold_render: asyncio.Event = field(default_factory=asyncio.Event)  # renders finish only once set
    hold_submit: asyncio.Event = field(default_factory=asyncio.Event)  # submit answers only once set
    retryable_submits: int = 0  # the next N submits fail with a retryable error
    fail_with: ProviderError | None = None  # tasks fail with this at their end
    running_now: int = 0
    max_running: int = 0

    def __post_init__(self) -> None:
        self.hold_render.set()
        self.hold_submit.set()

    def _refresh(self) -> None:
        now = time.monotonic()
        running = 0
        for task in self.tasks.values():
            if task.status is TaskStatus.RUNNING:
                done = self.hold_render.is_set() and now - task.submitted_at >= self.render_seconds
                if done:
                    task.status = TaskStatus.FAILED if self.fail_with else TaskStatus.SUCCEEDED
                    task.finished_at = now
                else:
                    running += 1
        self.running_now = running
        self.max_running = max(self.max_running, running)


class ScriptedProvider:
    def __init__(self, backend: Backend, *, name: str = "scripted", max_concurrency: int = 1) -> None:
        self.backend = backend
        self.capabilities = Capabilities(
            name=name,
            kinds=frozenset({WorkKind.ANIMATE}),
            rows=(
                ModelRow(
                    "scripted-1",
                    frozenset({WorkKind.ANIMATE}),
                    durations=(5, 10),
                    max_images=4,
                    element_syntax=IMAGES_DIALECT,
                    price_per_second={"": Money.from_usd("0.10")},
                ),
            ),
            default_model="scripted-1",
            image_limits=KLING,
            max_concurrency=max_concurrency,
            typical_seconds=0.1,
            findable=True,  # its `find` looks the task up by job id, like Kling's external_task_id
        )

    async def submit(self, request: RenderRequest) -> Submission:
        backend = self.backend
        if backend.retryable_submits > 0:
            backend.retryable_submits -= 1
            raise RetryableError(
                "The provider is busy.", detail="parallel task over resource pack limit", retry_after=0.05
            )
        backend.submits[request.job_id] = backend.submits.get(request.job_id, 0) + 1
        task_id = f"task-{request.job_id}"
        backend.tasks[task_id] = Task(request.job_id, request, time.monotonic())
        backend._refresh()
        await backend.hold_submit.wait()  # the task exists at the provider before we hear back
        return Submission(task_id)

    async def find(self, job_id: int) -> Submission | None:
        task_id = f"task-{job_id}"
        return Submission(task_id) if task_id in self.backend.tasks else None

    async def poll(self, submission: Submission) -> PollResult:
        backend = self.backend
        task = backend.tasks[submission.task_id]
        backend.polls[task.job_id] = backend.polls.get(task.job_id, 0) + 1
        backend._refresh()
        if task.status is TaskStatus.SUCCEEDED:
            return PollResult(
                TaskStatus.SUCCEEDED, artifacts=(Artifact(f"scripted://{submission.task_id}", "video/mp4"),)
            )
        if task.status is TaskStatus.FAILED:
            error = backend.fail_with or FinalError("failed")
            return PollResult(TaskStatus.FAILED, error=error)
        if task.status is TaskStatus.CANCELED:
            return PollResult(TaskStatus.CANCELED)
        return PollResult(TaskStatus.RUNNING, progress=0.5)

    async def cancel(self, submission: Submission) -> None:
        task = self.backend.tasks[submission.task_id]
        task.status = TaskStatus.CANCELED
        self.backend.canceled.append(task.job_id)

    async def fetch(self, artifact: Artifact) -> bytes:
        return self.backend.video

    def estimate_cost(self, request: RenderRequest) -> Money:
        return Money.from_usd("0.10") * request.duration

    async def close(self) -> None:
        return None
