"""The real bot against the fake Discord: the `World` of servers and members, and `BotRunner`, which starts, stops
and restarts a LikenessBot on one data directory. The fixtures that build them are in tests/e2e/conftest.py."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from bot.discord_io.client import LikenessBot, sync_commands
from bot.infra.config import Settings
from bot.providers.base import Provider
from tests.support.fake_discord import FakeDiscord, FakeGuild, FakeRole, FakeUser


@dataclass
class World:
    """Two servers. Alice owns Studio A; Bob is a member; Mo has Manage Server there. Zed owns Studio B."""

    alice: FakeUser
    bob: FakeUser
    mo: FakeUser
    zed: FakeUser
    studio_a: FakeGuild
    studio_b: FakeGuild
    mods: FakeRole


def installed_models_dir() -> Path:
    """Where `make test` installed the real u2netp model (from PyPI) for the tests."""
    default = Path(__file__).resolve().parents[2] / ".venv" / "models"
    return Path(os.environ.get("LIKENESS_TEST_MODELS_DIR", default)).resolve()


class BotRunner:
    """Starts, stops and restarts the real LikenessBot against the fake, on one data directory."""

    def __init__(self, fake: FakeDiscord, data_dir: Path) -> None:
        self.fake = fake
        self.settings = Settings(
            data_dir=data_dir,
            guild_ready_timeout=0.05,
            models_dir=installed_models_dir(),
            cleanup_model="u2netp",
            local_delay=0.0,  # pyright: ignore[reportCallIssue]  (a provider setting: bot.providers.local)
            status_edit_interval=0.05,
        )
        self.providers: list[Provider] = []  # registered at every start, like keys in the settings
        self.bot: LikenessBot | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, *, sync: bool = False) -> LikenessBot:
        # two bots on one fake would both answer every interaction: the second answer fails as "already acknowledged"
        assert self.bot is None, "the bot is already running: stop() it first (the runner fixture starts it)"
        bot = LikenessBot(self.settings)
        try:
            await bot.login(self.fake.token)
        except BaseException:
            await bot.close()  # as `async with LikenessBot` does in `likeness run`: nothing is left open
            raise
        for provider in self.providers:
            bot.services.providers.register(provider)
        if sync:  # what an admin does once with `likeness sync`
            await sync_commands(bot)
        self._task = asyncio.create_task(bot.connect(reconnect=False))
        await asyncio.wait_for(bot.wait_until_ready(), timeout=10)
        self.bot = bot
        return bot

    async def stop(self) -> None:
        try:
            if self.bot is not None:
                await asyncio.wait_for(self.bot.close(), timeout=10)
            if self._task is not None:
                await asyncio.wait_for(self._task, timeout=10)
        except TimeoutError:
            stuck = [f"{t.get_name()}: {t.get_coro()}" for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            raise AssertionError("the bot did not stop within 10 s; still running:\n" + "\n".join(stuck)) from None
        self.bot, self._task = None, None

    async def restart(self) -> LikenessBot:
        await self.stop()
        return await self.start()


def assert_no_secret_logged(records: list[logging.LogRecord], secrets: list[str]) -> None:
    """No log line (message or traceback) of the run holds a secret, whole or in a recognisable part."""
    watched = [s for s in secrets if s and len(s) >= 8]
    for record in records:
        text = record.getMessage() + (logging.Formatter().formatException(record.exc_info) if record.exc_info else "")
        for secret in watched:
            assert secret not in text, f"a secret was logged by {record.name}: {record.levelname}"
            assert secret[-12:] not in text, f"part of a secret was logged by {record.name}: {record.levelname}"
