"""`likeness doctor`: check an installation and say, for every problem, what the admin can do about it.

Offline checks (`local`), which are also all that `--quick` runs (the Docker HEALTHCHECK: no network, no model
loading, well under a second): the token's shape, the settings, the database (schema version, writability), free
disk space, the background-removal model (present, checksum; the full run also loads it), the bot's process. The
full run adds, with short timeouts and concurrently (`online`): Discord (the token, the application, every server
and the bot's permissions there, the slash commands, the bot's permissions in each channel a server's allow list
names for generation commands, read from the database without changing it) and every provider the bot has keys
for (a free authenticated call, timed to its first byte).

Every check returns `CheckResult`s (`results`); `run_checks` runs them; `report.main` prints them, as lines or as
JSON. Exit status: 0 when nothing failed (warnings allowed), 1 otherwise. No line ever holds a secret: everything
shown passes through `redact` with the token and the keys.
"""

from __future__ import annotations

import asyncio

from bot.infra.config import Settings, SettingsError, load_settings
from bot.ops.doctor.local import (
    DISK_FAILURE_BYTES,
    DISK_WARNING_BYTES,
    FALLBACK_MODEL,
    allow_lists,
    check_database,
    check_disk,
    check_model,
    check_process,
    check_settings,
    check_token,
    running_bots,
    token_problem,
    token_user_id,
)
from bot.ops.doctor.online import (
    DISCORD_CHECKS,
    INVITE_PERMISSIONS,
    application_result,
    channel_permissions,
    check_callbacks,
    check_discord,
    check_providers,
)
from bot.ops.doctor.report import format_report, main, report_json
from bot.ops.doctor.results import CheckResult, Probes, Status, exit_status, redact, skipped

__all__ = [
    "DISK_FAILURE_BYTES",
    "DISK_WARNING_BYTES",
    "FALLBACK_MODEL",
    "INVITE_PERMISSIONS",
    "CheckResult",
    "Probes",
    "Status",
    "application_result",
    "channel_permissions",
    "exit_status",
    "format_report",
    "main",
    "report_json",
    "run_checks",
    "run_doctor",
    "running_bots",
    "token_problem",
    "token_user_id",
]


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
    import bot.runtime  # noqa: F401

    if token.status is Status.OK:
        lists = await asyncio.to_thread(allow_lists, settings)  # read-only, before any timer starts
        discord = check_discord(settings.token(), probes.discord_timeout, lists)
    else:
        discord = _skip_discord("needs a well-formed DISCORD_TOKEN")
    discord_results, providers, callbacks = await asyncio.gather(
        discord,
        check_providers(settings, probes.provider_timeout),
        check_callbacks(settings, probes.provider_timeout, probes.callback_transport),
    )
    # After the network checks: loading the model keeps the CPU busy, which would inflate their timings.
    model = await check_model(settings, load=True, quick=False)
    return redact([*results, model, *discord_results, *providers, *callbacks], _secrets(settings))


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
