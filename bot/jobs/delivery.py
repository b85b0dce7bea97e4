"""What the worker needs from the place results are shown (Discord in the bot, nothing in benchmarks), and what
the runtime adds at a stop (`ThrottledDelivery.flush_all`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.domain import Job


@dataclass(frozen=True)
class Progress:
    """What a status message shows besides the job itself."""

    position: int | None = None  # place in line while queued (1 = next)
    eta_seconds: float | None = None  # until the result, best guess
    progress: float | None = None  # 0..1 when the provider reports it
    waiting: str | None = None  # why the job is waiting in its state: "waiting for provider capacity"


class Delivery(Protocol):
    async def show_status(self, job: Job, progress: Progress) -> None:
        """Create or update the job's status message (throttled by the implementation)."""
        ...

    async def post_result(self, job: Job, video: bytes) -> int:
        """Post the result; returns the message id. Must be idempotent for the same job."""
        ...

    async def find_result(self, job: Job) -> int | None:
        """After a restart: the result message already posted for this job, if any."""
        ...


class ThrottledDelivery(Delivery, Protocol):
    """A delivery that may hold status edits back (throttled): the runtime flushes it once the worker stopped."""

    async def flush_all(self) -> None:
        """Make every status message show its job's latest state now."""
        ...


class NoDelivery:
    """Delivers nowhere: for benchmarks and `likeness demo`."""

    def __init__(self) -> None:
        self.posted: dict[int, bytes] = {}

    async def show_status(self, job: Job, progress: Progress) -> None:
        return None

    async def post_result(self, job: Job, video: bytes) -> int:
        self.posted[job.id] = video
        return job.id

    async def find_result(self, job: Job) -> int | None:
        return job.id if job.id in self.posted else None

    async def flush_all(self) -> None:
        return None
