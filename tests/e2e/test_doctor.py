"""`likeness doctor`: against the fake Discord and the fake providers, healthy and each failure an admin meets."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
from base64 import urlsafe_b64encode
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.discord_io.client import sync_from_cli
from bot.domain import GuildSettings, ServerRules
from bot.imaging.model_files import model_file
from bot.infra.config import Settings
from bot.jobs.callbacks import HELLO, CallbackServer, CallbackUrls, callback_secret
from bot.ops.doctor import (
    DISK_FAILURE_BYTES,
    DISK_WARNING_BYTES,
    FALLBACK_MODEL,
    INVITE_PERMISSIONS,
    CheckResult,
    Probes,
    Status,
    application_result,
    channel_permissions,
    exit_status,
    format_report,
    report_json,
    run_checks,
    run_doctor,
    token_problem,
    token_user_id,
)
from storage.db import Database, bundled_migrations
from storage.guilds import GuildSettingsRepository
from tests.support.bot_runner import World, installed_models_dir
from tests.support.cli import run_likeness
from tests.support.fake_discord import FakeDiscord
from tests.support.fake_discord.world import Overwrite, Perm
from tests.support.fake_providers.fal import FakeFal
from tests.support.fake_providers.kling import FakeKling
from tests.support.fake_providers.runway import FakeRunway

LATEST = bundled_migrations()[-1].version
PLENTY = Probes(free_bytes=lambda _path: 50 * 1024**3, discord_timeout=15.0, provider_timeout=15.0)


def make_settings(tmp_path: Path, token: str | None, **overrides: Any) -> Settings:
    """Settings as an admin would set them, with no .env and none of this machine's environment."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "models_dir": installed_models_dir(),
        "cleanup_model": "u2netp",
        "guild_ready_timeout": 0.05,
        **overrides,
    }
    if token is not None:
        values["DISCORD_TOKEN"] = token
    return Settings(_env_file=None, **values)  # pyright: ignore[reportCallIssue]


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {result.name: result for result in results}


def shown(results: list[CheckResult]) -> str:
    """Everything the admin could see: the lines and the JSON."""
    return format_report(results) + "\n" + report_json(results, quick=False, seconds=0.0)


def assert_no_secrets(results: list[CheckResult], *secret_values: str) -> None:
    text = shown(results)
    for value in secret_values:
        for piece in [value, *value.split(".")]:
            if len(piece) > 4:
                assert piece not in text


def wrong_token(fake: FakeDiscord) -> str:
    """Well-formed (the bot's own id first), but not the token Discord issued."""
    first = urlsafe_b64encode(str(fake.bot_user.id).encode()).decode().rstrip("=")
    return f"{first}.{secrets.token_urlsafe(4)}.{secrets.token_urlsafe(27)}"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def migrated(path: Path, version: int | None = None) -> None:
    db = await Database.open(path)
    try:
        await db.migrate()
        if version is not None:
            await db.execute(f"PRAGMA user_version = {version}")
    finally:
        await db.close()


async def allow_channels(settings: Settings, allowed: dict[int, list[int]]) -> None:
    """Each server's generation-channel allow list, saved as `/settings channels` does (migrating the database)."""
    await migrated(settings.db_path)
    db = await Database.open(settings.db_path)
    try:
        repository = GuildSettingsRepository(db)
        for guild_id, channel_ids in allowed.items():
            await repository.save(GuildSettings(guild_id=guild_id, rules=ServerRules(allowed_channels=channel_ids)))
    finally:
        await db.close()


@asynccontextmanager
async def providers() -> AsyncIterator[tuple[FakeKling, FakeFal, FakeRunway]]:
    kling, fal = FakeKling(), FakeFal()
    await kling.start()
    await fal.start()
    try:
        async with FakeRunway() as runway:
            yield kling, fal, runway
    finally:
        await fal.stop()
        await kling.stop()


def provider_settings(kling: FakeKling, fal: FakeFal, runway: FakeRunway) -> dict[str, Any]:
    return {
        "kling_access_key": kling.access_key,
        "kling_secret_key": kling.secret_key,
        "kling_base_url": kling.base_url,
        "fal_key": fal.key,
        "fal_base_url": fal.url,
        "runway_api_key": runway.api_key,
        "runway_base_url": runway.url,
    }


# -------------------------------------------------------------------------------------------------- healthy


async def test_healthy_run_is_all_ok(fake: FakeDiscord, world: World, tmp_path: Path) -> None:
    async with providers() as (kling, fal, runway):
        settings = make_settings(tmp_path, fake.token, **provider_settings(kling, fal, runway))
        await sync_from_cli(settings, fake.token, None, clear=False)  # also creates and migrates the database
        results = await run_checks(settings, quick=False, probes=PLENTY)

    print(format_report(results))  # the report, as `pytest -s` shows it
    assert [r.name for r in results] == [
        "Discord token",
        "Settings",
        "Database",
        "Disk space",
        "Background model",
        "Discord login",
        "Discord application",
        "Discord servers",
        "Slash commands",
        "Generation channels",
        "Kling",
        "fal.ai",
        "Runway",
    ]
    assert {r.name: r.status for r in results if r.status is not Status.OK} == {}
    assert exit_status(results) == 0
    checks = by_name(results)
    assert f"schema {LATEST} (the latest)" in checks["Database"].found
    assert "u2netp" in checks["Background model"].found and "loads in" in checks["Background model"].found
    assert "no privileged intent is needed" in checks["Discord application"].found
    assert "in 2 servers" in checks["Discord servers"].found
    assert "/animate" in checks["Slash commands"].found
    assert "2 servers have no allow list" in checks["Generation channels"].found
    for name in ("Kling", "fal.ai", "Runway"):
        assert checks[name].data["ttfb_ms"] > 0
        assert "first byte in" in checks[name].found
    # Each provider was asked once, with its key, on its free endpoint.
    assert [r.path for r in kling.requests] == ["/account/costs"]
    assert [r.path for r in runway.api_requests()] == ["/v1/organization"]
    assert [r.status for r in fal.api_requests()] == [404] and fal.submits() == []
    assert_no_secrets(results, fake.token, kling.secret_key, fal.key, runway.api_key)
    assert format_report(results).endswith("Everything checked is fine.")


async def test_json_output_parses(fake: FakeDiscord, world: World, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, fake.token)
    results = await run_checks(settings, quick=False, probes=PLENTY)
    report = json.loads(report_json(results, quick=False, seconds=1.25))
    assert report["quick"] is False and report["seconds"] == 1.25
    assert report["ok"] is True and report["failures"] == 0
    assert report["warnings"] == 1  # no commands synced yet
    statuses = {check["name"]: check["status"] for check in report["checks"]}
    assert statuses["Slash commands"] == "warning" and statuses["Discord login"] == "ok"
    assert {"name", "status", "found", "fix", "data"} <= set(report["checks"][0])
    assert report["checks"][3]["data"]["free_bytes"] == 50 * 1024**3


# ---------------------------------------------------------------------------------------------------- token


async def test_missing_token_fails_and_skips_discord(tmp_path: Path) -> None:
    results = await run_checks(make_settings(tmp_path, None), quick=False, probes=PLENTY)
    checks = by_name(results)
    assert checks["Discord token"].status is Status.FAILURE
    assert "DISCORD_TOKEN is not set" in checks["Discord token"].found
    assert "Reset Token" in checks["Discord token"].fix
    assert {checks[name].status for name in ("Discord login", "Discord servers", "Slash commands")} == {Status.SKIPPED}
    assert checks["Providers"].status is Status.OK  # none configured: the local provider
    assert exit_status(results) == 1


@pytest.mark.parametrize(
    ("token", "said"),
    [
        ("Bot MTIzNDU2Nzg5MDEyMzQ1Njc4.GaBcDe.abcdefghijklmnopqrstuvwxyz0123456789AB", "starts with “Bot ”"),
        ("MTIzNDU2Nzg5MDEyMzQ1Njc4.abcdefghijklmnopqrstuvwxyz0123456789AB", "three dot-separated parts"),
        ("123456789012345678", "Application ID"),
        ("abcdefghijklmnopqrstuvwxyz012345", "Client Secret"),
        ("bm90LWFuLWlk.GaBcDe.abcdefghijklmnopqrstuvwxyz0123456789AB", "does not decode to a bot's user id"),
        ("'MTIzNDU2Nzg5MDEyMzQ1Njc4.GaBcDe.abcdefghijklmnopqrstuvwxyz0123456789AB'", "quotes"),
    ],
)
async def test_malformed_token_says_what_is_wrong_without_showing_it(tmp_path: Path, token: str, said: str) -> None:
    results = await run_checks(make_settings(tmp_path, token), quick=True, probes=PLENTY)
    check = by_name(results)["Discord token"]
    assert check.status is Status.FAILURE
    assert check.found.startswith("DISCORD_TOKEN looks malformed: ") and said in check.found
    assert "Developer Portal" in check.fix and "Reset Token" in check.fix
    assert exit_status(results) == 1
    assert_no_secrets(results, token.removeprefix("Bot ").strip("'"))


def test_token_shape_and_id() -> None:
    token = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GaBcDe.abcdefghijklmnopqrstuvwxyz0123456789AB"
    assert token_problem(token) is None
    assert token_user_id(token) == 123456789012345678


async def test_token_refused_by_discord(fake: FakeDiscord, world: World, tmp_path: Path) -> None:
    token = wrong_token(fake)
    results = await run_checks(make_settings(tmp_path, token), quick=False, probes=PLENTY)
    checks = by_name(results)
    assert checks["Discord token"].status is Status.OK  # the shape is right
    assert checks["Discord login"].status is Status.FAILURE
    assert "refused the token (401" in checks["Discord login"].found
    assert "Reset Token" in checks["Discord login"].fix
    assert checks["Discord servers"].status is Status.SKIPPED
    assert exit_status(results) == 1
    assert_no_secrets(results, token, fake.token)


async def test_discord_unreachable(tmp_path: Path) -> None:
    import discord.http

    token = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GaBcDe.abcdefghijklmnopqrstuvwxyz0123456789AB"
    saved = discord.http.Route.BASE
    discord.http.Route.BASE = f"http://127.0.0.1:{closed_port()}/api/v10"
    try:
        results = await run_checks(make_settings(tmp_path, token), quick=False, probes=PLENTY)
    finally:
        discord.http.Route.BASE = saved
    login = by_name(results)["Discord login"]
    assert login.status is Status.FAILURE and "cannot reach discord.com" in login.found
    assert "internet access" in login.fix


# ---------------------------------------------------------------------------------------------- permissions


async def test_bot_lacking_permissions_in_a_server(fake: FakeDiscord, world: World, tmp_path: Path) -> None:
    studio_c = fake.add_guild("Studio C", owner=world.zed, everyone_permissions=0)
    bot_role = studio_c.roles[studio_c.bot_role_id]
    bot_role.permissions = Perm.BOT_DEFAULT & ~(Perm.ATTACH_FILES | Perm.EMBED_LINKS)
    settings = make_settings(tmp_path, fake.token)
    await sync_from_cli(settings, fake.token, None, clear=False)
    results = await run_checks(settings, quick=False, probes=PLENTY)

    servers = by_name(results)["Discord servers"]
    assert servers.status is Status.FAILURE
    assert "in 1 of 3 servers" in servers.found
    assert f"Studio C (id {studio_c.id}): Embed Links, Attach Files" in servers.found
    assert "Studio A" not in servers.found
    assert f"client_id={fake.application_id}" in servers.fix and "permissions=274878024704" in servers.fix
    assert "Roles" in servers.fix
    assert exit_status(results) == 1


async def test_thread_permission_only_is_a_warning(fake: FakeDiscord, world: World, tmp_path: Path) -> None:
    studio_c = fake.add_guild("Studio C", owner=world.zed, everyone_permissions=0)
    studio_c.roles[studio_c.bot_role_id].permissions = Perm.BOT_DEFAULT & ~Perm.SEND_MESSAGES_IN_THREADS
    results = await run_checks(make_settings(tmp_path, fake.token), quick=False, probes=PLENTY)
    servers = by_name(results)["Discord servers"]
    assert servers.status is Status.WARNING and "Send Messages in Threads" in servers.found


async def test_administrator_has_everything(fake: FakeDiscord, world: World, tmp_path: Path) -> None:
    studio_c = fake.add_guild("Studio C", owner=world.zed, everyone_permissions=0)
    studio_c.roles[studio_c.bot_role_id].permissions = Perm.ADMINISTRATOR
    results = await run_checks(make_settings(tmp_path, fake.token), quick=False, probes=PLENTY)
    assert by_name(results)["Discord servers"].status is Status.OK


async def test_bot_in_no_server(fake: FakeDiscord, tmp_path: Path) -> None:
    results = await run_checks(make_settings(tmp_path, fake.token), quick=False, probes=PLENTY)
    servers = by_name(results)["Discord servers"]
    assert servers.status is Status.WARNING and "no server" in servers.found
    assert f"client_id={fake.application_id}" in servers.fix


def test_invite_permissions_are_the_readmes() -> None:
    assert INVITE_PERMISSIONS == 274878024704
    readme = Path(__file__).resolve().parents[2] / "README.md"
    assert f"permissions={INVITE_PERMISSIONS}" in readme.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------ allowed channels


async def test_allowed_channels_the_bot_can_use(fake: FakeDiscord, world: World, tmp_path: Path) -> None:
    renders = fake.add_channel(world.studio_a, "renders")
    settings = make_settings(tmp_path, fake.token)
    await allow_channels(settings, {world.studio_a.id: [world.studio_a.channel_id, renders]})
    results = await run_checks(settings, quick=False, probes=PLENTY)

    channels = by_name(results)["Generation channels"]
    assert channels.status is Status.OK
    assert "in each of the 2 allowed channels of 1 server" in channels.found
    assert "Attach Files, Read Message History, Send Messages in Threads in each" in channels.found
    assert "1 server has no allow list" in channels.found
    assert {r.path for r in fake.requests_to("GET", "/channels/{channel_id}")} == {
        f"/channels/{world.studio_a.channel_id}",
        f"/channels/{renders}",
    }
    # The server and the bot's roles there are asked once for both channels.
    assert [r.path for r in fake.requests_to("GET", "/guilds/{guild_id}")] == [f"/guilds/{world.studio_a.id}"]
    members = fake.requests_to("GET", "/guilds/{guild_id}/members/{user_id}")
    assert [r.path for r in members] == [f"/guilds/{world.studio_a.id}/members/{fake.bot_user.id}"]
    assert_no_secrets(results, fake.token)


async def test_allowed_channel_whose_overwrite_denies_attach_files(
    fake: FakeDiscord, world: World, tmp_path: Path
) -> None:
    studio_a = world.studio_a
    deny_files = Overwrite(id=studio_a.bot_role_id, type=0, deny=Perm.ATTACH_FILES)
    renders = fake.add_channel(studio_a, "renders", overwrites=[deny_files])
    settings = make_settings(tmp_path, fake.token)
    await allow_channels(settings, {studio_a.id: [studio_a.channel_id, renders]})
    results = await run_checks(settings, quick=False, probes=PLENTY)

    checks = by_name(results)
    assert checks["Discord servers"].status is Status.OK  # server-wide the bot has everything
    channels = checks["Generation channels"]
    assert channels.status is Status.FAILURE
    assert "1 of 2 allowed channels" in channels.found
    assert "Studio A #renders: missing Attach Files" in channels.found and "#general" not in channels.found
    assert "settings > Permissions, allow the bot's role: Attach Files" in channels.fix
    assert "/settings channels" in channels.fix
    assert channels.data == {"channels": 2, "servers": 1, "problems": 1}
    assert exit_status(results) == 1
    assert_no_secrets(results, fake.token)


async def test_allowed_channel_whose_threads_the_bot_cannot_post_in(
    fake: FakeDiscord, world: World, tmp_path: Path
) -> None:
    """The allow list lets members use a channel's threads too; a bot that cannot post there is a warning (the
    channel itself works), not a failure."""
    studio_a = world.studio_a
    no_threads = Overwrite(id=studio_a.id, type=0, deny=Perm.SEND_MESSAGES_IN_THREADS)  # @everyone's id is the server's
    renders = fake.add_channel(studio_a, "renders", overwrites=[no_threads])
    settings = make_settings(tmp_path, fake.token)
    await allow_channels(settings, {studio_a.id: [studio_a.channel_id, renders]})
    results = await run_checks(settings, quick=False, probes=PLENTY)

    channels = by_name(results)["Generation channels"]
    assert channels.status is Status.WARNING
    assert "threads of 1 of 2 allowed channels cannot be answered there" in channels.found
    assert "(the bot lacks Send Messages in Threads): Studio A #renders." in channels.found
    assert "#general" not in channels.found
    assert "allow the bot's role Send Messages in Threads" in channels.fix
    assert channels.data == {"channels": 2, "servers": 1, "problems": 0}
    assert exit_status(results) == 0

    # A member overwrite for the bot that allows it again wins over the @everyone denial.
    allow_bot = Overwrite(id=fake.bot_user.id, type=1, allow=Perm.SEND_MESSAGES_IN_THREADS)
    fake.world.channels[renders].overwrites.append(allow_bot)
    again = by_name(await run_checks(settings, quick=False, probes=PLENTY))["Generation channels"]
    assert again.status is Status.OK


async def test_allowed_channel_gone_or_hidden(fake: FakeDiscord, world: World, tmp_path: Path) -> None:
    deleted = fake.world.snowflake()  # an id Discord does not know (any more)
    hidden = fake.add_channel(world.studio_b, "staff", visible_to_bot=False)
    settings = make_settings(tmp_path, fake.token)
    await allow_channels(settings, {world.studio_b.id: [deleted, hidden]})
    results = await run_checks(settings, quick=False, probes=PLENTY)

    channels = by_name(results)["Generation channels"]
    assert channels.status is Status.FAILURE
    assert f"Studio B channel {deleted}: the channel is gone or hidden from the bot" in channels.found
    assert f"Studio B channel {hidden}: the channel is gone or hidden from the bot" in channels.found
    assert "View Channels" in channels.fix and "/settings channels Clear" in channels.fix
    assert exit_status(results) == 1


async def test_servers_without_an_allow_list_are_not_asked_channel_by_channel(
    fake: FakeDiscord, world: World, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, fake.token)
    left = fake.world.snowflake()  # a server the bot has left: its allow list no longer matters
    await allow_channels(settings, {world.studio_a.id: [], left: [fake.world.snowflake()]})
    results = await run_checks(settings, quick=False, probes=PLENTY)

    channels = by_name(results)["Generation channels"]
    assert channels.status is Status.OK
    assert "2 servers have no allow list: members are warned in place" in channels.found
    assert fake.requests_to("GET", "/channels/{channel_id}") == []
    assert fake.requests_to("GET", "/guilds/{guild_id}/members/{user_id}") == []


async def test_allowed_channels_skipped_without_a_readable_database(
    fake: FakeDiscord, world: World, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, fake.token)
    missing = by_name(await run_checks(settings, quick=False, probes=PLENTY))["Generation channels"]
    assert missing.status is Status.SKIPPED and "no database yet" in missing.found
    assert not settings.db_path.exists()  # looked, did not create

    settings.db_path.write_bytes(b"this is not sqlite" * 100)
    garbage = by_name(await run_checks(settings, quick=False, probes=PLENTY))["Generation channels"]
    assert garbage.status is Status.SKIPPED and "cannot read the allow lists" in garbage.found
    assert settings.db_path.read_bytes() == b"this is not sqlite" * 100


async def test_allowed_channels_skipped_when_the_login_fails(fake: FakeDiscord, world: World, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, wrong_token(fake))
    await allow_channels(settings, {world.studio_a.id: [world.studio_a.channel_id]})
    channels = by_name(await run_checks(settings, quick=False, probes=PLENTY))["Generation channels"]
    assert channels.status is Status.SKIPPED and "needs a token Discord accepts" in channels.found
    assert fake.requests_to("GET", "/channels/{channel_id}") == []


def test_channel_permissions_follow_discords_algorithm() -> None:
    guild_id, bot_id, bot_role, artists = 100, 200, 300, 400
    needed = Perm.VIEW_CHANNEL | Perm.SEND_MESSAGES | Perm.EMBED_LINKS | Perm.ATTACH_FILES | Perm.READ_MESSAGE_HISTORY
    guild = {
        "id": str(guild_id),
        "owner_id": "999",
        "roles": [
            {"id": str(guild_id), "permissions": str(needed)},  # @everyone
            {"id": str(bot_role), "permissions": "0"},
            {"id": str(artists), "permissions": str(Perm.MANAGE_MESSAGES)},
        ],
    }

    def overwrite(target: int, kind: int, allow: int = 0, deny: int = 0) -> dict[str, Any]:
        return {"id": str(target), "type": kind, "allow": str(allow), "deny": str(deny)}

    def granted(roles: list[int], *overwrites: dict[str, Any], server: dict[str, Any] = guild) -> int:
        return channel_permissions(server, [str(role) for role in roles], bot_id, overwrites)

    assert granted([bot_role]) == needed  # @everyone's permissions, no overwrite
    assert granted([bot_role, artists]) == needed | Perm.MANAGE_MESSAGES  # OR of the roles
    # @everyone denied Attach Files in the channel: the bot loses it ...
    everyone_deny = overwrite(guild_id, 0, deny=Perm.ATTACH_FILES)
    assert granted([bot_role], everyone_deny) == needed & ~Perm.ATTACH_FILES
    # ... unless one of its roles is allowed it there (role overwrites come after @everyone's).
    assert granted([bot_role], everyone_deny, overwrite(bot_role, 0, allow=Perm.ATTACH_FILES)) == needed
    # Role overwrites are merged: a deny on one role and an allow on another gives the allow.
    merged = granted(
        [bot_role, artists],
        overwrite(bot_role, 0, deny=Perm.EMBED_LINKS),
        overwrite(artists, 0, allow=Perm.EMBED_LINKS),
    )
    assert merged & Perm.EMBED_LINKS
    # The member's own overwrite comes last, over its roles'.
    role_allow = overwrite(bot_role, 0, allow=Perm.EMBED_LINKS)
    assert not granted([bot_role], role_allow, overwrite(bot_id, 1, deny=Perm.EMBED_LINKS)) & Perm.EMBED_LINKS
    assert granted([bot_role], everyone_deny, overwrite(bot_id, 1, allow=Perm.ATTACH_FILES)) == needed
    # An overwrite for a role the bot does not have, or for another member, changes nothing.
    assert granted([bot_role], overwrite(artists, 0, deny=needed), overwrite(bot_id + 1, 1, deny=needed)) == needed
    # Implicit denials: no View Channels, nothing; no Send Messages, no Embed Links nor Attach Files.
    assert granted([bot_role], overwrite(bot_role, 0, deny=Perm.VIEW_CHANNEL)) == 0
    no_send = granted([bot_role], overwrite(bot_role, 0, deny=Perm.SEND_MESSAGES))
    assert no_send & needed == Perm.VIEW_CHANNEL | Perm.READ_MESSAGE_HISTORY
    # ADMINISTRATOR (from any role) and ownership grant everything, overwrites notwithstanding.
    admin = {**guild, "roles": [*guild["roles"], {"id": "500", "permissions": str(Perm.ADMINISTRATOR)}]}
    deny_all = overwrite(guild_id, 0, deny=needed)
    assert granted([bot_role, 500], deny_all, server=admin) & needed == needed
    assert granted([bot_role], deny_all, server={**guild, "owner_id": str(bot_id)}) & needed == needed
    assert granted([bot_role], deny_all) == 0


# ------------------------------------------------------------------------------------------------- commands


async def test_no_commands_synced_is_a_warning(fake: FakeDiscord, world: World, tmp_path: Path) -> None:
    results = await run_checks(make_settings(tmp_path, fake.token), quick=False, probes=PLENTY)
    commands = by_name(results)["Slash commands"]
    assert commands.status is Status.WARNING
    assert "none registered" in commands.found and "`likeness sync`" in commands.fix
    assert exit_status(results) == 0


async def test_commands_in_one_server_only(fake: FakeDiscord, world: World, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, fake.token)
    await sync_from_cli(settings, fake.token, world.studio_a.id, clear=False)
    commands = by_name(await run_checks(settings, quick=False, probes=PLENTY))["Slash commands"]
    assert commands.status is Status.WARNING
    assert "only in 1 server (Studio A)" in commands.found and "`likeness sync`" in commands.fix


def test_application_settings_that_break_invites() -> None:
    fine = application_result({"id": "1", "flags": (1 << 15) | (1 << 19), "bot_public": False})
    assert fine.status is Status.OK
    assert "Server Members, Message Content are switched on in the portal" in fine.found and "private" in fine.found
    grant = application_result({"id": "1", "flags": 0, "bot_require_code_grant": True})
    assert grant.status is Status.WARNING and "Requires OAuth2 Code Grant" in grant.fix
    limited = application_result({"id": "1", "flags": 1 << 16})
    assert limited.status is Status.WARNING and "App Verification" in limited.fix


# ------------------------------------------------------------------------------------------------- database


async def test_database_newer_than_this_likeness(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, None)
    await migrated(settings.db_path, LATEST + 1)
    check = by_name(await run_checks(settings, quick=True, probes=PLENTY))["Database"]
    assert check.status is Status.FAILURE
    assert f"schema {LATEST + 1}" in check.found and "newer than this Likeness" in check.found
    assert "restore a backup" in check.fix


async def test_database_behind_will_migrate(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, None)
    settings.data_dir.mkdir(parents=True)
    with sqlite3.connect(settings.db_path) as conn:
        conn.execute("PRAGMA user_version = 3")
    check = by_name(await run_checks(settings, quick=True, probes=PLENTY))["Database"]
    assert check.status is Status.WARNING
    assert f"schema 3 of {LATEST}" in check.found and "will migrate at next start" in check.found
    assert check.data == {"schema": 3, "latest": LATEST}
    with sqlite3.connect(settings.db_path) as conn:  # the doctor looked, and changed nothing
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


async def test_no_database_yet_is_fine(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, None)
    check = by_name(await run_checks(settings, quick=True, probes=PLENTY))["Database"]
    assert check.status is Status.OK and "created at first start" in check.found
    assert not settings.db_path.exists()  # looked, did not create


async def test_not_a_database(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, None)
    settings.data_dir.mkdir(parents=True)
    settings.db_path.write_bytes(b"this is not sqlite" * 100)
    check = by_name(await run_checks(settings, quick=True, probes=PLENTY))["Database"]
    assert check.status is Status.FAILURE and "backup" in check.fix


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """A folder nobody can write to, root included: root ignores the mode, so it also gets the immutable flag."""
    folder.chmod(0o555)
    immutable = os.access(folder, os.W_OK) and _chattr("+i", folder)
    try:
        yield
    finally:
        if immutable:
            _chattr("-i", folder)
        folder.chmod(0o755)


def _chattr(flag: str, folder: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    done = subprocess.run(["chattr", flag, str(folder)], capture_output=True, check=False)
    return done.returncode == 0


async def test_read_only_data_dir(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, None)
    await migrated(settings.db_path)
    with read_only(settings.data_dir):
        if os.access(settings.data_dir, os.W_OK):
            pytest.skip("running as root without chattr: a read-only folder is still writable")
        results = await run_checks(settings, quick=True, probes=PLENTY)
    check = by_name(results)["Database"]
    assert check.status is Status.FAILURE and "not writable" in check.found
    assert "chown" in check.fix and "LIKENESS_DATA_DIR" in check.fix
    assert exit_status(results) == 1


async def test_data_dir_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    settings = make_settings(tmp_path, None, data_dir=tmp_path / "a-file" / "data")
    check = by_name(await run_checks(settings, quick=True, probes=PLENTY))["Database"]
    assert check.status is Status.FAILURE and "cannot create the folder" in check.found
    assert "LIKENESS_DATA_DIR" in check.fix


# ----------------------------------------------------------------------------------------------------- disk


@pytest.mark.parametrize(
    ("free", "status"),
    [(DISK_WARNING_BYTES * 3, Status.OK), (DISK_WARNING_BYTES - 1, Status.WARNING), (50 * 1024**2, Status.FAILURE)],
)
async def test_disk_space_thresholds(tmp_path: Path, free: int, status: Status) -> None:
    seen: list[Path] = []

    def free_bytes(path: Path) -> int:
        seen.append(path)
        return free

    results = await run_checks(make_settings(tmp_path, None), quick=True, probes=Probes(free_bytes=free_bytes))
    check = by_name(results)["Disk space"]
    assert check.status is status and check.data["free_bytes"] == free
    assert seen == [(tmp_path / "data").resolve()]  # blobs/ does not exist yet: the folder it will be in
    if status is Status.FAILURE:
        assert "uploads and renders will fail" in check.found and "LIKENESS_DATA_DIR" in check.fix
        assert DISK_FAILURE_BYTES == 100 * 1024**2


async def test_a_full_disk_is_named_as_such(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk of the data folder is full (as the OS reports it): the doctor says so, and what it means for renders."""
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage._replace(free=4096))
    results = await run_checks(make_settings(tmp_path, None), quick=True, probes=Probes())
    check = by_name(results)["Disk space"]
    assert check.status is Status.FAILURE and check.data["free_bytes"] == 4096
    assert check.found.startswith("the disk is full") and "ENOSPC" in check.found
    assert "finished clips wait" in check.found and "LIKENESS_DATA_DIR" in check.fix


# ---------------------------------------------------------------------------------------------------- model


async def test_model_missing_is_a_warning(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, None, models_dir=tmp_path / "models")
    check = by_name(await run_checks(settings, quick=False, probes=PLENTY))["Background model"]
    assert check.status is Status.WARNING
    assert "only references on a plain background" in check.found
    assert "likeness models install u2netp" in check.fix


async def test_production_model_missing_falls_back_to_u2netp(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, None, cleanup_model="isnet-general-use")
    check = by_name(await run_checks(settings, quick=True, probes=PLENTY))["Background model"]
    assert check.status is Status.WARNING
    assert "isnet-general-use (LIKENESS_CLEANUP_MODEL) is not installed, so the bot uses u2netp" in check.found
    assert "likeness models install isnet-general-use" in check.fix
    assert "LIKENESS_CLEANUP_MODEL=u2netp" in check.fix


async def test_corrupted_model_fails_with_the_fix(tmp_path: Path) -> None:
    models = tmp_path / "models"
    path = model_file("u2netp", models)
    path.parent.mkdir(parents=True)
    shutil.copyfile(model_file("u2netp", installed_models_dir()), path)
    with path.open("r+b") as handle:  # one flipped byte in the middle
        handle.seek(path.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    settings = make_settings(tmp_path, None, models_dir=models)
    results = await run_checks(settings, quick=True, probes=PLENTY)
    check = by_name(results)["Background model"]
    assert check.status is Status.FAILURE and "damaged" in check.found
    assert "likeness models install u2netp" in check.fix
    assert exit_status(results) == 1


async def test_garbage_model_file_fails(tmp_path: Path) -> None:
    models = tmp_path / "models"
    path = model_file("u2netp", models)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x08\x07" + b"\x00" * 64)
    check = by_name(await run_checks(make_settings(tmp_path, None, models_dir=models), quick=False, probes=PLENTY))
    assert check["Background model"].status is Status.FAILURE


def test_fallback_model_is_the_bots() -> None:
    from bot.runtime import FALLBACK_MODEL as SERVICES_FALLBACK

    assert FALLBACK_MODEL == SERVICES_FALLBACK


# ------------------------------------------------------------------------------------------------ providers


@pytest.mark.parametrize("provider", ["kling", "fal", "runway"])
async def test_provider_key_refused(tmp_path: Path, provider: str) -> None:
    async with providers() as (kling, fal, runway):
        values = provider_settings(kling, fal, runway)
        wrong = {
            "kling": {"kling_secret_key": "sk-wrong-secret-1234"},
            "fal": {"fal_key": "fal-wrong-key-0123456789"},
            "runway": {"runway_api_key": "key_" + "cd" * 64},
        }[provider]
        settings = make_settings(tmp_path, None, **{**values, **wrong})
        results = await run_checks(settings, quick=False, probes=PLENTY)
    label = {"kling": "Kling", "fal": "fal.ai", "runway": "Runway"}[provider]
    variable = {
        "kling": "LIKENESS_KLING_ACCESS_KEY and LIKENESS_KLING_SECRET_KEY",
        "fal": "LIKENESS_FAL_KEY",
        "runway": "LIKENESS_RUNWAY_API_KEY",
    }[provider]
    checks = by_name(results)
    assert checks[label].status is Status.FAILURE
    assert checks[label].found.startswith("key refused by 127.0.0.1:")
    assert f"Check {variable}: copy the key again" in checks[label].fix
    others = {"Kling", "fal.ai", "Runway"} - {label}
    assert {checks[name].status for name in others} == {Status.OK}
    assert_no_secrets(results, *wrong.values(), *(v for k, v in values.items() if "key" in k and "url" not in k))


async def test_provider_unreachable(tmp_path: Path) -> None:
    port = closed_port()
    settings = make_settings(
        tmp_path, None, runway_api_key="key_" + "ab" * 64, runway_base_url=f"http://127.0.0.1:{port}"
    )
    results = await run_checks(settings, quick=False, probes=PLENTY)
    check = by_name(results)["Runway"]
    assert check.status is Status.FAILURE
    assert check.found.startswith(f"cannot reach 127.0.0.1:{port}")
    assert f"LIKENESS_RUNWAY_BASE_URL (http://127.0.0.1:{port})" in check.fix


async def test_provider_that_does_not_answer_in_time(tmp_path: Path) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        settings = make_settings(tmp_path, None, fal_key="fal-key-0123456789", fal_base_url=f"http://127.0.0.1:{port}")
        results = await run_checks(settings, quick=False, probes=Probes(provider_timeout=0.3))
    finally:
        server.close()
    check = by_name(results)["fal.ai"]
    assert check.status is Status.FAILURE and "no answer within 0.3 s" in check.found
    assert "LIKENESS_FAL_BASE_URL" in check.fix


async def test_default_provider_without_a_key_and_half_a_kling_pair(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, None, default_provider="kling", kling_access_key="ak-only")
    checks = by_name(await run_checks(settings, quick=False, probes=PLENTY))
    assert checks["Kling"].status is Status.WARNING and "LIKENESS_KLING_SECRET_KEY" in checks["Kling"].found
    assert (
        checks["Default provider"].status is Status.WARNING and "servers get local" in checks["Default provider"].found
    )


# ---------------------------------------------------------------------------------------------------- quick


async def test_quick_makes_no_network_connection(fake: FakeDiscord, world: World, tmp_path: Path) -> None:
    connections: list[int] = []

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        writer.close()

    listener = await asyncio.start_server(count, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    token = wrong_token(fake)
    keys = {"kling_api_key": "kling-key-12345", "fal_key": "fal-key-12345", "runway_api_key": "key_12345678"}
    settings = make_settings(
        tmp_path, token, kling_base_url=url, fal_base_url=url, runway_base_url=url, default_provider="kling", **keys
    )
    await migrated(settings.db_path)
    before = len(fake.requests)
    try:
        results = await run_checks(settings, quick=True)
    finally:
        listener.close()
        await listener.wait_closed()
    assert connections == [] and len(fake.requests) == before
    checks = by_name(results)
    assert checks["Discord"].status is Status.SKIPPED and checks["Providers"].status is Status.SKIPPED
    offline = ("Discord token", "Settings", "Database", "Disk space", "Background model")
    assert [checks[name].status for name in offline] == [Status.OK] * 5
    assert "checksum ok" in checks["Background model"].found and "loads in" not in checks["Background model"].found
    assert exit_status(results) == 0  # HEALTHCHECK: healthy
    assert_no_secrets(results, token, *keys.values())


async def test_quick_exit_status_is_one_on_failure(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, None)
    await migrated(settings.db_path, LATEST + 1)
    results = await run_checks(settings, quick=True)
    assert exit_status(results) == 1  # HEALTHCHECK: unhealthy (never 2, which Docker reserves)


def test_cli_quick(tmp_path: Path) -> None:
    token = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GaBcDe.abcdefghijklmnopqrstuvwxyz0123456789AB"
    env = {
        "DISCORD_TOKEN": token,
        "LIKENESS_DATA_DIR": str(tmp_path / "data"),
        "LIKENESS_MODELS_DIR": str(installed_models_dir()),
        "LIKENESS_CLEANUP_MODEL": "u2netp",
        "LIKENESS_RUNWAY_API_KEY": "key_" + "ef" * 64,
        "LIKENESS_RUNWAY_BASE_URL": f"http://127.0.0.1:{closed_port()}",
    }
    healthy = run_likeness(tmp_path, "doctor", "--quick", env=env)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "✓  Discord token" in healthy.stdout and "✓  Database" in healthy.stdout
    assert "-  Discord" in healthy.stdout and healthy.stderr == ""
    for value in (token, env["LIKENESS_RUNWAY_API_KEY"], *token.split(".")[1:]):
        assert value not in healthy.stdout

    broken = run_likeness(tmp_path, "doctor", "--quick", "--json", env={**env, "LIKENESS_LOG_LEVEL": "loud"})
    assert broken.returncode == 1
    report = json.loads(broken.stdout)
    assert report["ok"] is False and report["checks"][0]["status"] == "failure"
    assert "LIKENESS_LOG_LEVEL" in report["checks"][0]["found"]


async def test_settings_error_names_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("LIKENESS_") or name == "DISCORD_TOKEN":
            monkeypatch.delenv(name)
    monkeypatch.setenv("LIKENESS_MAX_UPLOAD_MB", "-3")
    monkeypatch.setenv("LIKENESS_FAL_KEY", "fal-secret-value-123")
    monkeypatch.setenv("LIKENESS_DEFAULT_PROVIDER", "midjourney")
    results = await run_doctor(quick=True)
    assert results[0].status is Status.FAILURE
    assert "LIKENESS_MAX_UPLOAD_MB" in results[0].found and "LIKENESS_DEFAULT_PROVIDER" in results[0].found
    assert results[1].status is Status.SKIPPED
    assert exit_status(results) == 1
    assert "fal-secret-value-123" not in shown(results)


def test_bot_process_is_found_by_its_command_line(tmp_path: Path) -> None:
    from bot.ops.doctor import running_bots

    def process(pid: int, *argv: str) -> None:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(b"\0".join(arg.encode() for arg in argv) + b"\0")

    process(1, "/opt/venv/bin/python", "/opt/venv/bin/likeness", "run")  # the Docker image's PID 1
    process(20, "/usr/bin/python3", "-X", "dev", "-m", "bot")  # no subcommand is `run`
    process(30, "likeness", "doctor", "--quick")
    process(40, "vim", "/srv/likeness")
    (tmp_path / "self").mkdir()
    assert running_bots(tmp_path) == [1, 20]
    assert running_bots(tmp_path / "absent") is None


# ------------------------------------------------------------------------------------------ provider callbacks


async def test_callbacks_reach_the_running_bots_listener(tmp_path: Path) -> None:
    port = closed_port()
    settings = make_settings(tmp_path, None, callback_url=f"http://127.0.0.1:{port}", callback_port=port)
    counted: list[tuple[str, str]] = []
    listener = CallbackServer(
        CallbackUrls(f"http://127.0.0.1:{port}", callback_secret(tmp_path)),
        lambda _p, _j: None,
        "127.0.0.1",
        port,
        count=lambda provider, outcome: counted.append((provider, outcome)),
    )
    await listener.start()
    try:
        results = await run_checks(settings, quick=False, probes=PLENTY)
    finally:
        await listener.close()
    check = by_name(results)["Provider callbacks"]
    assert counted == []  # the doctor's visit is not mistaken for a (forged) callback
    # Reached from this machine, but a loopback address is no use to Kling or fal.ai.
    assert check.status is Status.WARNING
    assert check.found == (
        f"http://127.0.0.1:{port}/callbacks reaches the bot's callback listener from here, but 127.0.0.1 is a "
        "local address, out of Kling's and fal.ai's reach."
    )
    assert "https:// address of your reverse proxy as the internet sees it" in check.fix

    quick = await run_checks(settings, quick=True, probes=PLENTY)
    assert "Provider callbacks" not in by_name(quick)  # no network with --quick


async def test_callbacks_that_reach_nothing_or_something_else_are_a_warning(fake: FakeDiscord, tmp_path: Path) -> None:
    port = closed_port()
    settings = make_settings(tmp_path, None, callback_url=f"http://127.0.0.1:{port}/", callback_port=8788)
    results = await run_checks(settings, quick=False, probes=PLENTY)
    nothing = by_name(results)["Provider callbacks"]
    assert nothing.status is Status.WARNING
    assert nothing.found.startswith(f"http://127.0.0.1:{port}/callbacks cannot be reached (")
    assert "Kling and fal.ai cannot call back" in nothing.found
    assert "to the bot's listener at 127.0.0.1:8788, with the bot running" in nothing.fix
    assert exit_status([nothing]) == 0  # shots are still polled

    elsewhere = make_settings(tmp_path, None, callback_url=fake.base_url)  # a proxy routing to some other service
    other = by_name(await run_checks(elsewhere, quick=False, probes=PLENTY))["Provider callbacks"]
    assert other.status is Status.WARNING
    assert other.found.startswith(f"{fake.base_url}/callbacks answers 404, not as the bot's callback listener does")


@pytest.mark.parametrize(
    ("public", "status", "says"),
    [
        ("https://likeness.example.org", Status.OK, "reaches the bot's callback listener"),
        ("http://likeness.example.org", Status.WARNING, "plain http: fal.ai takes https webhooks only"),
        ("https://192.168.1.20", Status.WARNING, "192.168.1.20 is a local address"),
        ("https://bot.lan", Status.WARNING, "bot.lan is a local address"),
    ],
)
async def test_callbacks_must_be_reachable_by_the_providers(
    tmp_path: Path, public: str, status: Status, says: str
) -> None:
    """The proxy's public name, as an admin sets it: what the doctor reaches there is the listener's hello."""
    seen: list[str] = []

    def proxy(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, text=HELLO)

    settings = make_settings(tmp_path, None, callback_url=public)
    probes = Probes(free_bytes=PLENTY.free_bytes, callback_transport=httpx.MockTransport(proxy))
    check = by_name(await run_checks(settings, quick=False, probes=probes))["Provider callbacks"]
    assert seen == [f"{public}/callbacks"]
    assert check.status is status and says in check.found
