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

from collections.abc import Callable, Mapping, Sequence
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

    @property
    def subject(self) -> int: ...


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
class MultiShot:
    """A model that renders several shots in one task (a storyboard): each shot its own prompt and seconds, the
    seconds adding up to the clip's duration (which must be one of the row's durations)."""

    max_shots: int
    min_shot_seconds: int
    shot_prompt_max: int
    min_shots: int = 1


@dataclass(frozen=True)
class ModelRow:
    """What one model takes: one row of a provider's capability table (`likeness providers` prints them).

    Orders are validated against the chosen model's row before any money is held, and the `/animate` options
    autocomplete from it. `durations` lists every length a clip may have, the default first; `free_durations`
    says the model takes any whole second between the shortest and the longest (Kling 3.0: 3..15), not only a
    few fixed lengths. Prices are USD per second of clip for each mode ("" when the model has no modes), with
    native audio where it costs more; an image model has `price_per_image` instead."""

    model: str
    kinds: frozenset[WorkKind]
    durations: tuple[int, ...] = ()
    free_durations: bool = False
    modes: tuple[str, ...] = ()  # quality modes, cheapest first; () : one quality
    resolutions: Mapping[str, str] = field(default_factory=dict)  # mode ("" without modes) -> "720p", for admins
    aspect_ratios: tuple[str, ...] = ("16:9", "9:16", "1:1")
    max_images: int = 1  # reference images one shot may bind, in all (views and elements)
    max_subjects: int = 1  # distinct characters one shot may hold
    start_frame: str | None = None  # the request field of the first frame (None: the model takes none)
    end_frame: str | None = None  # the request field of the last frame (None: the model takes none)
    end_frame_modes: tuple[str, ...] | None = None  # modes where an end frame is taken (None: every mode)
    multi_shot: MultiShot | None = None
    extend_from: tuple[str, ...] = ()  # models whose clips this one extends
    audio: bool = False  # renders native audio when asked
    negative_prompt: bool = False  # False: negative presets are dropped, with a visible note
    prompt_max_chars: int = 2500
    element_syntax: Dialect = PLAIN  # how the prompt refers to bound images
    price_per_second: Mapping[str, Money] = field(default_factory=dict)
    audio_price_per_second: Mapping[str, Money] = field(default_factory=dict)  # with audio on, where it differs
    price_per_image: Money | None = None
    route: str = ""  # the API the model is reached on, for admins ("/v1/videos/omni-video")
    note: str = ""  # what an admin should know when choosing it

    @property
    def makes_clips(self) -> bool:
        return WorkKind.ANIMATE in self.kinds

    def seconds_text(self) -> str:
        """'3-15 s' for free lengths, '5 or 10 s' for a fixed set."""
        ordered = sorted(self.durations)
        if not ordered:
            return "no clips"
        if self.free_durations and len(ordered) > 2:
            return f"{ordered[0]}-{ordered[-1]} s"
        if len(ordered) == 1:
            return f"{ordered[0]} s"
        return ", ".join(map(str, ordered[:-1])) + f" or {ordered[-1]} s"

    def mode_or_default(self, mode: str | None) -> str:
        """The mode a request runs in: the one asked for when the model has it, else its first ("": no modes)."""
        if mode and mode in self.modes:
            return mode
        return self.modes[0] if self.modes else ""

    def per_second(self, mode: str | None, *, audio: bool = False) -> Money:
        """The price of one second in this mode (with native audio when asked and priced apart)."""
        key = self.mode_or_default(mode)
        if audio and key in self.audio_price_per_second:
            return self.audio_price_per_second[key]
        return self.price_per_second.get(key, Money.ZERO)

    def clip_cost(self, mode: str | None, seconds: int, *, audio: bool = False) -> Money:
        return self.per_second(mode, audio=audio) * seconds

    def takes_end_frame(self, mode: str | None) -> bool:
        if self.end_frame is None:
            return False
        return self.end_frame_modes is None or self.mode_or_default(mode) in self.end_frame_modes

    def as_json(self) -> dict[str, object]:
        """The row for `likeness providers --json`: plain values, prices as USD text."""
        shots = self.multi_shot
        return {
            "model": self.model,
            "kinds": sorted(kind.value for kind in self.kinds),
            "durations": sorted(self.durations),
            "free_durations": self.free_durations,
            "modes": list(self.modes),
            "resolutions": dict(self.resolutions),
            "aspect_ratios": list(self.aspect_ratios),
            "max_images": self.max_images,
            "max_subjects": self.max_subjects,
            "start_frame": self.start_frame,
            "end_frame": self.end_frame,
            "end_frame_modes": list(self.end_frame_modes) if self.end_frame_modes is not None else None,
            "multi_shot": None
            if shots is None
            else {
                "max_shots": shots.max_shots,
                "min_shots": shots.min_shots,
                "min_shot_seconds": shots.min_shot_seconds,
                "shot_prompt_max": shots.shot_prompt_max,
                "max_total_seconds": max(self.durations, default=0),
            },
            "extend_from": list(self.extend_from),
            "audio": self.audio,
            "negative_prompt": self.negative_prompt,
            "prompt_max_chars": self.prompt_max_chars,
            "prompt_syntax": self.element_syntax.name,
            "usd_per_second": {mode: price.plain for mode, price in self.price_per_second.items()},
            "usd_per_second_with_audio": {mode: price.plain for mode, price in self.audio_price_per_second.items()},
            "usd_per_image": self.price_per_image.plain if self.price_per_image is not None else None,
            "route": self.route,
            "note": self.note,
        }


def free_seconds(shortest: int, longest: int, default: int) -> tuple[int, ...]:
    """Every whole second from `shortest` to `longest`, `default` first (a row's `durations`)."""
    return (default, *(s for s in range(shortest, longest + 1) if s != default))


@dataclass(frozen=True)
class Capabilities:
    """What a provider offers: its capability table (`rows`, one ModelRow per model) and how its account
    behaves. A shot is validated against the row of its model (`row`), never against the provider as a whole."""

    name: str
    kinds: frozenset[WorkKind]
    rows: tuple[ModelRow, ...]
    default_model: str  # the clip model used when neither the member nor the server chose one
    image_limits: ProviderImageLimits
    max_concurrency: int  # tasks the account may run at once; more wait in our queue
    needs_key: bool = True
    typical_seconds: float = 60.0  # a first guess of render time, for the first poll and the ETA
    display_name: str = ""  # how members see it ("Kling", "fal.ai"); the name if empty
    cancel_stops_billing: bool = True  # False where a canceled task still renders and is billed (Kling)
    image_model: str | None = None  # the model used for WorkKind.SHEET, when the provider makes images
    callbacks: bool = False  # takes a per-task callback URL (RenderRequest.callback_url): a nudge to poll now
    # `find` really looks a task up by our job id (Kling's external_task_id): a submit whose outcome is unknown is
    # looked up before it is sent again. False (fal, Runway): it can't be, so such a submit waits for a manager.
    findable: bool = False

    def __post_init__(self) -> None:
        pairs = [(row.model, kind) for row in self.rows for kind in row.kinds]
        if len(set(pairs)) != len(pairs):
            raise ValueError(f"{self.name}: a model is listed twice for the same work in its capability table")
        if self.find_row(self.default_model) is None:
            raise ValueError(f"{self.name}: the default model {self.default_model!r} is not a clip model of its table")
        if self.image_model is not None and self.find_row(self.image_model, WorkKind.SHEET) is None:
            raise ValueError(f"{self.name}: the image model {self.image_model!r} is not in its table")

    @property
    def label(self) -> str:
        return self.display_name or self.name.capitalize()

    @property
    def models(self) -> tuple[str, ...]:
        """The clip models a member may choose, in the table's order."""
        return tuple(row.model for row in self.rows if row.makes_clips)

    @property
    def default_row(self) -> ModelRow:
        return self.row(self.default_model)

    def find_row(self, model: str | None, kind: WorkKind = WorkKind.ANIMATE) -> ModelRow | None:
        """The row of `model` for this kind of work (a model may have a clip row and an image row)."""
        return next((row for row in self.rows if row.model == model and kind in row.kinds), None)

    def row(self, model: str, kind: WorkKind = WorkKind.ANIMATE) -> ModelRow:
        found = self.find_row(model, kind)
        if found is None:
            known = ", ".join(r.model for r in self.rows if kind in r.kinds)
            raise ValueError(f"{self.label} has no {kind.value} model {model!r} (known: {known})")
        return found

    @property
    def image_row(self) -> ModelRow | None:
        return self.find_row(self.image_model, WorkKind.SHEET) if self.image_model else None

    def clip_models_where(self, test: Callable[[ModelRow], bool]) -> tuple[str, ...]:
        """The clip models that pass `test`: what a refusal offers instead."""
        return tuple(row.model for row in self.rows if row.makes_clips and test(row))


@dataclass(frozen=True)
class ReferenceImage:
    """An image bound to a shot: a character view or an element, already prepared for the provider."""

    label: str  # "front", "three_quarter", "jacket"... for logs and the member's summary
    role: Literal["view", "element"]
    data: bytes
    mime: str
    subject: int = 0  # which cast member's view this is (0: the first character); elements keep 0


@dataclass(frozen=True)
class ShotPrompt:
    """One shot of a multi-shot task: its own prompt and seconds (ModelRow.multi_shot)."""

    prompt: str
    duration: int


@dataclass(frozen=True)
class Frame:
    """A start or end frame: an image the clip must begin or end on (already prepared for the provider)."""

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
    mode: str | None = None  # one of the model row's modes, or None for its default
    callback_url: str | None = None  # where the provider may say the task changed (Capabilities.callbacks)
    audio: bool = False  # native audio (ModelRow.audio)
    start_frame: Frame | None = None  # the clip begins on this image (ModelRow.start_frame), else on a view
    end_frame: Frame | None = None  # the clip ends on this image (ModelRow.end_frame)
    shots: tuple[ShotPrompt, ...] = ()  # a multi-shot task (ModelRow.multi_shot): seconds add up to `duration`


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


def request_problems(row: ModelRow, request: RenderRequest) -> list[str]:
    """What the model's API would refuse in this clip request, in words (the provider raises them as one
    FinalError before sending anything). Orders check the same row earlier, before any money is held; this is the
    provider's own guard for whatever reaches it another way (a re-queued job, a story's planner)."""
    problems: list[str] = []
    if request.duration not in row.durations:
        problems.append(f"{row.model} clips last {row.seconds_text()}, not {request.duration} s")
    if request.aspect_ratio not in row.aspect_ratios:
        problems.append(f"the aspect ratio {request.aspect_ratio!r} is not one of {', '.join(row.aspect_ratios)}")
    if request.mode and row.modes and request.mode not in row.modes:
        problems.append(f"{row.model} has the modes {', '.join(row.modes)}, not {request.mode!r}")
    if request.audio and not row.audio:
        problems.append(f"{row.model} renders no audio")
    if request.start_frame is not None and row.start_frame is None:
        problems.append(f"{row.model} takes no start frame")
    if request.end_frame is not None and not row.takes_end_frame(request.mode):
        problems.append(f"{row.model} takes no end frame" + ("" if row.end_frame is None else " in this mode"))
    if len(request.images) > row.max_images:
        problems.append(f"{row.model} takes at most {row.max_images} reference images, not {len(request.images)}")
    subjects = len({image.subject for image in request.images if image.role == "view"})
    if subjects > row.max_subjects:
        problems.append(f"{row.model} takes at most {row.max_subjects} characters in one shot, not {subjects}")
    if request.shots:
        problems += shot_problems(row, request.shots, request.duration)
    return problems


def shot_problems(row: ModelRow, shots: Sequence[ShotPrompt], duration: int) -> list[str]:
    """A multi-shot task against the model's storyboard limits."""
    limits = row.multi_shot
    if limits is None:
        return [f"{row.model} renders one shot per task"]
    problems: list[str] = []
    if not limits.min_shots <= len(shots) <= limits.max_shots:
        problems.append(f"{row.model} takes {limits.min_shots}-{limits.max_shots} shots in one task, not {len(shots)}")
    short = [i + 1 for i, shot in enumerate(shots) if shot.duration < limits.min_shot_seconds]
    if short:
        problems.append(f"each shot lasts at least {limits.min_shot_seconds} s (shot {short[0]} does not)")
    if sum(shot.duration for shot in shots) != duration:
        problems.append(f"the shots' seconds add up to {sum(s.duration for s in shots)}, not the clip's {duration}")
    long = [i + 1 for i, shot in enumerate(shots) if len(shot.prompt) > limits.shot_prompt_max]
    if long:
        problems.append(f"a shot's prompt is at most {limits.shot_prompt_max} characters (shot {long[0]} is longer)")
    return problems
