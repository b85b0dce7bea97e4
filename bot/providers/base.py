"""What every render provider declares and implements, and the typed errors it raises.

A provider knows no Discord and no database. The worker drives it: `submit` once per job (with the job's
idempotency key: where the provider can look a task up by it, `Capabilities.findable`, a crash between submit and
saving the task id never submits twice, as `find` finds it; where it cannot, such a job waits for a manager), then
`poll` until the task ends, then `fetch` the result at once (provider URLs expire). Errors are typed: retryable
ones are retried by the worker with backoff (a full or busy provider, `rate_limited`, is waited for), a submit
whose outcome is unknown is OutcomeUnknownError, final ones end the job with the provider's own message shown to
the member.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol, runtime_checkable

from bot.domain import Money, WorkKind
from bot.imaging.prep import ProviderImageLimits


class Referable(Protocol):
    """Anything with a label and a role: a prompt's bound reference, or a ReferenceImage in a provider."""

    @property
    def label(self) -> str: ...

    @property
    def role(self) -> Literal["view", "element"]: ...


@dataclass(frozen=True)
class Dialect:
    """How a prompt names the images bound to a shot, in one provider's syntax (bot.generation.prompts writes it;
    the provider builds its request from the same tokens). `tokens` names each reference, in order; None: the
    prompt names no image and describes them in words instead ("plain")."""

    name: str
    tokens: Callable[[Sequence[Referable]], tuple[str, ...]] | None = None

    @property
    def plain(self) -> bool:
        return self.tokens is None

    def tokens_for(self, references: Sequence[Referable]) -> tuple[str, ...]:
        return self.tokens(references) if self.tokens is not None else tuple("" for _ in references)


PLAIN = Dialect("plain")


class TaskStatus(StrEnum):
    QUEUED = "queued"  # accepted, waiting at the provider
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


@dataclass(frozen=True)
class CostModel:
    """Price in USD: per second of video for clips, per image for images."""

    per_second: dict[str, Money] = field(default_factory=dict)  # model -> price of a second
    per_image: dict[str, Money] = field(default_factory=dict)  # model -> price of an image


@dataclass(frozen=True)
class Capabilities:
    name: str
    kinds: frozenset[WorkKind]
    models: tuple[str, ...]
    default_model: str
    durations: tuple[int, ...]  # seconds a clip may last
    aspect_ratios: tuple[str, ...]
    max_reference_images: int  # subject images one shot may bind
    negative_prompt: bool  # False: negative presets are dropped, with a visible note
    element_syntax: Dialect  # how the prompt refers to bound images
    prompt_max_chars: int
    extend: bool
    image_limits: ProviderImageLimits
    max_concurrency: int  # tasks the account may run at once; more wait in our queue
    cost: CostModel
    needs_key: bool = True
    typical_seconds: float = 60.0  # a first guess of render time, for the first poll and the ETA
    display_name: str = ""  # how members see it ("Kling", "fal.ai"); the name if empty
    cancel_stops_billing: bool = True  # False where a canceled task still renders and is billed (Kling)
    modes: tuple[str, ...] = ()  # quality modes where the provider has them (Kling: "std", "pro")
    image_model: str | None = None  # the model used for WorkKind.SHEET, when the provider makes images
    callbacks: bool = False  # takes a per-task callback URL (RenderRequest.callback_url): a nudge to poll now
    # `find` really looks a task up by our job id (Kling's external_task_id): a submit whose outcome is unknown is
    # looked up before it is sent again. False (fal, Runway): it can't be, so such a submit waits for a manager.
    findable: bool = False

    @property
    def label(self) -> str:
        return self.display_name or self.name.capitalize()


@dataclass(frozen=True)
class ReferenceImage:
    """An image bound to a shot: a character view or an element, already prepared for the provider."""

    label: str  # "front", "three_quarter", "jacket"... for logs and the member's summary
    role: Literal["view", "element"]
    data: bytes
    mime: str


@dataclass(frozen=True)
class RenderRequest:
    job_id: int  # our idempotency key (Kling external_task_id, fal/runway metadata)
    kind: WorkKind
    model: str
    prompt: str
    negative_prompt: str | None
    duration: int  # seconds (clips); ignored for images
    aspect_ratio: str
    camera: str  # "static", "push_in", "pan_left", "pan_right", "orbit"
    images: tuple[ReferenceImage, ...]
    caption: str = ""  # a short human caption (the member's action), for providers that draw one
    mode: str | None = None  # one of Capabilities.modes, or None for the provider's default
    callback_url: str | None = None  # where the provider may say the task changed (Capabilities.callbacks)


@dataclass(frozen=True)
class Submission:
    """What to keep to find the task again after a restart."""

    task_id: str
    status_url: str | None = None


@dataclass(frozen=True)
class Artifact:
    url: str  # where to fetch the result (expires)
    mime: str
    duration: float | None = None


@dataclass(frozen=True)
class PollResult:
    status: TaskStatus
    progress: float | None = None  # 0..1 when the provider says
    artifacts: tuple[Artifact, ...] = ()
    error: ProviderError | None = None  # set when status is FAILED
    charged: Money | None = None  # what the provider says it charged


@dataclass(frozen=True)
class KeyOwner:
    """Whose provider account an instance runs on, so the errors an admin acts on name the right account and
    the right place to fix its key."""

    whose: str  # "the bot's" or "this server's"
    fix: str  # where the key is fixed, "" for the bot's (each provider names its own settings)

    @property
    def Whose(self) -> str:
        return self.whose[:1].upper() + self.whose[1:]


BOT_KEYS = KeyOwner("the bot's", "")
SERVER_KEYS = KeyOwner("this server's", "with `/settings key set` (a server admin)")


class ProviderError(Exception):
    """A provider problem. `message` is for the member; `detail` is the provider's own words."""

    retryable: bool = False

    def __init__(self, message: str, *, detail: str = "", code: str = "", charged: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.code = code
        self.charged = charged

    def __str__(self) -> str:
        return f"{self.message} ({self.detail})" if self.detail else self.message


class RetryableError(ProviderError):
    """Rate limit, concurrency limit, 5xx, timeout: try again later."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        detail: str = "",
        code: str = "",
        charged: bool = False,
        retry_after: float | None = None,
        rate_limited: bool = False,
    ) -> None:
        super().__init__(message, detail=detail, code=code, charged=charged)
        self.retry_after = retry_after
        # A rate or concurrency limit (429, Kling 1302/1303): the provider is full, not failing, so the
        # worker waits much longer before it gives up on the job.
        self.rate_limited = rate_limited


class OutcomeUnknownError(RetryableError):
    """A submit that may have reached the provider and been accepted (and billed), with no answer to say so: a
    read timeout, a connection dropped after the request was sent, a 5xx other than 503, an unreadable success.
    The worker never sends it again on its own unless the provider can look the job up (`Capabilities.findable`)
    or the render is free. Errors where the request certainly did not arrive (connect errors, 4xx, a 429 or 503
    "busy") stay plain RetryableError or FinalError."""


class FinalError(ProviderError):
    """Auth, validation, content safety, balance: retrying will not help."""


@runtime_checkable
class Provider(Protocol):
    capabilities: Capabilities

    async def submit(self, request: RenderRequest) -> Submission: ...

    async def find(self, job_id: int) -> Submission | None:
        """The task submitted earlier for this job, if the provider has one (idempotency)."""
        ...

    async def poll(self, submission: Submission) -> PollResult: ...

    async def cancel(self, submission: Submission) -> None: ...

    async def fetch(self, artifact: Artifact) -> bytes:
        """Download a result at once (its URL expires)."""
        ...

    def estimate_cost(self, request: RenderRequest) -> Money: ...

    async def close(self) -> None: ...
