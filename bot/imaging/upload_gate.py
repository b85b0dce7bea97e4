"""The memory bound on uploads: a few heavy image jobs at once in the whole process, one upload per member.

Downloading, decoding and cleaning a picture (or a character card) can each take a hundred MB or more for a
moment; sheets decode every stored image they show. Every such job holds one of the process's slots (as many
as background cleanups may run at once), so memory stays bounded however many members upload together. A
member's second upload while their first is still in flight is refused at once and changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bot.domain.errors import NotAllowedError

ONE_AT_A_TIME = (
    "You already have an upload in progress. One at a time, please: wait until I have answered it, then send "
    "this one again. Nothing was changed."
)


class UploadBusyError(NotAllowedError):
    """A member's upload while another of theirs is still in flight."""


class UploadGate:
    """Process-wide: `slot()` around heavy image work, `member()` around a whole upload of one member."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._semaphore = asyncio.Semaphore(slots)
        self._members: set[int] = set()
        self.busy = 0  # jobs holding a slot now
        self.waiting = 0  # jobs waiting for one

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the process's slots for download + decode + cleanup (waits for one to be free)."""
        self.waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1
            self._semaphore.release()

    @asynccontextmanager
    async def member(self, user_id: int) -> AsyncIterator[None]:
        """One upload (or card import) in flight per member, across servers; a second raises UploadBusyError."""
        if user_id in self._members:
            raise UploadBusyError(ONE_AT_A_TIME)
        self._members.add(user_id)
        try:
            yield
        finally:
            self._members.discard(user_id)
