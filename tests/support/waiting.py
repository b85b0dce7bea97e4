"""Waiting for the state a test checks, never for a time: on the fake Discord (`until`) or in the database
(`eventually`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tests.support.fake_discord import FakeDiscord


async def until(fake: FakeDiscord, predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:  # noqa: ASYNC109
    await fake.wait_until(predicate, timeout, what)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 - the state lives in the database
            await asyncio.sleep(0.02)
