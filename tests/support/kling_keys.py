"""The fake Kling serving with the keys the e2e bot is given, and Kling set up on the e2e bot."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

from bot.providers.kling import KlingProvider
from tests.support.bot_runner import BotRunner
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


def use_kling(
    runner: BotRunner, kling: FakeKling, model: str = "kling-v1-6", *, api_key: str | None = None
) -> KlingProvider:
    """Kling set up with keys (the pair, or the single API key), as an admin would; registered now and at every
    start of the bot."""
    if api_key is not None:
        provider = KlingProvider(base_url=kling.base_url, api_key=api_key, model=model)
    else:
        provider = KlingProvider(base_url=kling.base_url, access_key=ACCESS, secret_key=SECRET, model=model)
    # The fake renders in two polls, not in Kling's minute and a half: the first poll comes at once.
    provider.capabilities = replace(provider.capabilities, typical_seconds=0.2)
    runner.providers.append(provider)
    assert runner.bot is not None
    runner.bot.services.providers.register(provider)
    return provider
