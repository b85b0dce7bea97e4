"""The fake Kling serving with the keys the e2e bot is given."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from tests.support.fake_providers.kling import FakeKling

ACCESS = "ak-likeness-e2e"
SECRET = "sk-likeness-e2e-0123456789abcdef0123456789"


@contextlib.asynccontextmanager
async def running_kling() -> AsyncIterator[FakeKling]:
    """The fake Kling with the bot's test keys, serving on a free port."""
    fake = FakeKling(access_key=ACCESS, secret_key=SECRET)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()
