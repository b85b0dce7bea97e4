"""The worker: starts queued jobs into free provider slots and drives each one to an end.

One asyncio task per job that holds a provider slot. Every step is written to the database before the
next begins, so a crash at any point resumes where it was:
- `queued` -> `submitting` pins the provider account the job is sent with (`Job.account`: the bot's key or the
  server's key of that moment); every later step uses that account, even if the server's key changes meanwhile;
- `submitting`: `submit_sent` is written before a submit goes out and cleared once its answer (or a refusal that
  proves it never arrived) is recorded. A job whose submit may have reached the provider is never simply sent
  again: a provider that can look the job up (`find`, Kling's external_task_id) is asked first; one that cannot
  (fal, Runway) leaves the job `unsure`, its money held, until a manager sends it again or releases it (a free
  provider is just sent again);
- `running`: polling resumes from the stored task id;
- `downloading`: the provider is polled again for the result's (fresh) URL;
- `delivering`: the result is looked for in the channel before posting, and posting is idempotent, and
  the result message id is written in the same statement that marks the job done.

A provider that is full or busy (429, 503, Kling 1302/1303) is a queue, not a failure: the job waits its
retry-after in the same state, counted against `max_wait_seconds` in a row rather than `max_attempts`, and so
does a paid result that cannot be stored or posted for a while (a full disk, any OSError).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import logging
import math
import random
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from PIL import Image

from bot.domain import Job, JobState, Money
from bot.domain.errors import InvalidInputError, UserFacingError
from bot.imaging.prep import ProviderImageLimits, prepare_for_provider
from bot.infra.logs import set_logging_context
from bot.infra.metrics import Metrics
from bot.jobs.delivery import Delivery, Progress
from bot.jobs.scheduler import Limits, jobs_to_start, positions
from bot.providers.base import (
    Artifact,
    FinalError,
    Frame,
    OutcomeUnknownError,
    PollResult,
    Provider,
    ProviderError,
    ReferenceImage,
    RenderRequest,
    RetryableError,
    Submission,
    TaskStatus,
)
from bot.providers.registry import AccountGoneError, ProviderMissingError, ProviderRegistry
from storage.blobs import BlobStore
from storage.jobs import JobRepository
from storage.ledger import Settlement

log = logging.getLogger(__name__)

CAPACITY = "waiting for provider capacity"  # what the status says while a full or busy provider is waited for
DISK = "waiting for disk space"

EARLY_NUDGE_SECONDS = 120.0  # a callback before the worker resumed its job (after a start) counts this long
ACTIVE = (JobState.SUBMITTING, JobState.RUNNING, JobState.DOWNLOADING, JobState.DELIVERING)


@dataclass(frozen=True)
class WorkerConfig:
    per_user: int = 2
    max_attempts: int = 6  # retryable errors in a row before a job fails
    max_poll_interval: float = 30.0
    max_render_seconds: float = 3600.0  # a task still running after this is given up on
    position_interval: float = 5.0  # how often queue positions are re-announced
    late_check_interval: float = 300.0  # how often renders the bot gave up on are looked at again
    late_check_window: float = 86400.0  # ... and for how long after giving up
    max_wait_seconds: float = 6 * 3600.0  # a full or busy provider (or a full disk) is waited for this long in a row


class Worker:
    def __init__(
        self,
        jobs: JobRepository,
        blobs: BlobStore,
        providers: ProviderRegistry,
        delivery: Delivery,
        config: WorkerConfig | None = None,
        *,
        metrics: Metrics | None = None,
        per_user_by_guild: Callable[[], dict[int, int]] = dict,
        callback_url_for: Callable[[str, int], str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`per_user_by_guild`: the servers' own running caps (the others have `config.per_user`);
        `callback_url_for`: (provider, job id) -> the URL the provider may call back on, for providers that take
        one (None: poll only)."""
        self.jobs = jobs
        self.blobs = blobs
        self.providers = providers
        self.delivery = delivery
        self.config = config or WorkerConfig()
        self.clock = clock
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._drivers: dict[int, asyncio.Task[None]] = {}
        self._last_start: dict[int, float] = {}  # guild -> when it last started a job (fairness)
        self._estimates: dict[tuple[str, str, int], float] = {}  # learned render seconds
        self._artifacts: dict[int, tuple[Artifact, ...]] = {}
        self._job_wakes: dict[int, asyncio.Event] = {}  # poked: look at the job again now (a cancel)
        self._nudges: dict[int, asyncio.Event] = {}  # called back by the provider: poll now (bot.jobs.callbacks)
        self._early_nudges: dict[int, float] = {}  # job -> when it was called back before this worker drove it
        self._late_nudged: set[int] = set()  # called back while not driven: maybe a render the bot gave up on
        self._announced_places: dict[int, int | None] = {}
        self.per_user_by_guild = per_user_by_guild
        self.callback_url_for = callback_url_for
        self.metrics = metrics if metrics is not None else Metrics(clock)
        self._resolved_accounts: set[tuple[int, str]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Resume every job that held a provider slot, then start serving the queue."""
        try:
            await self.providers.purge_retired()  # server keys replaced while shots ran, and no longer needed
        except Exception:
            log.warning("could not delete retired server keys at start; the next late check tries again", exc_info=True)
        for job in await self.jobs.in_states(ACTIVE):
            log.info("resuming job %s (%s)", job.id, job.state)
            self._drive(job)
        self._loop_task = asyncio.create_task(self._loop(), name="likeness-worker")

    async def stop(self) -> None:
        """Stop driving jobs; their state stays in the database and resumes on the next start."""
        tasks = [t for t in (self._loop_task, *self._drivers.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._drivers.clear()
        self._loop_task = None

    def wake(self, job_id: int | None = None) -> None:
        """Something changed (a job was queued or canceled): look at the queue now."""
        self._wake.set()
        if job_id is not None and job_id in self._job_wakes:
            self._job_wakes[job_id].set()

    def nudge(self, job_id: int) -> None:
        """The provider called back about this job's task: poll it now rather than at its next poll time. A
        nudge that comes while the job is being polled is kept for the next wait, and one that comes before the
        worker resumed the job (the listener starts first) is kept until it does. For a render the bot gave up
        on, it brings that job's late check forward."""
        if (event := self._nudges.get(job_id)) is not None:
            event.set()
            return
        self._late_nudged.add(job_id)
        self._wake.set()
        # Kept a little while only: most are late duplicates for jobs already finished. Bounded, though only
        # signed callbacks get here.
        now = self.clock()
        self._early_nudges = {j: t for j, t in self._early_nudges.items() if now - t < EARLY_NUDGE_SECONDS}
        if len(self._early_nudges) < 10_000:
            self._early_nudges[job_id] = now

    async def positions(self) -> dict[int, int]:
        """Place in line of every queued job, as the scheduler will start them."""
        return positions(await self.jobs.in_states([JobState.QUEUED]), self._last_start)

    # ------------------------------------------------------------------ the queue

    async def _loop(self) -> None:
        next_positions = 0.0
        last_late_check = -math.inf
        while True:
            self._wake.clear()  # before filling: a wake-up that arrives while filling is not lost
            try:
                await self._fill_slots()
                if time.monotonic() >= next_positions:  # positions move often; tell members at a calm pace
                    next_positions = time.monotonic() + self.config.position_interval
                    await self._announce_positions()
                if time.monotonic() - last_late_check >= self.config.late_check_interval:
                    last_late_check = time.monotonic()
                    self._late_nudged.clear()  # every late job is looked at now
                    await self._late_checks()
                    await self.providers.purge_retired()
                elif self._late_nudged:
                    nudged, self._late_nudged = self._late_nudged, set()
                    await self._late_checks(only=nudged)
            except Exception:
                log.exception("the worker could not start queued jobs")
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that lands as the event fires
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.position_interval):
                    await self._wake.wait()

    def limits(self) -> Limits:
        caps = {p.capabilities.name: p.capabilities.max_concurrency for p in self.providers.all()}
        accounts = {key: p.capabilities.max_concurrency for key, p in self.providers.server_accounts().items()}
        return Limits(
            provider_caps=caps,
            per_user=self.config.per_user,
            per_user_by_guild=self.per_user_by_guild(),
            server_accounts=accounts,
        )

    async def _fill_slots(self) -> None:
        queued = await self.jobs.in_states([JobState.QUEUED])
        active = await self.jobs.in_states(ACTIVE)
        for job in queued:
            if job.cancel_requested:
                await self._move(
                    job.id, [JobState.QUEUED], JobState.CANCELED, settle=Settlement(), finished_at=self.clock()
                )
        queued = [job for job in queued if not job.cancel_requested]
        for pair in {(job.guild_id, job.provider) for job in (*queued, *active)} - self._resolved_accounts:
            # whose account each job runs on (a server's own key is its own account, with its own limits); once per
            # pair: /animate resolves new ones as it queues, and the registry forgets a key that is removed
            try:
                await self.providers.for_guild(*pair)
            except (ProviderError, UserFacingError) as error:  # a key that does not open, a provider gone
                log.warning(
                    "guild %s: the %s account for its jobs is unknown (%s); each job's own step tells the member",
                    *pair,
                    error,
                )
            except Exception:
                log.exception(
                    "guild %s: could not look up the %s account for its jobs; the next pass tries again", *pair
                )
            else:
                self._resolved_accounts.add(pair)
        starting = jobs_to_start(queued, active, self.limits(), self._last_start)
        for job in starting:
            try:
                _provider, account = await self.providers.resolve(job.guild_id, job.provider)
            except ProviderError:
                account = None  # the server's key does not open: the job's first step says so to the member
            except ProviderMissingError as error:  # removed while the shot waited: nothing was sent, so release it
                await self._move(
                    job.id,
                    [JobState.QUEUED],
                    JobState.FAILED,
                    settle=Settlement(),
                    error=f"{error} Nothing was charged.",
                    cost_final=Money.ZERO,
                    finished_at=self.clock(),
                )
                continue
            started = await self._move(
                job.id, [JobState.QUEUED], JobState.SUBMITTING, started_at=self.clock(), account=account, submit_sent=0
            )
            if started is not None:
                self._last_start[job.guild_id] = self.clock()
                self._announced_places.pop(job.id, None)
                self._drive(started)

    async def _announce_positions(self) -> None:
        """Update the status of queued jobs whose place in line changed since it was last shown."""
        queued = await self.jobs.in_states([JobState.QUEUED])
        places = positions(queued, self._last_start)
        for job in queued:
            place = places.get(job.id)
            if self._announced_places.get(job.id) == place:
                continue
            self._announced_places[job.id] = place
            await self._announce(job, Progress(position=place, eta_seconds=self._eta(job, places)))
        for gone in set(self._announced_places) - set(places):
            del self._announced_places[gone]

    def _eta(self, job: Job, places: dict[int, int]) -> float | None:
        limits = self.limits()
        provider_cap = limits.account_cap(limits.account(job))
        place = places.get(job.id)
        if place is None:
            return None
        render = self._estimate(job)
        return (place // max(provider_cap, 1) + 1) * render

    # ------------------------------------------------------------------ one job

    def _drive(self, job: Job) -> None:
        if job.id in self._drivers:
            return
        self._job_wakes[job.id] = asyncio.Event()
        self._nudges[job.id] = nudge = asyncio.Event()
        if self.clock() - self._early_nudges.pop(job.id, -math.inf) < EARLY_NUDGE_SECONDS:
            nudge.set()
        self._drivers[job.id] = asyncio.create_task(self._run_job(job), name=f"likeness-job-{job.id}")

    async def _run_job(self, job: Job) -> None:
        set_logging_context(job_id=job.id, guild_id=job.guild_id)  # this task's log lines say which job
        try:
            current: Job | None = job
            while current is not None and current.state.active:  # finished, or left to a manager (unsure)
                current = await self._step(current)
            if current is not None and current.account:  # a server key replaced meanwhile may be unneeded now
                await self.providers.purge_retired()
        except asyncio.CancelledError:
            raise
        except Exception:
            error_id = secrets.token_hex(4)
            log.exception("job %s failed unexpectedly (error %s)", job.id, error_id)
            self.metrics.error("job")
            await self._move(
                job.id,
                ACTIVE,
                JobState.FAILED,
                settle=Settlement(),
                error=f"Something went wrong on my side (error id `{error_id}`).",
                finished_at=self.clock(),
            )
        finally:
            self._drivers.pop(job.id, None)
            self._job_wakes.pop(job.id, None)
            nudge = self._nudges.pop(job.id, None)
            if nudge is not None and nudge.is_set():
                # called back while this driver was finishing (giving up on a render, say): the render may have
                # ended since, so the late check the callback asks for is not lost
                self._late_nudged.add(job.id)
            self._artifacts.pop(job.id, None)
            self._wake.set()  # a slot is free

    async def _step(self, job: Job) -> Job | None:
        try:
            # inside the try: a server key that no longer opens is a final error the member can read
            provider = await self._provider_of(job)
            if job.state is JobState.SUBMITTING and job.submit_sent and self._needs_manager(job, provider):
                # the process stopped while a submit was out (or its outcome was unknown): the provider may have it
                return await self._unsure(job, None)
            if job.cancel_requested and job.state in (JobState.SUBMITTING, JobState.RUNNING):
                return await self._cancel(job, provider)
            if job.state is JobState.SUBMITTING:
                return await self._submit(job, provider)
            if job.state is JobState.RUNNING:
                return await self._poll(job, provider)
            if job.state is JobState.DOWNLOADING:
                return await self._download(job, provider)
            if job.state is JobState.DELIVERING:
                return await self._deliver(job)
        except RetryableError as error:
            if job.state is not JobState.DELIVERING:  # posting to Discord is not the provider's health
                self.metrics.provider_error(job.provider, str(error))
            return await self._retry_later(job, error)
        except FinalError as error:
            return await self._fail(job, error)
        except OSError as error:
            if job.state not in (JobState.DOWNLOADING, JobState.DELIVERING):
                raise
            # A paid result survives a bad moment: a full disk, a file that could not be written or read
            return await self._retry_later(job, _storage_error(job, error))
        raise RuntimeError(f"job {job.id} is {job.state}, which the worker does not drive")

    async def _provider_of(self, job: Job) -> Provider:
        """The provider on the account the job was sent with. One the bot is no longer set up with is waited for
        (an admin may put its key back): the shot may be rendering there, and giving up would lose it."""
        try:
            return await self.providers.for_job(job.guild_id, job.provider, job.account)
        except ProviderMissingError as error:
            raise RetryableError(
                f"{error} The shot waits until it is set up again.", code="provider_missing", rate_limited=True
            ) from None
        except AccountGoneError:
            if job.state is not JobState.SUBMITTING or job.submit_sent:
                raise
            # its server's key changed just as it left the queue, before anything was sent: send it on the new one
            provider, account = await self.providers.resolve(job.guild_id, job.provider)
            await self.jobs.update(job.id, account=account)
            return provider

    async def _submit(self, job: Job, provider: Provider) -> Job | None:
        # A submit may have been sent before (a restart, an answer lost): ask the provider first, so nothing is paid
        # twice. A provider that cannot be asked was handled in `_step` (the job is left to a manager).
        submission = await provider.find(job.id) if job.submit_sent and provider.capabilities.findable else None
        if submission is None:
            request = await self._request(job, provider)
            await self.jobs.update(job.id, submit_sent=1)  # written before the request goes out
            try:
                submission = await provider.submit(request)
            except OutcomeUnknownError as error:
                if self._needs_manager(job, provider):
                    return await self._unsure(job, error)
                raise  # retried; the next attempt looks it up first (or a free render is simply sent again)
            except ProviderError:
                if not provider.capabilities.findable:  # a refusal: it certainly did not arrive
                    await self.jobs.update(job.id, submit_sent=0)
                raise
        return await self._move(
            job.id,
            [JobState.SUBMITTING],
            JobState.RUNNING,
            task_id=submission.task_id,
            status_url=submission.status_url,
            attempts=0,
            submit_sent=0,
            next_poll_at=self.clock() + self._first_poll_delay(job),
        )

    @staticmethod
    def _needs_manager(job: Job, provider: Provider) -> bool:
        """A submit that may have arrived cannot be looked up, and sending it again may bill it twice."""
        return not provider.capabilities.findable and job.cost_estimate > Money.ZERO

    async def _unsure(self, job: Job, error: ProviderError | None) -> Job | None:
        """Leave a submit that may have reached the provider to a manager: never re-sent on its own, money held."""
        what = error.message if error is not None else "The bot stopped while this shot was being sent."
        detail = f" (provider said: {error.detail})" if error is not None and error.detail else ""
        log.warning("job %s: the provider may have this shot (%s%s); waiting for a manager", job.id, what, detail)
        message = (
            f"{what}{detail} The provider may have received it and may bill it, but it cannot be asked, so it is not "
            "sent again on its own: a manager chooses **Send again** (sent once more, which may bill it twice) or "
            "**Release** (not sent again, nothing charged). Its money stays held until then."
        )
        return await self._move(job.id, [JobState.SUBMITTING], JobState.UNSURE, error=message, next_poll_at=None)

    async def _poll(self, job: Job, provider: Provider) -> Job | None:
        await self._sleep_until(job, job.next_poll_at or self.clock(), nudgeable=True)
        fresh = await self.jobs.get(job.id)
        if fresh is None or fresh.state is not JobState.RUNNING:
            return fresh
        if fresh.cancel_requested:
            return await self._cancel(fresh, provider)
        job = fresh
        result = await provider.poll(self._submission(job))
        polls = job.polls + 1
        self.metrics.provider_ok(job.provider)
        if result.status is TaskStatus.SUCCEEDED:
            self._artifacts[job.id] = result.artifacts
            self._learn(job, first_poll=polls == 1)
            cost = _billed(job, result)
            return await self._move(
                job.id,
                [JobState.RUNNING],
                JobState.DOWNLOADING,
                settle=Settlement(cost),
                polls=polls,
                attempts=0,
                cost_final=cost,
            )
        if result.status is TaskStatus.FAILED:
            error = result.error or FinalError("The provider could not render this shot.")
            return await self._fail(job.model_copy(update={"polls": polls}), error)
        if result.status is TaskStatus.CANCELED:
            return await self._move(
                job.id,
                [JobState.RUNNING],
                JobState.CANCELED,
                settle=Settlement(),
                polls=polls,
                finished_at=self.clock(),
            )
        if job.started_at and self.clock() - job.started_at > self.config.max_render_seconds:
            return await self._give_up(job.model_copy(update={"polls": polls}))
        updated = await self.jobs.update(
            job.id, polls=polls, attempts=0, waiting_since=None, next_poll_at=self._next_poll(job, polls)
        )
        if updated:
            await self._announce(updated, self._running_progress(updated, result))
        return updated

    async def _download(self, job: Job, provider: Provider) -> Job | None:
        artifacts = self._artifacts.get(job.id)
        if not artifacts:  # after a restart: ask again, the URL may have been refreshed
            result = await provider.poll(self._submission(job))
            if result.status is not TaskStatus.SUCCEEDED or not result.artifacts:
                raise FinalError("The provider no longer has the result of this shot.")
            artifacts = result.artifacts
        video = await provider.fetch(artifacts[0])
        digest = await self.blobs.put(video)
        return await self._move(job.id, [JobState.DOWNLOADING], JobState.DELIVERING, result_blob=digest)

    async def _deliver(self, job: Job) -> Job | None:
        message_id = job.result_message_id or await self.delivery.find_result(job)
        if message_id is None:
            assert job.result_blob is not None
            message_id = await self.delivery.post_result(job, await self.blobs.get(job.result_blob))
        return await self._move(
            job.id, [JobState.DELIVERING], JobState.DONE, result_message_id=message_id, finished_at=self.clock()
        )

    async def _cancel(self, job: Job, provider: Provider) -> Job | None:
        billed = False
        if job.task_id:
            with contextlib.suppress(ProviderError):
                await provider.cancel(self._submission(job))
            billed = not provider.capabilities.cancel_stops_billing  # Kling renders (and bills) it anyway
        return await self._move(
            job.id,
            [JobState.SUBMITTING, JobState.RUNNING],
            JobState.CANCELED,
            settle=Settlement(job.cost_estimate if billed else None),
            cost_final=job.cost_estimate if billed else Money.ZERO,
            finished_at=self.clock(),
        )

    async def _retry_later(self, job: Job, error: RetryableError) -> Job | None:
        now = self.clock()
        since = job.waiting_since if job.waiting_since is not None else now
        decision = next_retry(error, job.attempts, now - since, self.config)
        if decision is None and error.rate_limited:
            return await self._waited_too_long(job, error)
        if decision is None:
            return await self._fail(
                job, FinalError(f"{error.message} I tried {job.attempts + 1} times and gave up.", detail=error.detail)
            )
        attempts, delay = decision
        fields = {"waiting_since": since} if error.rate_limited else {}
        delay *= 1 + random.random() * 0.2  # jitter: retries of many jobs do not land together
        log.info("job %s: %s; retry %s in %.1f s", job.id, error, attempts, delay)
        if job.state is JobState.DOWNLOADING:
            self._artifacts.pop(job.id, None)  # the next attempt asks the provider for the result's URL again
        updated = await self.jobs.update(job.id, attempts=attempts, next_poll_at=now + delay, **fields)
        if updated is None:
            return None
        if error.rate_limited:
            await self._announce(updated, Progress(waiting=_waiting_for(job, error)))
        await self._sleep_until(updated, self.clock() + delay)
        return await self.jobs.get(job.id)

    async def _waited_too_long(self, job: Job, error: RetryableError) -> Job | None:
        hours = self.config.max_wait_seconds / 3600
        waited = f"{hours:g} hours" if hours >= 1 else f"{self.config.max_wait_seconds:g} seconds"
        reason = f"{error.message} The bot waited {waited} in a row and stopped waiting."
        if job.state is JobState.RUNNING:  # the task exists: the provider may still finish (and bill) it
            return await self._give_up(job, reason)
        return await self._fail(job, FinalError(reason, detail=error.detail, code=error.code))

    async def _fail(self, job: Job, error: ProviderError) -> Job | None:
        # A render that succeeded was charged when it did; losing it afterwards (download, posting) is still billed.
        rendered = job.state in (JobState.DOWNLOADING, JobState.DELIVERING)
        billed = error.charged or rendered
        message = error.message + (f" (provider said: {error.detail})" if error.detail else "")
        message += " You were charged for it, as the provider bills it." if billed else " Nothing was charged."
        cost = (job.cost_final if job.cost_final is not None else job.cost_estimate) if billed else Money.ZERO
        return await self._move(
            job.id,
            ACTIVE,
            JobState.FAILED,
            settle=Settlement(cost if billed else None),
            error=message,
            polls=job.polls,
            cost_final=cost,
            finished_at=self.clock(),
        )

    async def _give_up(self, job: Job, reason: str = "The provider did not finish this shot in time.") -> Job | None:
        """Stop waiting for a render that takes too long. The provider may still finish (and bill) it, so its
        money stays held and it is looked at again for a while: a late success is charged and posted."""
        return await self._move(
            job.id,
            [JobState.RUNNING],
            JobState.FAILED,
            error=f"{reason} The bot stopped waiting. If the provider still finishes it today, it will be posted here.",
            polls=job.polls,
            late_check_until=self.clock() + self.config.late_check_window,
            finished_at=self.clock(),
        )

    async def _late_checks(self, only: set[int] | None = None) -> None:
        """Look again at renders the bot gave up on (`only`: those called back): charge and post a late success,
        release the rest."""
        for job in await self.jobs.late_checks():
            if only is not None and job.id not in only:
                continue
            if job.id in self._drivers:
                if only is not None:  # called back while its driver finishes: looked at once the driver is gone
                    self._late_nudged.add(job.id)
                continue
            done = {"late_check_until": None}
            if job.late_check_until is not None and self.clock() > job.late_check_until:
                await self.jobs.transition(job.id, [JobState.FAILED], JobState.FAILED, settle=Settlement(), **done)
                continue
            try:
                provider = await self.providers.for_job(job.guild_id, job.provider, job.account)
                result = await provider.poll(self._submission(job))
            except (ProviderError, ProviderMissingError) as error:  # the next pass looks again
                log.info("late check of job %s: %s", job.id, error)
                continue
            if result.status is TaskStatus.SUCCEEDED:
                cost = _billed(job, result)
                self._artifacts[job.id] = result.artifacts
                late = await self._move(
                    job.id,
                    [JobState.FAILED],
                    JobState.DOWNLOADING,
                    settle=Settlement(cost),
                    cost_final=cost,
                    error=None,
                    finished_at=None,
                    **done,
                )
                if late is not None:
                    log.info("job %s finished late at the provider; posting it", job.id)
                    self._drive(late)
            elif result.status in (TaskStatus.FAILED, TaskStatus.CANCELED):
                await self.jobs.transition(job.id, [JobState.FAILED], JobState.FAILED, settle=Settlement(), **done)

    # ------------------------------------------------------------------ helpers

    async def _request(self, job: Job, provider: Provider) -> RenderRequest:
        limits = provider.capabilities.image_limits
        images: list[ReferenceImage] = []
        for bound in job.bound:
            data = await self.blobs.get(bound.blob)
            prepared, mime = await asyncio.to_thread(_prepare, data, limits)
            images.append(
                ReferenceImage(
                    label=bound.label,
                    role="view" if bound.role == "view" else "element",
                    data=prepared,
                    mime=mime,
                    subject=bound.subject,
                )
            )

        async def frame(digest: str | None) -> Frame | None:
            if digest is None:
                return None
            prepared, mime = await asyncio.to_thread(_prepare, await self.blobs.get(digest), limits)
            return Frame(prepared, mime)

        end_frame, start_frame = await frame(job.params.end_frame), await frame(job.params.start_frame)
        return RenderRequest(
            job_id=job.id,
            kind=job.kind,
            model=job.model,
            prompt=job.prompt,
            negative_prompt=job.negative_prompt,
            duration=job.params.duration,
            aspect_ratio=job.params.aspect_ratio,
            camera=job.params.camera,
            images=tuple(images),
            caption=job.action,
            mode=job.params.mode,
            audio=job.params.audio,
            end_frame=end_frame,
            start_frame=start_frame,
            callback_url=(
                self.callback_url_for(job.provider, job.id)
                if self.callback_url_for is not None and provider.capabilities.callbacks
                else None
            ),
        )

    @staticmethod
    def _submission(job: Job) -> Submission:
        assert job.task_id is not None
        return Submission(task_id=job.task_id, status_url=job.status_url)

    def _estimate(self, job: Job) -> float:
        key = (job.provider, job.model, job.params.duration)
        if key in self._estimates:
            return self._estimates[key]
        own = self.providers.server_accounts().get((job.guild_id, job.provider))
        if own is not None:
            return own.capabilities.typical_seconds
        try:
            return self.providers.get(job.provider).capabilities.typical_seconds
        except InvalidInputError:  # a job of a provider no longer set up: its own step fails it
            log.debug("job %s: provider %s is not set up; guessing 60 s for its render", job.id, job.provider)
        return 60.0

    def _learn(self, job: Job, *, first_poll: bool) -> None:
        """Tune the render-time estimate. Done at the first poll means it may have been done earlier, so the
        estimate creeps down; needing more polls means it was too short, so it moves toward what was seen."""
        key = (job.provider, job.model, job.params.duration)
        before = self._estimate(job)
        if first_poll:
            self._estimates[key] = max(0.5, before * 0.97)
        elif job.started_at is not None:
            took = max(0.5, self.clock() - job.started_at)
            self._estimates[key] = 0.7 * before + 0.3 * took

    def _first_poll_delay(self, job: Job) -> float:
        """Ask when the render is likely done, not before: fewer polls, and the result is not late."""
        return self._estimate(job) * (1.0 + random.random() * 0.05)

    def _next_poll(self, job: Job, polls: int) -> float:
        base = max(0.5, self._estimate(job) * 0.15)
        interval = min(self.config.max_poll_interval, base * 1.5 ** max(0, polls - 1))
        return self.clock() + interval * (1.0 + random.random() * 0.1)

    def _running_progress(self, job: Job, result: PollResult) -> Progress:
        elapsed = self.clock() - (job.started_at or self.clock())
        remaining = max(0.0, self._estimate(job) - elapsed)
        return Progress(eta_seconds=remaining, progress=result.progress)

    async def _sleep_until(self, job: Job, when: float, *, nudgeable: bool = False) -> None:
        """Sleep until `when`, or until the job is poked (a cancel), or, when `nudgeable` (waiting to poll), until
        its provider calls back. Retry back-offs are not nudgeable: a callback does not lift a rate limit."""
        nudge = self._nudges.get(job.id) if nudgeable else None
        delay = when - self.clock()
        if delay <= 0 or (nudge is not None and nudge.is_set()):
            if nudge is not None:
                nudge.clear()
            return
        poke = self._job_wakes.get(job.id)
        if poke is not None:
            poke.clear()
        waits = [asyncio.ensure_future(event.wait()) for event in (poke, nudge) if event is not None]
        if not waits:
            await asyncio.sleep(delay)
            return
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if nudge is not None:
            nudge.clear()  # the poll that follows answers it

    async def _move(
        self,
        job_id: int,
        allowed_from: Iterable[JobState],
        to: JobState,
        *,
        settle: Settlement | None = None,
        **fields: object,
    ) -> Job | None:
        """Change a job's state in the database (settling its money in the same transaction), then show it:
        every transition reaches the status message."""
        fields.setdefault("waiting_since", None)  # a step forward ends any wait for capacity
        moved = await self.jobs.transition(job_id, allowed_from, to, settle=settle, **fields)
        if moved is not None and moved.state.finished:
            self.metrics.job_finished(moved)
        if moved is not None:
            await self._announce(moved)
        return moved

    async def _announce(self, job: Job, progress: Progress | None = None) -> None:
        try:
            await self.delivery.show_status(job, progress or Progress())
        except Exception:  # a status edit must never stop a paid job
            log.exception("could not update the status of job %s", job.id)


def next_retry(error: RetryableError, attempts: int, waited: float, config: WorkerConfig) -> tuple[int, float] | None:
    """After a retryable error: (attempts counted, seconds to wait before the jitter), or None to give up.

    A full or busy provider (`rate_limited`: 429, 503, Kling 1302/1303; also a full disk) is a queue: it does not
    count as an attempt, and is waited for (its Retry-After, else sooner at first, then once a minute) until
    `waited` in a row reaches `max_wait_seconds`. Any other error counts, and `max_attempts` in a row end the job.
    (bench/provider_*.py drive their jobs with this too.)"""
    if error.rate_limited:
        if waited >= config.max_wait_seconds:
            return None
        return attempts, error.retry_after if error.retry_after is not None else min(60.0, max(2.0, waited / 2))
    attempts += 1
    if attempts >= config.max_attempts:
        return None
    return attempts, error.retry_after if error.retry_after is not None else min(60.0, 2.0**attempts)


def _waiting_for(job: Job, error: RetryableError) -> str:
    """What the status says while a job waits: for the provider, for disk space, or to post (Discord, an admin)."""
    if error.code == "disk_full":
        return DISK
    if error.code == "provider_missing":
        return "waiting for an admin to set the provider up again"
    if error.code == "io" or job.state is JobState.DELIVERING:
        return "trying again shortly"
    return CAPACITY


def _storage_error(job: Job, error: OSError) -> RetryableError:
    """An OSError while storing, reading or posting a paid result, as a wait: it is retried with back-off, in the
    same state (so after a restart too)."""
    full = error.errno in (errno.ENOSPC, errno.EDQUOT)
    if full:
        log.error(
            "job %s: the disk is full (ENOSPC) while keeping its result (%s): free space in the data folder; the job "
            "stays %s and is tried again",
            job.id,
            error,
            job.state.value,
        )
    else:
        log.error("job %s: could not store, read or post its result (%s); tried again", job.id, error)
    message = (
        "The bot's disk is full, so the result could not be kept yet." if full else "The result could not be kept."
    )
    return RetryableError(
        f"{message} It is tried again until it works.",
        detail=f"{type(error).__name__}: {error.strerror or error}",
        code="disk_full" if full else "io",
        rate_limited=True,
    )


def _billed(job: Job, result: PollResult) -> Money:
    """What a finished render cost: what the provider reported charging, else the job's estimate."""
    return result.charged if result.charged is not None else job.cost_estimate


def _prepare(data: bytes, limits: ProviderImageLimits) -> tuple[bytes, str]:
    """A stored cleaned reference, re-encoded within the provider's limits (blocking: run in a thread)."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return prepare_for_provider(image, limits)
