"""The e2e fixtures: the fake Discord, a world of servers and members, and the real bot connected to it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import discord
import pytest

from tests.support.bot_runner import BotRunner, World, assert_no_secret_logged
from tests.support.fake_discord import FakeDiscord


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
