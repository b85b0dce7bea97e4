"""A job: one shot or sheet in the render queue, what it asks a provider to make, and the states it goes through."""

from __future__ import annotations

from enum import StrEnum

from bot.domain.models import Frozen
from bot.domain.money import Money


class WorkKind(StrEnum):
    """What a job asks a provider to make (stored as its value in the jobs table)."""

    ANIMATE = "animate"  # image(s) + prompt -> video clip
    SHEET = "sheet"  # reference images + prompt -> multi-angle character sheet image
    EXTEND = "extend"  # a previous clip -> a longer clip


class JobState(StrEnum):
    QUEUED = "queued"
    SUBMITTING = "submitting"
    RUNNING = "running"
    DOWNLOADING = "downloading"
    DELIVERING = "delivering"
    # The submit may have reached a provider that cannot be asked (fal, Runway): never re-sent on its own; the
    # money stays held and a manager chooses to send it again or to release it. Holds no provider slot.
    UNSURE = "unsure"
    DONE = "done"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def active(self) -> bool:
        """Holding a provider slot: submitted or about to be, not yet delivered."""
        return self in (JobState.SUBMITTING, JobState.RUNNING, JobState.DOWNLOADING, JobState.DELIVERING)

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELED)

    @property
    def label(self) -> str:
        return {
            JobState.QUEUED: "Waiting in the queue",
            JobState.SUBMITTING: "Sending to the provider",
            JobState.RUNNING: "Rendering",
            JobState.DOWNLOADING: "Downloading the result",
            JobState.DELIVERING: "Posting the result",
            JobState.UNSURE: "Waiting for a manager: the provider may have it",
            JobState.DONE: "Done",
            JobState.FAILED: "Failed",
            JobState.CANCELED: "Canceled",
        }[self]


class BoundImage(Frozen):
    label: str
    role: str  # "view" or "element"
    blob: str
    subject: int = 0  # which cast member's view (0: the shot's character)


class ShotParams(Frozen):
    duration: int
    aspect_ratio: str
    camera: str
    setting: str | None = None
    mode: str | None = None
    notes: list[str] = []
    audio: bool = False  # native audio, on a model that renders it
    end_frame: str | None = None  # blob digest of the image the clip ends on, on a model that takes one
    start_frame: str | None = None  # blob digest of the image the clip begins on (else the lead view)
    cast: list[int] = []  # the other characters of the shot (ids, in cast order); the job's character leads


BOT_ACCOUNT = ""  # Job.account of a shot sent with the bot's own key


class Job(Frozen):
    id: int
    guild_id: int
    channel_id: int
    user_id: int
    character_id: int | None
    character_name: str
    character_version: int
    kind: WorkKind
    provider: str
    model: str
    action: str
    prompt: str
    negative_prompt: str | None
    params: ShotParams
    bound: list[BoundImage]
    cost_estimate: Money  # reserved when it was queued
    cost_final: Money | None  # what it cost once settled (zero when nothing was charged)
    state: JobState
    task_id: str | None
    status_url: str | None
    attempts: int
    polls: int
    next_poll_at: float | None
    status_message_id: int | None
    result_message_id: int | None
    result_blob: str | None
    error: str | None
    parent_job_id: int | None
    cancel_requested: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    late_check_until: float | None = None  # gave up waiting; the provider may still finish it until then
    account: str | None = None  # the provider account it was sent with: BOT_ACCOUNT or a server key's version
    result_posted_whole: bool = False  # its channel has the very clip rendered (so the data folder may drop it)
    submit_sent: bool = False  # a submit may be at the provider with no answer recorded (set before it is sent)
    waiting_since: float | None = None  # waiting for provider capacity (or disk space) since then, in a row
