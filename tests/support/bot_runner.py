"""Shared fixtures: the fake Discord, a world of servers and members, and the real bot connected to it."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import discord
import pytest

from bot.discord_io.client import LikenessBot, sync_commands
from bot.infra.config import Settings
from bot.providers.base import Provider
from tests.fake_discord import FakeDiscord, FakeGuild, FakeRole, FakeUser


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord(validate=True)
    await fake.start()
    try:
        with fake.patch_discord_py():
            yield fake
    finally:
        await fake.stop()
    # Every body the bot sent must match Discord's OpenAPI spec.
    assert fake.validation_errors == []
    assert fake.unimplemented == [] and fake.server_errors == []


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
    default = Path(__file__).resolve().parent.parent / ".venv" / "models"
    return Path(os.environ.get("LIKENESS_TEST_MODELS_DIR", default)).resolve()


@pytest.fixture
def world(fake: FakeDiscord) -> World:
    alice, bob, mo, zed = (fake.add_user(name) for name in ("alice", "bob", "mo", "zed"))
    studio_a = fake.add_guild("Studio A", owner=alice)
    studio_b = fake.add_guild("Studio B", owner=zed)
    mods = fake.add_role(studio_a, "Mods", permissions=discord.Permissions(manage_guild=True).value)
    fake.add_member(studio_a, bob)
    fake.add_member(studio_a, mo, roles=[mods])
    fake.add_member(studio_b, bob)
    return World(alice, bob, mo, zed, studio_a, studio_b, mods)


class BotRunner:
    """Starts, stops and restarts the real LikenessBot against the fake, on one data directory."""

    def __init__(self, fake: FakeDiscord, data_dir: Path) -> None:
        self.fake = fake
        self.settings = Settings(
            data_dir=data_dir,
            guild_ready_timeout=0.05,
            models_dir=installed_models_dir(),
            cleanup_model="u2netp",
            local_delay=0.0,
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


@pytest.fixture
async def runner(
    fake: FakeDiscord, world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[BotRunner]:
    caplog.set_level(logging.INFO)  # what a production bot logs; every e2e run is scanned for secrets below
    runner = BotRunner(fake, tmp_path / "data")
    await runner.start(sync=True)
    try:
        yield runner
    finally:
        await runner.stop()
    assert_no_secret_logged(caplog.records, [fake.token, *runner.settings.secrets(), *fake.watched_secrets])
