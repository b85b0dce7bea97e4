"""`likeness sync`: commands are registered only when an admin asks, globally or in one server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.discord_io.client import sync_from_cli
from bot.infra.config import Settings
from tests.support.bot_runner import World
from tests.support.fake_discord import FakeDiscord


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


def described(node: dict[str, Any], path: str) -> list[str]:
    """The commands, sub-commands and options under `node` whose help text is missing or discord.py's
    placeholder ("…"), as Discord received them."""
    lacking = [] if node.get("description", "").strip("…. ") else [path]
    for option in node.get("options", []):
        lacking += described(option, f"{path} {option['name']}")
    return lacking


async def test_every_command_and_option_has_help_text(fake: FakeDiscord, tmp_path: Path) -> None:
    """Members see each option's description as they type; none may be blank or the placeholder."""
    await sync_from_cli(Settings(data_dir=tmp_path, guild_ready_timeout=0.05), fake.token, None, clear=False)
    commands = fake.commands()
    assert len(commands) == 7
    lacking = [path for command in commands for path in described(command, "/" + command["name"])]
    assert lacking == []
    options = [o for c in commands for o in c.get("options", [])]
    assert len(options) > 20  # the walk reached the sub-commands and their options
    placeholder = {"description": "x", "options": [{"name": "y", "description": "…"}]}  # what discord.py sends
    assert described(placeholder, "/x") == ["/x y"]
