"""The checks that ask over the network, with short timeouts: Discord (the token, the application, every server
and the bot's permissions there, the slash commands, the bot's permissions in each allowed generation channel)
and every provider the bot has keys for (a free authenticated call, timed to its first byte)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from bot.infra.config import Settings, SettingsError
from bot.ops.doctor.local import REINSTALL_TOKEN
from bot.ops.doctor.results import CheckResult, failure, ok, skipped, warning
from bot.providers import catalog

if TYPE_CHECKING:
    from bot.discord_io.probe import DiscordProbe
    from bot.providers.base import Provider

MAX_NAMED_SERVERS = 5  # servers named in one line; the rest are counted
GUILD_COMMAND_CHECKS = 10  # servers asked for their own commands when none are global

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
ALL_PERMISSIONS = (1 << 64) - 1  # what the owner and ADMINISTRATOR have: every bit, present and future
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
# Implicitly denied without Send Messages: TTS, Embed Links, Attach Files, Mention Everyone
# (https://discord.com/developers/docs/topics/permissions#implicit-permissions).
NEEDS_SEND_MESSAGES = (1 << 12) | (1 << 14) | (1 << 15) | (1 << 17)
ROLE_OVERWRITE, MEMBER_OVERWRITE = 0, 1  # a channel overwrite's `type`

# Application flags (https://discord.com/developers/docs/resources/application#application-object-flags).
PRIVILEGED_INTENT_FLAGS: dict[str, int] = {
    "Presence": (1 << 12) | (1 << 13),
    "Server Members": (1 << 14) | (1 << 15),
    "Message Content": (1 << 18) | (1 << 19),
}
VERIFICATION_PENDING_GUILD_LIMIT = 1 << 16

# ---------------------------------------------------------------------------------------------------- Discord

DISCORD_CHECKS = ("Discord login", "Discord application", "Discord servers", "Slash commands", "Generation channels")
GONE_OR_HIDDEN = "the channel is gone or hidden from the bot"

T = TypeVar("T")


def invite_url(application_id: int | str) -> str:
    return (
        f"https://discord.com/oauth2/authorize?client_id={application_id}&scope={INVITE_SCOPES}"
        f"&permissions={INVITE_PERMISSIONS}"
    )


async def check_discord(token: str, wait: float, allow_lists: dict[int, list[int]] | str) -> list[CheckResult]:
    """The token at Discord, the application's settings, every server's permissions, the slash commands, the
    bot's permissions in each allowed generation channel. `allow_lists`: each server's (`local.allow_lists`), or
    why they could not be read."""
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

        async def asked(name: str, check: Callable[[], Awaitable[CheckResult]], timed: bool = True) -> CheckResult:
            try:
                async with asyncio.timeout(wait if timed else None):
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
        listed: list[list[dict[str, Any]]] = []  # the bot's servers, once Discord listed them

        async def servers_check() -> CheckResult:
            guilds.extend(await probe.guilds())
            listed.append(guilds)
            return servers_result(guilds, app_id)

        servers = await asked("Discord servers", servers_check)
        commands = await asked("Slash commands", lambda: commands_result(probe, app_id, guilds))
        known = listed[0] if listed else None
        channels = await asked(  # one timeout per question: a server may allow many channels
            "Generation channels", lambda: channels_result(probe, allow_lists, known, user["id"], wait), timed=False
        )
        return [login, app, servers, commands, channels]


def _reason(error: BaseException, timeout: float) -> str:
    import httpx

    if isinstance(error, TimeoutError | httpx.TimeoutException):
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


def channel_permissions(
    guild: Mapping[str, Any], member_roles: Iterable[int | str], member_id: int, overwrites: Iterable[Mapping[str, Any]]
) -> int:
    """A member's permissions in a channel, computed as Discord documents it (topics/permissions): @everyone's and
    the member's roles' permissions OR-ed (the owner and ADMINISTRATOR get everything), then the channel's
    overwrites, each deny then allow: @everyone's, the member's roles' together, the member's own; then the
    implicit denials (no View Channels: nothing; no Send Messages: no embeds, files, TTS or @everyone).
    `guild`: GET /guilds/{id} (`id`, `owner_id`, `roles`); `overwrites`: the channel's `permission_overwrites`."""
    guild_id = int(guild["id"])
    if int(guild.get("owner_id") or 0) == member_id:
        return ALL_PERMISSIONS
    role_ids = {int(role_id) for role_id in member_roles} - {guild_id}
    roles = {int(role["id"]): int(role.get("permissions") or 0) for role in guild.get("roles") or []}
    permissions = roles.get(guild_id, 0)
    for role_id in role_ids:
        permissions |= roles.get(role_id, 0)
    if permissions & ADMINISTRATOR:
        return ALL_PERMISSIONS
    by_target = {
        (int(o["type"]), int(o["id"])): (int(o.get("allow") or 0), int(o.get("deny") or 0)) for o in overwrites
    }
    allow, deny = by_target.get((ROLE_OVERWRITE, guild_id), (0, 0))
    permissions = (permissions & ~deny) | allow
    allow = deny = 0
    for role_id in role_ids:
        role_allow, role_deny = by_target.get((ROLE_OVERWRITE, role_id), (0, 0))
        allow, deny = allow | role_allow, deny | role_deny
    permissions = (permissions & ~deny) | allow
    allow, deny = by_target.get((MEMBER_OVERWRITE, member_id), (0, 0))
    permissions = (permissions & ~deny) | allow
    if not permissions & VIEW_CHANNEL:
        return 0
    return permissions if permissions & SEND_MESSAGES else permissions & ~NEEDS_SEND_MESSAGES


async def _within(wait: float, pending: Awaitable[T]) -> T:
    async with asyncio.timeout(wait):
        return await pending


async def channels_result(
    probe: DiscordProbe,
    allow_lists: dict[int, list[int]] | str,
    guilds: list[dict[str, Any]] | None,
    bot_id: int,
    wait: float,
) -> CheckResult:
    """The bot's permissions in every channel a server allows generation commands in. `guilds`: the bot's servers
    (None when Discord did not list them): an allow list kept for a server the bot has left is not checked."""
    from bot.discord_io.probe import DiscordAnswerError

    name = "Generation channels"
    if isinstance(allow_lists, str):
        return skipped(name, allow_lists)
    names = {int(guild["id"]): str(guild.get("name")) for guild in guilds or []}
    lists = {gid: ids for gid, ids in allow_lists.items() if guilds is None or gid in names}
    looked_up: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}  # guild id -> (guild, the bot as member)
    problems: list[str] = []
    no_threads: list[str] = []  # channels fine themselves, whose threads the bot cannot post in
    missing_labels: set[str] = set()
    gone = 0

    def server(guild_id: int) -> str:
        looked = looked_up.get(guild_id, ({}, {}))[0].get("name")
        return names.get(guild_id) or (str(looked) if looked else f"server {guild_id}")

    for guild_id, channel_ids in lists.items():
        for channel_id in channel_ids:
            try:
                channel = await _within(wait, probe.channel(channel_id))
            except DiscordAnswerError as error:
                if error.status not in (403, 404):
                    raise
                gone += 1
                problems.append(f"{server(guild_id)} channel {channel_id}: {GONE_OR_HIDDEN}")
                continue
            home = int(channel.get("guild_id") or guild_id)
            if home not in looked_up:
                guild = await _within(wait, probe.guild(home))
                looked_up[home] = guild, await _within(wait, probe.member(home, bot_id))
            guild, member = looked_up[home]
            granted = channel_permissions(
                guild, member.get("roles") or [], bot_id, channel.get("permission_overwrites") or []
            )
            missing = [label for bit, label in REQUIRED_PERMISSIONS.items() if not granted & bit]
            thread_missing = [label for bit, label in THREAD_PERMISSIONS.items() if not granted & bit]
            shown = f"#{channel['name']}" if channel.get("name") else f"channel {channel_id}"
            if missing:
                missing_labels.update(missing)
                problems.append(f"{server(guild_id)} {shown}: missing {', '.join(missing)}")
            elif thread_missing:  # a thread counts as its parent for the allow list, so members will use them
                no_threads.append(f"{server(guild_id)} {shown}")
    checked = sum(len(ids) for ids in lists.values())
    unlisted = len(names) - len(lists)  # 0 when Discord did not list the servers
    count = {"channels": checked, "servers": len(lists), "problems": len(problems)}
    if problems:
        fixes: list[str] = []
        if missing_labels:
            needed = ", ".join(label for label in REQUIRED_PERMISSIONS.values() if label in missing_labels)
            fixes.append(
                f"In the channel's settings > Permissions, allow the bot's role: {needed}; or remove it from the "
                "allow list with /settings channels."
            )
        if gone:
            fixes.append(
                "For a channel gone or hidden: if it exists, allow the bot's role View Channels there (its settings "
                "> Permissions); if it was deleted, /settings channels Clear, then Add the channels to keep."
            )
        return failure(
            name,
            f"{len(problems)} of {checked} allowed channels cannot take generation commands: {_listed(problems)}.",
            " ".join(fixes),
            **count,
        )
    if no_threads:
        thread_needed = ", ".join(THREAD_PERMISSIONS.values())
        return warning(
            name,
            f"commands used in threads of {len(no_threads)} of {checked} allowed channels cannot be answered there "
            f"(the bot lacks {thread_needed}): {_listed(no_threads)}.",
            f"In the channel's settings > Permissions, allow the bot's role {thread_needed}; members can still use "
            "the channel itself.",
            **count,
        )
    found: list[str] = []
    if checked:
        needed = ", ".join([*REQUIRED_PERMISSIONS.values(), *THREAD_PERMISSIONS.values()])
        every = "the 1 allowed channel" if checked == 1 else f"each of the {checked} allowed channels"
        found.append(f"the bot has {needed} in {every} of {len(lists)} server{'s' if len(lists) != 1 else ''}")
    if unlisted:
        have = "server has" if unlisted == 1 else "servers have"
        found.append(f"{unlisted} {have} no allow list: members are warned in place")
    return ok(name, "; ".join(found) or "no server has an allow list", **count)


# -------------------------------------------------------------------------------------------------- providers


async def check_providers(settings: Settings, wait: float) -> list[CheckResult]:
    from bot.providers.building import bot_keys

    keys = bot_keys(settings)
    results: list[CheckResult] = []
    for spec in catalog.SPECS:
        half = spec.key_warning(spec.own_settings(settings)) if spec.key_warning is not None else None
        if half is not None:
            results.append(warning(spec.label, *half))
    default = catalog.find(settings.default_provider)
    if default is not None and default.takes_keys and default.name not in keys:
        results.append(
            warning(
                "Default provider",
                f"LIKENESS_DEFAULT_PROVIDER is {settings.default_provider}, which has no key: servers get local.",
                f"Set the {default.label} key, or LIKENESS_DEFAULT_PROVIDER=local.",
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
    from bot.providers.building import build_provider

    try:
        return build_provider(settings, name, keys)
    except (SettingsError, ValueError, OSError) as error:
        return failure(catalog.get(name).label, f"cannot be set up: {error}", "Correct the setting named above.")


async def check_provider(
    settings: Settings, name: str, keys: Mapping[str, str | None], provider: Provider | CheckResult, wait: float
) -> CheckResult:
    """The provider's free authenticated call (`ping`) with the bot's own keys, timed to its first byte, at the
    host its settings name (`base_url`)."""
    from bot.providers.base import FinalError, ProviderError
    from bot.providers.http import KEY_REFUSED

    if isinstance(provider, CheckResult):
        return provider
    spec = catalog.get(name)
    label = spec.label
    base_setting = spec.env_name("base_url")
    base_url = str(spec.own_settings(settings).base_url)
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
                f"Check {spec.key_setting_names(keys)}: copy the key again from {spec.key_source}.",
            )
        if error.code in ("timeout", "network"):
            return failure(label, f"cannot reach {host} ({error.detail or error.code}).", unreachable_fix)
        if isinstance(error, FinalError):
            return failure(label, f"{host} refused: {error.message}{said}", f"See {label}'s message above.")
        return warning(label, f"{host} is busy or failing now: {error.message}{said}", "Run doctor again later.")
    finally:
        await provider.close()
    ms = round(seconds * 1000, 1)
    answered = f"key accepted by {host}" if spec.takes_keys else f"{host} answers as {label}"  # keyless: ComfyUI
    return ok(label, f"{answered}; first byte in {ms:.0f} ms", ttfb_ms=ms)


async def _ping(provider: Provider) -> float:
    ping = getattr(provider, "ping", None)
    if ping is None:
        raise AssertionError(f"{type(provider).__name__} has no ping()")
    return float(await ping())


async def check_callbacks(settings: Settings, wait: float, transport: Any = None) -> list[CheckResult]:
    """With LIKENESS_CALLBACK_URL set: that the URL reaches a running bot's callback listener, and that it is one
    the providers that call back can use (https, not a local address: the doctor reaching it from this machine proves
    nothing for them). Only warnings: shots are polled anyway."""
    import httpx

    from bot.jobs.callbacks import HELLO

    if settings.callback_url is None:
        return []
    name = "Provider callbacks"
    url = f"{settings.callback_url}/callbacks"
    fix = (
        f"Route {settings.callback_url}/callbacks/ through your HTTPS reverse proxy to the bot's listener at "
        f"{settings.callback_host}:{settings.callback_port}, with the bot running; or unset LIKENESS_CALLBACK_URL."
    )
    try:
        async with httpx.AsyncClient(timeout=wait, follow_redirects=True, transport=transport) as client:
            answer = await client.get(url)
    except httpx.HTTPError as error:
        return [
            warning(
                name,
                f"{url} cannot be reached ({_reason(error, wait)}): {catalog.calling_back()} cannot call back.",
                fix,
            )
        ]
    if answer.status_code != 200 or answer.text != HELLO:
        return [warning(name, f"{url} answers {answer.status_code}, not as the bot's callback listener does.", fix)]
    if (unusable := _out_of_providers_reach(settings.callback_url)) is not None:
        return [
            warning(
                name,
                f"{url} reaches the bot's callback listener from here, but {unusable}.",
                "Set LIKENESS_CALLBACK_URL to the https:// address of your reverse proxy as the internet sees it.",
            )
        ]
    return [ok(name, f"{url} reaches the bot's callback listener")]


def _out_of_providers_reach(base_url: str) -> str | None:
    """Why providers on the internet could not call this URL back, if they could not."""
    import ipaddress

    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        local = host == "localhost" or host.endswith((".localhost", ".local", ".internal", ".lan"))
    else:
        local = not address.is_global
    if local:
        return f"{host} is a local address, out of {catalog.calling_back(possessive=True)} reach"
    if parts.scheme != "https":
        return "it is plain http: fal.ai takes https webhooks only, and the URL tokens would travel in clear"
    return None
