"""`likeness sync`: commands are registered only when an admin asks, globally or in one server."""

from __future__ import annotations

from pathlib import Path

from bot.app import sync_from_cli
from bot.config import Settings
from tests.conftest import World
from tests.fake_discord import FakeDiscord


async def test_sync_globally_then_to_one_server_then_clear(fake: FakeDiscord, world: World, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, guild_ready_timeout=0.05)
    said = await sync_from_cli(settings, fake.token, None, clear=False)
    assert said.startswith("Synced 7 commands to every server (may take up to an hour): ")
    assert "/animate" in said and "/character" in said and "/settings" in said
    assert sorted(c["name"] for c in fake.commands()) == [
        "animate",
        "budget",
        "character",
        "info",
        "queue",
        "settings",
        "sheet",
    ]
    settings_command = next(c for c in fake.commands() if c["name"] == "settings")
    assert settings_command["default_member_permissions"] == "32"  # Manage Server only, until admins change it

    said = await sync_from_cli(settings, fake.token, world.studio_a.id, clear=False)
    assert said.startswith(f"Synced 7 commands to server {world.studio_a.id} (available at once)")
    assert len(fake.commands(guild=world.studio_a)) == 7

    said = await sync_from_cli(settings, fake.token, world.studio_a.id, clear=True)
    assert said == f"Removed the server-specific commands from server {world.studio_a.id}."
    assert fake.commands(guild=world.studio_a) == []
    assert len(fake.commands()) == 7  # the global ones stay
