"""Job status messages and results in the channel: normal bot messages, never the interaction token
(which dies after 15 minutes, long before many renders finish).

Status edits are throttled per message; the latest state is always flushed. Results are posted with a
nonce that Discord enforces, and looked for in the channel after a restart, so a result is posted once.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable
from typing import Any

import discord

from bot.discord_io.components import result_marker, result_view, sheet_view, unsure_view
from bot.domain import Job, JobState, WorkKind
from bot.imaging.video import fit_to_size, thumbnail
from bot.jobs.delivery import Progress
from bot.library.sheets.split import split_sheet
from bot.providers.base import FinalError, RetryableError
from storage.jobs import JobRepository

log = logging.getLogger(__name__)

POST_RETRY_SECONDS = 120.0  # a result the channel refused is posted again this often (for about an hour)

COLOR = discord.Colour(0x5B8DEF)
STATE_EMOJI = {
    JobState.QUEUED: "⏳",
    JobState.SUBMITTING: "📤",
    JobState.RUNNING: "🎬",
    JobState.DOWNLOADING: "📥",
    JobState.DELIVERING: "📤",
    JobState.UNSURE: "⚠️",
    JobState.DONE: "✅",
    JobState.FAILED: "❌",
    JobState.CANCELED: "🚫",
}
MIN_UPLOAD_TRY = 48 * 1024  # below this a clip is not worth posting: thumbnail and note instead
REQUEST_ENTITY_TOO_LARGE = 40005


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def status_embed(job: Job, progress: Progress, now: float) -> discord.Embed:
    title = f"{STATE_EMOJI[job.state]} {job.character_name} · shot #{job.id}"
    embed = discord.Embed(title=title, description=f"> {job.action[:300]}", colour=COLOR)
    stage = job.state.label
    if job.state is JobState.QUEUED and progress.position is not None:
        stage += f" · position {progress.position}"
    if job.state is JobState.RUNNING and progress.progress is not None:
        stage += f" · {round(progress.progress * 100)}%"
    if progress.waiting and not job.state.finished:
        stage += f" · {progress.waiting}"
    embed.add_field(name="Stage", value=stage)
    if progress.eta_seconds is not None and not job.state.finished:
        embed.add_field(name="Ready", value=f"<t:{int(now + progress.eta_seconds)}:R> (estimate)")
    if job.started_at and not job.state.finished:
        embed.add_field(name="Started", value=f"<t:{int(job.started_at)}:R>")
    if job.finished_at and job.started_at:
        embed.add_field(name="Took", value=_duration(job.finished_at - job.started_at))
    params = job.params
    if job.kind is WorkKind.SHEET:
        what = f"character sheet · {job.provider}/{job.model} · character v{job.character_version}"
    else:
        what = (
            f"{params.duration} s · {params.aspect_ratio} · {params.camera.replace('_', ' ')} · "
            f"{job.provider}/{job.model} · character v{job.character_version}"
        )
    embed.add_field(name="Shot", value=what, inline=False)
    if params.notes:
        embed.add_field(name="Notes", value="\n".join(f"• {n}" for n in params.notes)[:1024], inline=False)
    if job.state is JobState.FAILED and job.error:
        embed.add_field(name="Why it failed", value=job.error[:1024], inline=False)
    if job.state is JobState.UNSURE and job.error:
        embed.add_field(name="Why it waits", value=job.error[:1024], inline=False)
    embed.set_footer(text=f"Job #{job.id} · cancel with /queue cancel {job.id}")
    return embed


def result_text(job: Job) -> str:
    return (
        f"🎬 <@{job.user_id}> **{job.character_name}** (v{job.character_version}) · {job.params.duration} s · "
        f"{job.provider}/{job.model}\n> {job.action[:500]}"
    )


class DiscordDelivery:
    def __init__(
        self,
        client: discord.Client,
        jobs: JobRepository,
        *,
        min_edit_interval: float = 5.0,
        manager_roles: Callable[[int], list[int]] = lambda _guild_id: [],
    ) -> None:
        self.client = client
        self.jobs = jobs
        self.manager_roles = manager_roles  # a server's manager roles (/settings managers), told of unsure jobs
        self.min_edit_interval = min_edit_interval
        self._last_edit: dict[int, float] = {}
        self._pending: dict[int, tuple[Job, Progress]] = {}
        self._flushers: dict[int, asyncio.Task[None]] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    def _channel(self, channel_id: int) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(channel_id)

    # ------------------------------------------------------------------ status

    async def show_status(self, job: Job, progress: Progress) -> None:
        if job.state is JobState.UNSURE:
            await self._tell_managers(job)
        lock = self._locks.setdefault(job.id, asyncio.Lock())
        async with lock:
            current = await self.jobs.get(job.id) or job
            if current.status_message_id is None:
                await self._create_status(current, progress)
                return
            self._pending[job.id] = (current, progress)
            wait = self._last_edit.get(job.id, 0.0) + self.min_edit_interval - time.monotonic()
            if wait <= 0:
                await self._flush(job.id)
            elif job.id not in self._flushers:
                self._flushers[job.id] = asyncio.create_task(self._flush_later(job.id, wait))

    async def _create_status(self, job: Job, progress: Progress) -> None:
        try:
            message = await self._channel(job.channel_id).send(
                f"<@{job.user_id}> queued {'a sheet' if job.kind is WorkKind.SHEET else 'a shot'} of **{job.character_name}**.",
                embed=status_embed(job, progress, time.time()),
                nonce=f"st{job.id}",  # Discord returns the first message if this is sent twice
                allowed_mentions=discord.AllowedMentions.none(),
            )
        except discord.Forbidden as error:  # the job goes on; its result waits until the bot may post (see _post)
            log.warning("job %s: cannot post its status in channel %s (%s)", job.id, job.channel_id, error.text)
            return
        self._last_edit[job.id] = time.monotonic()
        await self.jobs.update(job.id, status_message_id=message.id)

    async def _flush_later(self, job_id: int, wait: float) -> None:
        try:
            await asyncio.sleep(wait)
            async with self._locks.setdefault(job_id, asyncio.Lock()):
                await self._flush(job_id)
        finally:
            self._flushers.pop(job_id, None)

    async def _flush(self, job_id: int) -> None:
        pending = self._pending.pop(job_id, None)
        if pending is None:
            return
        job, progress = pending
        fresh = await self.jobs.get(job_id)
        if fresh is not None and fresh.state != job.state:
            job, progress = fresh, Progress()  # a later state overtook this edit: show that instead
        assert job.status_message_id is not None
        message = self._channel(job.channel_id).get_partial_message(job.status_message_id)
        try:
            # the buttons of a manager's choice only while it is to be made
            view = unsure_view(job.id) if job.state is JobState.UNSURE else None
            await message.edit(embed=status_embed(job, progress, time.time()), view=view)
        except discord.NotFound:
            log.info("the status message of job %s was deleted; not editing it again", job_id)
        except discord.HTTPException as error:
            log.warning("could not edit the status of job %s: %s", job_id, error)
        finally:  # counted from when Discord answered, so edits reach it at least the interval apart
            self._last_edit[job_id] = time.monotonic()
        if job.state.finished:
            self._forget(job_id)

    async def flush_all(self) -> None:
        """Send every pending status edit now, throttle or not: the bot is stopping, and a status left
        behind would stay stale for good."""
        for task in list(self._flushers.values()):
            task.cancel()
        self._flushers.clear()
        for job_id in list(self._pending):
            await self._flush(job_id)

    def _forget(self, job_id: int) -> None:
        self._last_edit.pop(job_id, None)
        self._locks.pop(job_id, None)

    async def _tell_managers(self, job: Job) -> None:
        """Tell the member and the server's managers (its manager roles, else its owner) that a shot waits for their
        choice: a reply to the status, whose buttons decide. Once per time the job becomes unsure."""
        guild = self.client.get_guild(job.guild_id)
        roles = self.manager_roles(job.guild_id)
        owner = guild.owner_id if guild is not None and not roles else None
        who = " ".join([*(f"<@&{r}>" for r in roles), *([f"<@{owner}>"] if owner else [])]) or "A manager"
        reference: Any = None
        if job.status_message_id:
            reference = discord.MessageReference(
                message_id=job.status_message_id, channel_id=job.channel_id, fail_if_not_exists=False
            )
        content = (
            f"⚠️ <@{job.user_id}>, shot #{job.id} of **{job.character_name}** may have reached {job.provider}, which "
            f"cannot be asked whether it did. It is not sent again on its own; its money stays held. {who}: choose "
            "**Send again** (it may be billed twice) or **Release** (nothing charged) with the buttons below."
        )
        try:
            await self._channel(job.channel_id).send(
                content,
                view=unsure_view(job.id),
                reference=reference,
                nonce=f"un{job.id}-{job.attempts}-{int(job.started_at or 0)}",
                allowed_mentions=discord.AllowedMentions(
                    everyone=False,
                    users=[discord.Object(user) for user in {job.user_id, *([owner] if owner else [])}],
                    roles=[discord.Object(r) for r in roles],
                ),
            )
        except discord.HTTPException as error:
            log.warning("job %s: could not tell the managers it waits for them: %s", job.id, error)

    # ------------------------------------------------------------------ results

    async def find_result(self, job: Job) -> int | None:
        """A result of this job already in the channel (posted just before a crash)."""
        marker = result_marker(job)
        after = discord.Object(job.status_message_id) if job.status_message_id else None
        try:
            async for message in self._channel(job.channel_id).history(limit=100, after=after, oldest_first=True):
                if message.author.id != getattr(self.client.user, "id", None):
                    continue
                for row in message.components:
                    for child in getattr(row, "children", []):
                        if getattr(child, "custom_id", None) == marker:
                            return message.id
        except discord.HTTPException as error:
            log.warning("could not look for the result of job %s: %s", job.id, error)
        return None

    async def post_result(self, job: Job, video: bytes) -> int:
        if job.kind is WorkKind.SHEET:
            return await self._send_sheet(job, video)
        limit = self._upload_limit(job.guild_id)
        data = video
        while limit >= MIN_UPLOAD_TRY:
            if len(data) > limit:
                fitted = await asyncio.to_thread(fit_to_size, video, limit)
                if fitted is None:
                    break
                data = fitted
            try:
                message_id = await self._send_result(job, data)
            except discord.HTTPException as error:
                if error.status != 413 and error.code != REQUEST_ENTITY_TOO_LARGE:
                    raise
                log.info("job %s: %d bytes refused as too large; trying smaller", job.id, len(data))
                limit = int(len(data) * 0.7)  # the real limit is unknown: step down until it fits
                continue
            if data is video:  # the channel has the very clip: the data folder may drop it later (bot.jobs.retention)
                await self.jobs.update(job.id, result_posted_whole=True)
            return message_id
        return await self._send_thumbnail(job, video)

    def _upload_limit(self, guild_id: int) -> int:
        guild = self.client.get_guild(guild_id)
        return guild.filesize_limit if guild is not None else 10 * 1024 * 1024

    async def _send_result(self, job: Job, data: bytes, *, extra: str = "", filename: str | None = None) -> int:
        name = filename or f"{file_slug(job.character_name)}-shot-{job.id}.mp4"
        return await self._post(job, result_text(job) + extra, data, name, result_view(job.id))

    async def _send_sheet(self, job: Job, image: bytes) -> int:
        figures = await asyncio.to_thread(split_sheet, image)
        found = ", ".join(f.view.label.lower() for f in figures) or "no clear figures"
        content = (
            f"🧩 <@{job.user_id}> a generated sheet of **{job.character_name}** ({job.provider}/{job.model}). "
            f"Found: {found}. Keep them as **{job.character_name}**'s reference views?"
        )
        name = f"{file_slug(job.character_name)}-sheet-{job.id}.png"
        return await self._post(job, content, image, name, sheet_view(job.id, figures))

    async def _post(self, job: Job, content: str, data: bytes, filename: str, view: discord.ui.View) -> int:
        """A job's result: a reply to its status message, posted with a nonce so posting twice returns the first."""
        reference: Any = None
        if job.status_message_id:
            reference = discord.MessageReference(
                message_id=job.status_message_id, channel_id=job.channel_id, fail_if_not_exists=False
            )
        try:
            message = await self._channel(job.channel_id).send(
                content,
                file=discord.File(io.BytesIO(data), filename=filename),
                view=view,
                reference=reference,
                nonce=f"rs{job.id}",
                allowed_mentions=discord.AllowedMentions.none(),
            )
        except discord.Forbidden as error:
            # An admin can fix the channel's permissions: the result is kept and posting is tried again.
            log.warning("job %s: cannot post in channel %s (%s); will retry", job.id, job.channel_id, error.text)
            raise RetryableError(
                f"I can't post in <#{job.channel_id}>: I need View Channel, Send Messages, Attach Files, Embed Links "
                "and Read Message History there. The result is kept and posted as soon as I can.",
                detail=error.text,
                retry_after=POST_RETRY_SECONDS,
                rate_limited=True,  # waiting on an admin: keep trying for a while
            ) from error
        except discord.NotFound as error:
            raise FinalError(
                "The channel of this shot was deleted, so its result could not be posted.", detail=error.text
            ) from error
        except discord.DiscordServerError as error:
            raise RetryableError("Discord could not take the result just now.", detail=error.text) from error
        return message.id

    async def _send_thumbnail(self, job: Job, video: bytes) -> int:
        still = await asyncio.to_thread(thumbnail, video)
        extra = (
            f"\n⚠️ The clip ({len(video) / 1_048_576:.1f} MB) is too large to post in this server even re-encoded; "
            f"here is a still. An admin can find it in the bot's data folder (blob `{job.result_blob}`)."
        )
        return await self._send_result(
            job, still, extra=extra, filename=f"{file_slug(job.character_name)}-shot-{job.id}.jpg"
        )


def file_slug(name: str) -> str:
    """A character name made safe for an attachment's file name."""
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-") or "character"
