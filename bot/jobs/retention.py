"""Deleting what nothing refers to any more: the images of deleted characters (their views, elements and
sheets), and blobs whose row was never written (a crash between storing an image and saving its row).

"Delete for everyone" then really removes a character's images from the bot's disk, within about an hour. A blob
is stored before the row that names it, so blobs stored in the last hour are spared (`grace`): the sweep reads
the time before it reads which blobs are named, so a blob stored before that time has its row by then.
Rendered clips are the shots' results and are kept, unless the admin sets LIKENESS_KEEP_CLIPS_DAYS: a clip its
channel has, posted whole (not re-encoded, not as a still), is then dropped that many days after it was posted.
The audit log keeps the text it refused; LIKENESS_KEEP_AUDIT_DAYS bounds how long. The file work runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from storage import Storage
from storage.blob_refs import referenced_blobs
from storage.blobs import BlobStore

log = logging.getLogger(__name__)

SWEEP_GRACE_SECONDS = 3600.0
SWEEP_INTERVAL_SECONDS = 3600.0


@dataclass(frozen=True)
class Sweep:
    deleted: int
    freed_bytes: int
    kept: int  # blobs a row still names, or stored too recently to tell


async def drop_posted_clips(storage: Storage, keep_days: int, *, clock: Callable[[], float] = time.time) -> int:
    """Let go of clips posted whole more than `keep_days` ago (0: never); the next sweep deletes their files."""
    if keep_days <= 0:
        return 0
    return await storage.jobs.drop_posted_clips(clock() - keep_days * 86400.0)


async def drop_old_audit(storage: Storage, keep_days: int, *, clock: Callable[[], float] = time.time) -> int:
    """Delete audit entries older than `keep_days` (0: never): refused prompts are members' words, kept no longer
    than the admin chose."""
    if keep_days <= 0:
        return 0
    return await storage.audit.drop_before(clock() - keep_days * 86400.0)


async def sweep_unreferenced(
    storage: Storage, *, grace: float = SWEEP_GRACE_SECONDS, clock: Callable[[], float] = time.time
) -> Sweep:
    """Delete the blobs no row names that were last stored before `grace` seconds ago."""
    cutoff = clock() - grace  # before reading what is named: see the module's docstring
    named = await referenced_blobs(storage.db)
    return await asyncio.to_thread(_delete_unnamed, storage.blobs, named, cutoff)


def _delete_unnamed(blobs: BlobStore, named: set[str], cutoff: float) -> Sweep:
    deleted = freed = kept = 0
    for digest, _path in blobs.files():  # each folder is listed before its blobs are deleted
        if digest in named:
            kept += 1
            continue
        try:
            size = blobs.delete_if_untouched_since(digest, cutoff)
        except OSError as error:  # a read-only or vanishing file: the next sweep tries again
            log.warning("could not delete the unused blob %s: %s", digest, error)
            kept += 1
            continue
        if size:
            deleted += 1
            freed += size
        else:
            kept += 1
    return Sweep(deleted, freed, kept)


class Janitor:
    """Now and then while the bot runs: forgets old audit entries and clips, and sweeps unreferenced blobs."""

    def __init__(
        self,
        storage: Storage,
        *,
        keep_clips_days: int = 0,
        keep_audit_days: int = 0,
        interval: float = SWEEP_INTERVAL_SECONDS,
        grace: float = SWEEP_GRACE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.keep_clips_days = keep_clips_days
        self.keep_audit_days = keep_audit_days
        self.clock = clock
        self.interval = interval
        self.grace = grace
        self.last: Sweep | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="likeness-janitor")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run_once(self) -> None:
        """One pass: old audit entries, then clips let go of, then the files nothing names."""
        forgotten = await drop_old_audit(self.storage, self.keep_audit_days, clock=self.clock)
        if forgotten:
            log.info("%d audit entries over %d days old were deleted", forgotten, self.keep_audit_days)
        dropped = await drop_posted_clips(self.storage, self.keep_clips_days, clock=self.clock)
        if dropped:
            log.info("%d clips posted over %d days ago leave the data folder", dropped, self.keep_clips_days)
        self.last = await sweep_unreferenced(self.storage, grace=self.grace, clock=self.clock)
        if self.last.deleted:
            log.info(
                "deleted %d images and clips nothing refers to any more (%.1f MB)",
                self.last.deleted,
                self.last.freed_bytes / 1e6,
            )

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("could not sweep unused images")
            await asyncio.sleep(self.interval)
