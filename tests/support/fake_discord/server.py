"""``FakeDiscord``: an aiohttp server the real discord.py client logs in to and connects to.

One server on 127.0.0.1 serves the REST API under ``/api/v10``, the gateway websocket at
``/gateway`` and a CDN for attachments at ``/attachments/...``. Every REST request goes through
one pipeline (``_handle_api``): record it, route it with Discord's OpenAPI spec, check the token,
serve a switched-on 429, validate the JSON body, then run the handler in ``rest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import re
import secrets
import time
from base64 import b64encode
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import orjson
import yarl
from aiohttp import BodyPartReader, web
from multidict import CIMultiDict

from .gateway import (
    INTENT_GUILD_MEMBERS,
    INTENT_GUILD_MESSAGES,
    INTENT_GUILDS,
    INTENT_MESSAGE_CONTENT,
    GatewayConnection,
)
from .interactions import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    MESSAGE_COMPONENT,
    MODAL_SUBMIT,
    CallbackRecord,
    CommandUnavailable,
    FakeDiscordError,
    InteractionHandle,
    build_command_data,
    build_modal_components,
    find_command,
)
from .openapi import discord_error_tree, load_spec
from .rest import ApiError, ApiRequest, RestApi
from .world import (
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeMessage,
    FakeRole,
    FakeUser,
    Overwrite,
    Perm,
    StoredFile,
    World,
    guess_content_type,
)

API_PREFIX = "/api/v10"


@dataclass
class RecordedFile:
    field: str  # "files[0]"
    filename: str
    data: bytes
    content_type: str | None


@dataclass
class RecordedRequest:
    """One REST request as the bot sent it."""

    method: str
    path: str  # without /api/v10, e.g. "/channels/1/messages"
    route: str | None  # the OpenAPI template, e.g. "/channels/{channel_id}/messages"
    query: dict[str, str]
    json: Any  # the JSON body, or the parsed payload_json of a multipart request
    files: list[RecordedFile]
    timestamp: float  # time.monotonic()
    status: int = 0
    response: Any = None


@dataclass
class ValidationFailure:
    method: str
    path: str
    route: str | None  # None: the spec has no such route
    body: Any
    error: str


@dataclass
class RateLimitRule:
    method: str
    pattern: re.Pattern[str]
    times: int
    retry_after: float
    global_: bool


@dataclass
class RateLimitHit:
    method: str
    path: str
    route: str | None
    retry_after: float
    global_: bool
    at: float = field(default_factory=time.monotonic)


class DiscordPyPatch:
    """Points discord.py at the fake. Works as ``with fake.patch_discord_py():`` or as an undo callable."""

    def __init__(self, api_base: str, ws_url: yarl.URL) -> None:
        import discord.gateway
        import discord.http
        import discord.webhook.async_

        self._targets: list[tuple[Any, str]] = [
            (discord.http.Route, "BASE"),
            # The same class as discord.http.Route today; patched by name in case that changes.
            (discord.webhook.async_.Route, "BASE"),  # pyright: ignore[reportPrivateImportUsage]
            (discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY"),
        ]
        self._saved = [getattr(obj, name) for obj, name in self._targets]
        for (obj, name), value in zip(self._targets, [api_base, api_base, ws_url], strict=True):
            setattr(obj, name, value)
        self._active = True

    def undo(self) -> None:
        if self._active:
            for (obj, name), value in zip(self._targets, self._saved, strict=True):
                setattr(obj, name, value)
            self._active = False

    __call__ = undo

    def __enter__(self) -> DiscordPyPatch:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.undo()


GuildRef = FakeGuild | int
UserRef = FakeUser | int


class FakeDiscord:
    """A fake Discord for end-to-end tests of a discord.py bot. See the package docstring."""

    def __init__(
        self,
        validate: bool = True,
        *,
        validate_responses: bool = False,
        bot_name: str = "Likeness",
        bot_permissions: int = Perm.BOT_DEFAULT,
        shard_count: int = 1,
        interaction_deadline: float = 3.0,
        token_lifetime: float = 900.0,
    ) -> None:
        self.validate = validate
        self.validate_responses = validate_responses
        self.shard_count = shard_count
        self.interaction_deadline = interaction_deadline
        self.token_lifetime = token_lifetime
        # enforce_nonce: a message create with the same author and nonce within this window returns the first one
        self.nonce_window = datetime.timedelta(minutes=5)
        self.nonces: dict[tuple[int, str], FakeMessage] = {}
        self.bot_permissions = bot_permissions
        self.spec = load_spec()
        self.world = World()

        snowflake = self.world.snowflake
        self.bot_user = self._new_user(bot_name, bot=True)
        self.application_id = self.bot_user.id  # like every app created since 2016
        self.app_owner = self._new_user(f"{bot_name.lower()}-owner")
        self.application_flags = (1 << 23) | (1 << 19) | (1 << 15) | (1 << 13)  # intent-limited + badge
        token_id = b64encode(str(self.bot_user.id).encode()).decode().rstrip("=")
        self.token = f"{token_id}.{secrets.token_urlsafe(4)}.{secrets.token_urlsafe(27)}"
        self.verify_key = hashlib.sha256(str(snowflake()).encode()).hexdigest()

        self.requests: list[RecordedRequest] = []
        self.validation_errors: list[ValidationFailure] = []
        self.opened_commands: set[tuple[int, str]] = set()  # (guild, command) opened to everyone by its admins
        self.watched_secrets: list[str] = []  # secrets tests typed in: the e2e logs must never show them
        self.response_errors: list[ValidationFailure] = []  # only with validate_responses=True
        self.unimplemented: list[RecordedRequest] = []  # routes in the spec the fake does not serve
        self.server_errors: list[tuple[RecordedRequest, Exception]] = []  # bugs in the fake itself
        self.rate_limited: list[RateLimitHit] = []
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self.interactions: dict[int, InteractionHandle] = {}
        self.interactions_by_token: dict[str, InteractionHandle] = {}
        self.sessions: dict[str, GatewayConnection] = {}
        self.connections: list[GatewayConnection] = []

        self._rate_limit_rules: list[RateLimitRule] = []
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._rest = RestApi(self)

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_get("/gateway", self._handle_gateway)
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._handle_cdn)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._handle_api)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        for conn in list(self.connections):
            await conn.close(1001, "Fake Discord shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_base(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def ws_url(self) -> yarl.URL:
        return yarl.URL(f"ws://127.0.0.1:{self._port}/gateway")

    def patch_discord_py(self) -> DiscordPyPatch:
        if not self._port:
            raise FakeDiscordError("start() the fake before patching discord.py")
        return DiscordPyPatch(self.api_base, self.ws_url)

    # --- waiting -------------------------------------------------------------------------------

    def notify(self) -> None:
        """Wake everything blocked in ``wait_until`` so it re-checks its condition."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float,  # noqa: ASYNC109 - the harness API
        what: str,
        *,
        poll: float | None = 0.01,
    ) -> None:
        """Until `predicate()` holds. Every request the fake handles wakes the waiters; `poll` also
        re-checks on a timer, for predicates on the bot's own state (None: the fake's state only)."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    event = self._changed
                    if poll is None:
                        await event.wait()
                        continue
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(poll):
                            await event.wait()
        except TimeoutError:
            crashes = "".join(f"; the fake crashed on {r.method} {r.path}: {e!r}" for r, e in self.server_errors)
            raise TimeoutError(f"fake Discord: timed out after {timeout}s waiting for {what}{crashes}") from None

    def _ready_connections(self) -> list[GatewayConnection]:
        return [c for c in self.connections if c.ready and not c.closed and not c.ws.closed]

    async def wait_for_ready(self, timeout: float = 15.0) -> None:  # noqa: ASYNC109 - the harness API
        """Until a client identified and every guild was sent to it (on every shard).

        The bot's own ``on_ready`` comes ``guild_ready_timeout`` later; interactions sent before
        that are still handled. After a restart, let the old client close first: its connection
        would count as ready too.
        """

        def ready() -> bool:
            shards = {c.shard[0] for c in self._ready_connections()}
            return shards >= set(range(self.shard_count))

        await self.wait_until(ready, timeout, "a bot to identify on the gateway")

    async def wait_for_commands(
        self,
        *names: str,
        guild: GuildRef | None = None,
        timeout: float = 15.0,  # noqa: ASYNC109 - the harness API
    ) -> None:
        """Until the bot synced slash commands with these names (globally, or for ``guild``)."""

        def synced() -> bool:
            have = {c["name"] for c in self.commands(guild)}
            return bool(have) and set(names) <= have

        await self.wait_until(synced, timeout, f"commands {names or '(any)'} to be synced")

    # --- the world -----------------------------------------------------------------------------

    def _new_user(self, name: str, *, bot: bool = False) -> FakeUser:
        user = FakeUser(id=self.world.snowflake(), name=name, bot=bot)
        self.world.users[user.id] = user
        return user

    def add_user(self, name: str, *, bot: bool = False, locale: str = "en-US") -> FakeUser:
        user = self._new_user(name, bot=bot)
        user.locale = locale
        return user

    def add_guild(
        self,
        name: str,
        owner: UserRef | None = None,
        *,
        everyone_permissions: int = Perm.EVERYONE_DEFAULT,
        upload_limit: int | None = None,
        locale: str = "en-US",
    ) -> FakeGuild:
        """A guild with @everyone, the bot's managed role, #general, the owner and the bot as members."""
        world = self.world
        owner_user = self._user(owner) if owner is not None else self.add_user(f"{name.lower()}-owner")
        guild = FakeGuild(id=world.snowflake(), name=name, owner_id=owner_user.id, locale=locale)
        if upload_limit is not None:
            guild.upload_limit = upload_limit
        # Discord gives @everyone the guild's id.
        everyone = FakeRole(id=guild.id, guild_id=guild.id, name="@everyone", permissions=everyone_permissions)
        bot_role = FakeRole(
            id=world.snowflake(),
            guild_id=guild.id,
            name=self.bot_user.name,
            permissions=self.bot_permissions,
            position=1,
            managed=True,
            bot_id=self.bot_user.id,
        )
        guild.roles = {everyone.id: everyone, bot_role.id: bot_role}
        guild.everyone_role_id, guild.bot_role_id = everyone.id, bot_role.id
        world.guilds[guild.id] = guild
        general = FakeChannel(id=world.snowflake(), guild_id=guild.id, name="general")
        guild.channels[general.id] = general
        world.channels[general.id] = general
        guild.members[owner_user.id] = FakeMember(owner_user, guild.id)
        guild.members[self.bot_user.id] = FakeMember(self.bot_user, guild.id, [bot_role.id])
        self._broadcast_guild(guild, "GUILD_CREATE", None, INTENT_GUILDS, guild_create=True)
        return guild

    def add_role(
        self, guild: GuildRef, name: str, permissions: int = 0, *, color: int = 0, hoist: bool = False
    ) -> FakeRole:
        g = self._guild(guild)
        role = FakeRole(
            id=self.world.snowflake(),
            guild_id=g.id,
            name=name,
            permissions=permissions,
            position=len(g.roles),
            color=color,
            hoist=hoist,
        )
        g.roles[role.id] = role
        self._broadcast_guild(g, "GUILD_ROLE_CREATE", {"guild_id": str(g.id), "role": role.to_dict()}, INTENT_GUILDS)
        return role

    def add_member(
        self, guild: GuildRef, user: UserRef, roles: list[FakeRole] | None = None, *, nick: str | None = None
    ) -> FakeMember:
        g, u = self._guild(guild), self._user(user)
        member = g.members.get(u.id)
        if member is None:
            member = g.members[u.id] = FakeMember(u, g.id, nick=nick)
            self._broadcast_guild(
                g, "GUILD_MEMBER_ADD", {"guild_id": str(g.id), **member.to_dict()}, INTENT_GUILD_MEMBERS
            )
        for role in roles or []:
            if role.guild_id != g.id:
                raise FakeDiscordError(f"role {role.name!r} belongs to another guild")
            if role.id not in member.role_ids:
                member.role_ids.append(role.id)
        return member

    def add_channel(
        self,
        guild: GuildRef,
        name: str,
        *,
        overwrites: list[Overwrite] | None = None,
        visible_to_bot: bool = True,
        topic: str | None = None,
        nsfw: bool = False,
    ) -> int:
        """A text channel; returns its id. ``visible_to_bot=False`` denies the bot VIEW_CHANNEL; ``nsfw`` makes
        it age-restricted."""
        g = self._guild(guild)
        channel = FakeChannel(
            id=self.world.snowflake(),
            guild_id=g.id,
            name=name,
            position=len(g.channels),
            topic=topic,
            overwrites=list(overwrites or []),
            nsfw=nsfw,
        )
        if not visible_to_bot:
            channel.overwrites.append(Overwrite(id=self.bot_user.id, type=1, deny=Perm.VIEW_CHANNEL))
        g.channels[channel.id] = channel
        self.world.channels[channel.id] = channel
        self._broadcast_guild(g, "CHANNEL_CREATE", channel.to_dict(), INTENT_GUILDS)
        return channel.id

    def upload(self, data: bytes, filename: str, content_type: str | None = None) -> dict[str, Any]:
        """Register a file on the fake CDN, as a member's client does before using an attachment option."""
        stored = self.store_file(0, filename, data, content_type or guess_content_type(filename), ephemeral=True)
        return stored.to_dict()

    def store_file(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str | None,
        *,
        description: str | None = None,
        ephemeral: bool = False,
    ) -> StoredFile:
        file_id = self.world.snowflake()
        url = f"{self.base_url}/attachments/{channel_id}/{file_id}/{filename}"
        stored = StoredFile(file_id, channel_id, filename, data, content_type, url, description, ephemeral)
        self.world.files[file_id] = stored
        return stored

    def _guild(self, guild: GuildRef) -> FakeGuild:
        found = self.world.guilds.get(guild if isinstance(guild, int) else guild.id)
        if found is None:
            raise FakeDiscordError(f"unknown guild {guild!r}")
        return found

    def _user(self, user: UserRef) -> FakeUser:
        found = self.world.users.get(user if isinstance(user, int) else user.id)
        if found is None:
            raise FakeDiscordError(f"unknown user {user!r}")
        return found

    # --- views for assertions ------------------------------------------------------------------

    def channel_messages(self, channel_id: int, *, include_ephemeral: bool = True) -> list[FakeMessage]:
        """Every message posted in the channel, oldest first, deleted ones included (``deleted``)."""
        return [
            m
            for m in self.world.messages.values()
            if m.channel_id == channel_id and (include_ephemeral or not m.ephemeral)
        ]

    def message(self, message_id: int) -> FakeMessage:
        try:
            return self.world.messages[message_id]
        except KeyError:
            raise FakeDiscordError(f"no message {message_id}") from None

    def commands(self, guild: GuildRef | None = None) -> list[dict[str, Any]]:
        """The synced commands: global ones, or those registered for ``guild``."""
        if guild is None:
            return list(self.global_commands)
        return list(self.guild_commands.get(self._guild(guild).id, []))

    def requests_to(self, method: str, route: str) -> list[RecordedRequest]:
        """Recorded requests for one spec route, e.g. ``("POST", "/channels/{channel_id}/messages")``."""
        return [r for r in self.requests if r.method == method.upper() and r.route == route]

    # --- switches ------------------------------------------------------------------------------

    def rate_limit(
        self, method: str, path_regex: str, times: int = 1, retry_after: float = 0.2, global_: bool = False
    ) -> None:
        """Answer the next ``times`` matching requests with 429.

        ``method`` may be "*". ``path_regex`` must fully match the concrete path without /api/v10
        (``r"/channels/\\d+/messages"``) or the spec template (``"/channels/{channel_id}/messages"``).
        """
        rule = RateLimitRule(method.upper(), re.compile(path_regex), times, retry_after, global_)
        self._rate_limit_rules.append(rule)

    def _take_rate_limit(self, method: str, path: str, route: str | None) -> RateLimitRule | None:
        for rule in self._rate_limit_rules:
            if rule.times <= 0 or rule.method not in ("*", method):
                continue
            if rule.pattern.fullmatch(path) or (route is not None and rule.pattern.fullmatch(route)):
                rule.times -= 1
                return rule
        return None

    # --- gateway -------------------------------------------------------------------------------

    def bot_user_payload(self) -> dict[str, Any]:
        data = self.bot_user.to_dict()
        data.update(verified=True, mfa_enabled=False, email=None, locale="en-US")
        return data

    def guild_create_payload(self, guild: FakeGuild, intents: int) -> dict[str, Any]:
        # Without the GUILD_MEMBERS intent Discord only sends the bot's own member.
        member_ids = None if intents & INTENT_GUILD_MEMBERS else {self.bot_user.id}
        return guild.to_gateway_dict(member_ids=member_ids)

    def _live_connections(self) -> list[GatewayConnection]:
        return [c for c in self.connections if c.identified and not c.closed and not c.ws.closed]

    def reconnect_clients(self) -> None:
        """Send op 7 RECONNECT, as Discord does before moving a session; clients RESUME."""
        for conn in self._live_connections():
            conn.send(7, None)

    def dispatch(self, event_name: str, data: Any) -> None:
        """Send a raw gateway DISPATCH to every connected client."""
        for conn in self._live_connections():
            conn.dispatch(event_name, data)

    def _broadcast_guild(
        self, guild: FakeGuild, event: str, data: Any, intent: int, *, guild_create: bool = False
    ) -> None:
        for conn in self._live_connections():
            if conn.handles_guild(guild.id) and conn.intents & intent:
                payload = self.guild_create_payload(guild, conn.intents) if guild_create else data
                conn.dispatch(event, payload)

    def broadcast_message_event(self, event: str, message: FakeMessage, data: dict[str, Any]) -> None:
        """MESSAGE_CREATE/UPDATE/DELETE for non-ephemeral guild messages (GUILD_MESSAGES intent)."""
        if message.ephemeral or message.guild_id is None:
            return
        for conn in self._live_connections():
            if conn.handles_guild(message.guild_id) and conn.intents & INTENT_GUILD_MESSAGES:
                conn.dispatch(event, self._as_seen_by(conn, message, data))

    def _as_seen_by(self, conn: GatewayConnection, message: FakeMessage, data: dict[str, Any]) -> dict[str, Any]:
        """Without the MESSAGE_CONTENT intent Discord blanks other people's messages unless they
        mention the bot."""
        bot_id = self.bot_user.id
        mentioned = f"<@{bot_id}>" in message.content or f"<@!{bot_id}>" in message.content
        if conn.intents & INTENT_MESSAGE_CONTENT or message.author.id == bot_id or mentioned or "content" not in data:
            return data
        return {**data, "content": "", "embeds": [], "attachments": [], "components": []}

    async def _handle_gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        conn = GatewayConnection(self, ws)
        self.connections.append(conn)
        try:
            await conn.run()
        finally:
            conn.closed = True
            if conn in self.connections:
                self.connections.remove(conn)
            await conn.close()
            self.notify()
        return ws

    # --- driving interactions ------------------------------------------------------------------

    def _commands_for(self, guild: FakeGuild) -> list[dict[str, Any]]:
        local = self.guild_commands.get(guild.id, [])
        names = {(c["name"], c.get("type", 1)) for c in local}
        return local + [c for c in self.global_commands if (c["name"], c.get("type", 1)) not in names]

    def _check_can_use(self, guild: FakeGuild, user: FakeUser, channel: FakeChannel, command: dict[str, Any]) -> None:
        member = guild.members.get(user.id)
        if member is None:
            raise FakeDiscordError(f"{user.name} is not a member of {guild.name}")
        perms = self.world.channel_permissions(guild, member, channel)
        if not perms & Perm.VIEW_CHANNEL:
            raise FakeDiscordError(f"{user.name} cannot see #{channel.name}")
        if not perms & Perm.USE_APPLICATION_COMMANDS:
            raise CommandUnavailable(f"{user.name} lacks Use Application Commands in #{channel.name}")
        required = command.get("default_member_permissions")
        # "0" means admins only; anything else needs every bit it names (unless the server's admins opened it).
        if (
            (guild.id, command["name"]) not in self.opened_commands
            and required is not None
            and perms != Perm.ALL
            and (int(required) == 0 or perms & int(required) != int(required))
        ):
            raise CommandUnavailable(
                f"/{command['name']} needs permissions {required} (default_member_permissions); "
                f"{user.name} has {perms} in #{channel.name}"
            )
        contexts = command.get("contexts")
        if contexts is not None and 0 not in contexts:
            raise CommandUnavailable(f"/{command['name']} is not available in guilds (contexts={contexts})")

    def set_command_permissions_override(self, guild: GuildRef, name: str, *, allow_everyone: bool) -> None:
        """What a server admin does in Server Settings > Integrations: let everyone use a command that
        `default_member_permissions` hides (the bot must still check at run time)."""
        key = (self._guild(guild).id, name)
        if allow_everyone:
            self.opened_commands.add(key)
        else:
            self.opened_commands.discard(key)

    def _channel(self, guild: FakeGuild, channel_id: int | None) -> FakeChannel:
        channel = guild.channels.get(guild.channel_id if channel_id is None else channel_id)
        if channel is None:
            raise FakeDiscordError(f"channel {channel_id} is not in {guild.name}")
        return channel

    def _interaction_payload(
        self,
        *,
        interaction_id: int,
        token: str,
        kind: int,
        guild: FakeGuild,
        channel: FakeChannel,
        user: FakeUser,
        data: dict[str, Any],
        message: FakeMessage | None,
    ) -> dict[str, Any]:
        member = guild.members[user.id]
        member_data = member.to_dict()
        member_data["permissions"] = str(self.world.channel_permissions(guild, member, channel))
        channel_data = channel.to_dict()
        channel_data["permissions"] = member_data["permissions"]
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": kind,
            "token": token,
            "version": 1,
            "data": data,
            "guild_id": str(guild.id),
            "guild": {"id": str(guild.id), "locale": guild.locale, "features": []},
            "channel_id": str(channel.id),
            "channel": channel_data,
            "member": member_data,
            "app_permissions": str(self.world.permissions_for(guild, self.bot_user.id, channel)),
            "locale": user.locale,
            "guild_locale": guild.locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0,
            "attachment_size_limit": guild.upload_limit,
        }
        if message is not None:
            payload["message"] = message.to_dict()
        return payload

    async def _start_interaction(
        self,
        kind: int,
        guild: FakeGuild,
        channel: FakeChannel,
        user: FakeUser,
        data: dict[str, Any],
        *,
        message: FakeMessage | None = None,
        deadline: float | None = None,
        parent: InteractionHandle | None = None,
    ) -> InteractionHandle:
        conns = [c for c in self._live_connections() if c.handles_guild(guild.id)]
        if not conns:
            raise FakeDiscordError("no bot is connected to the fake gateway (did it start and identify?)")
        interaction_id = self.world.snowflake()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96)
        payload = self._interaction_payload(
            interaction_id=interaction_id,
            token=token,
            kind=kind,
            guild=guild,
            channel=channel,
            user=user,
            data=data,
            message=message,
        )
        handle = InteractionHandle(
            self,
            id=interaction_id,
            token=token,
            type=kind,
            guild=guild,
            channel_id=channel.id,
            user=user,
            payload=payload,
            source_message=message,
            deadline=deadline,
        )
        handle.parent = parent
        self.interactions[interaction_id] = handle
        self.interactions_by_token[token] = handle
        sent = asyncio.get_running_loop().create_future()

        def on_sent() -> None:
            if handle.dispatched_at is None:
                handle.dispatched_at = asyncio.get_running_loop().time()
            if not sent.done():
                sent.set_result(None)

        for conn in conns:
            conn.dispatch("INTERACTION_CREATE", payload, on_sent=on_sent)
        await asyncio.wait_for(sent, 5.0)
        return handle

    async def slash(
        self,
        guild: GuildRef,
        user: UserRef,
        command: str,
        options: Mapping[str, Any] | None = None,
        channel_id: int | None = None,
        *,
        deadline: float | None = None,
    ) -> InteractionHandle:
        """Run ``/command`` ("character create" = group/subcommand) as ``user`` would."""
        g, u = self._guild(guild), self._user(user)
        channel = self._channel(g, channel_id)
        path = command.strip().lstrip("/").split()
        definition = find_command(self._commands_for(g), path[0], where=f"for {g.name} or globally")
        self._check_can_use(g, u, channel, definition)
        data = build_command_data(
            definition, path, dict(options or {}), world=self.world, guild=g, user=u, upload=self.upload
        )
        return await self._start_interaction(APPLICATION_COMMAND, g, channel, u, data, deadline=deadline)

    async def autocomplete(
        self,
        guild: GuildRef,
        user: UserRef,
        command: str,
        options: Mapping[str, Any],
        *,
        focused: str,
        channel_id: int | None = None,
        timeout: float = 15.0,  # noqa: ASYNC109 - the harness API
    ) -> list[dict[str, Any]]:
        """Type into an autocomplete option; returns the choices the bot offered."""
        handle = await self.autocomplete_handle(guild, user, command, options, focused=focused, channel_id=channel_id)
        await handle.wait_response(timeout)
        if handle.choices is None:
            raise FakeDiscordError(f"the bot did not answer autocomplete with choices: {handle._describe()}")
        return handle.choices

    async def autocomplete_handle(
        self,
        guild: GuildRef,
        user: UserRef,
        command: str,
        options: Mapping[str, Any],
        *,
        focused: str,
        channel_id: int | None = None,
    ) -> InteractionHandle:
        """Like ``autocomplete`` but returns the handle (for latency or error checks)."""
        g, u = self._guild(guild), self._user(user)
        channel = self._channel(g, channel_id)
        path = command.strip().lstrip("/").split()
        definition = find_command(self._commands_for(g), path[0], where=f"for {g.name} or globally")
        self._check_can_use(g, u, channel, definition)
        data = build_command_data(
            definition, path, dict(options), world=self.world, guild=g, user=u, upload=self.upload, focused=focused
        )
        return await self._start_interaction(AUTOCOMPLETE, g, channel, u, data)

    async def press(
        self,
        message: FakeMessage | int,
        custom_id: str,
        user: UserRef,
        *,
        values: list[str] | None = None,
        deadline: float | None = None,
        guild: GuildRef | None = None,
    ) -> InteractionHandle:
        """Press a button (or pick ``values`` in a select menu) on a message the bot sent.

        Discord only shows an ephemeral message to the member who triggered it; pressing one as
        someone else is allowed here to play a forged or replayed interaction, which a bot must
        still check. ``guild`` replays the press from another guild (its first text channel):
        Discord would never send that, a modified client might.
        """
        msg = self.message(message if isinstance(message, int) else message.id)
        u = self._user(user)
        if msg.deleted:
            raise FakeDiscordError(f"message {msg.id} was deleted")
        if msg.guild_id is None:
            raise FakeDiscordError("the fake only supports components in guild channels")
        component = msg.find_component(custom_id)
        if component is None:
            raise FakeDiscordError(f"message {msg.id} has no component {custom_id!r}; it has {msg.custom_ids}")
        if component.get("disabled"):
            raise FakeDiscordError(f"component {custom_id!r} is disabled")
        if guild is None:
            g = self.world.guilds[msg.guild_id]
            channel = self._channel(g, msg.channel_id)
        else:
            g = self._guild(guild)
            channel = self._channel(g, None)
        member = g.members.get(u.id)
        if member is None or not self.world.channel_permissions(g, member, channel) & Perm.VIEW_CHANNEL:
            raise FakeDiscordError(f"{u.name} cannot see #{channel.name}")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component["type"]}
        if component["type"] != 2:
            data["values"] = list(values or [])
        elif values:
            raise FakeDiscordError("buttons take no values")
        return await self._start_interaction(MESSAGE_COMPONENT, g, channel, u, data, message=msg, deadline=deadline)

    async def submit_modal(
        self,
        guild: GuildRef,
        user: UserRef,
        custom_id: str,
        values: Mapping[str, Any],
        message: FakeMessage | int | None = None,
        *,
        deadline: float | None = None,
    ) -> InteractionHandle:
        """Submit the modal the bot most recently opened for ``user`` with this ``custom_id``."""
        g, u = self._guild(guild), self._user(user)
        opener = next(
            (
                h
                for h in reversed(self.interactions.values())
                if h.modal is not None and h.modal.get("custom_id") == custom_id and h.user.id == u.id
            ),
            None,
        )
        if opener is None or opener.modal is None:
            raise FakeDiscordError(f"the bot never opened a modal {custom_id!r} for {u.name}")
        components = build_modal_components(opener.modal, values)
        msg: FakeMessage | None = None
        if message is not None:
            msg = self.message(message if isinstance(message, int) else message.id)
        elif opener.source_message is not None:
            msg = opener.source_message
        channel = self._channel(g, opener.channel_id)
        data = {"custom_id": custom_id, "components": components}
        return await self._start_interaction(
            MODAL_SUBMIT, g, channel, u, data, message=msg, deadline=deadline, parent=opener
        )

    async def user_message(
        self, guild: GuildRef, user: UserRef, content: str, channel_id: int | None = None
    ) -> FakeMessage:
        """A member posts a message (MESSAGE_CREATE to the bot, with the GUILD_MESSAGES intent)."""
        g, u = self._guild(guild), self._user(user)
        channel = self._channel(g, channel_id)
        msg = FakeMessage(id=self.world.snowflake(), channel_id=channel.id, guild_id=g.id, author=u, content=content)
        msg.mentions = [
            self.world.users[int(i)] for i in re.findall(r"<@!?(\d+)>", content) if int(i) in self.world.users
        ]
        self.world.messages[msg.id] = msg
        channel.last_message_id = msg.id
        data = msg.to_dict()
        data["member"] = g.members[u.id].to_dict(with_user=False)
        self.broadcast_message_event("MESSAGE_CREATE", msg, data)
        return msg

    # --- REST pipeline -------------------------------------------------------------------------

    def rate_limit_headers(self, method: str, route: str | None) -> dict[str, str]:
        bucket = hashlib.md5(f"{method} {route}".encode()).hexdigest()[:16]
        return {
            "X-RateLimit-Limit": "10000",
            "X-RateLimit-Remaining": "9999",
            "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
            "X-RateLimit-Reset-After": "1.000",
            "X-RateLimit-Bucket": bucket,
        }

    def _response(
        self, record: RecordedRequest, status: int, body: Any, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        record.status, record.response = status, body
        all_headers = CIMultiDict[str]({"Via": "1.1 google"})  # discord.py treats a 429 without Via as a ban
        all_headers.update(headers or self.rate_limit_headers(record.method, record.route))
        if status == 204 or body is None:
            return web.Response(status=status if body is not None else 204, headers=all_headers)
        # discord.py only parses JSON when the content type is exactly "application/json".
        all_headers["Content-Type"] = "application/json"
        return web.Response(status=status, body=orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS), headers=all_headers)

    async def _read_body(self, request: web.Request) -> tuple[Any, list[RecordedFile], str | None]:
        if not request.can_read_body:
            return None, [], None
        if request.content_type == "multipart/form-data":
            body: Any = None
            files: list[RecordedFile] = []
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    continue
                if part.name == "payload_json":
                    try:
                        body = orjson.loads(await part.text())
                    except ValueError:
                        return None, files, "payload_json is not valid JSON"
                else:
                    data = bytes(await part.read(decode=False))
                    content_type = part.headers.get("Content-Type")
                    files.append(RecordedFile(part.name or "", part.filename or "", data, content_type))
            return body, files, None
        raw = await request.read()
        if not raw:
            return None, [], None
        try:
            return orjson.loads(raw), [], None
        except ValueError:
            return None, [], "The request body contains invalid JSON."

    async def _handle_api(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        method = request.method.upper()
        body, files, parse_error = await self._read_body(request)
        match = self.spec.match(path)
        route = match.template if match is not None else None
        record = RecordedRequest(method, path, route, dict(request.query), body, files, time.monotonic())
        self.requests.append(record)
        try:
            if match is None or not self.spec.has_operation(method, match.template):
                allowed = self.spec.methods(route) if route else []
                why = f"{method} {path}: not a route in Discord's OpenAPI spec"
                if allowed:
                    why += f" (the route allows {allowed})"
                self.validation_errors.append(ValidationFailure(method, path, None, body, why))
                return self._response(record, 404, {"message": "404: Not Found", "code": 0})
            operation = self.spec.operation(method, match.template)
            auth_optional = {} in operation.get("security", [{}])
            if not auth_optional and request.headers.get("Authorization") != f"Bot {self.token}":
                return self._response(record, 401, {"message": "401: Unauthorized", "code": 0})
            rule = self._take_rate_limit(method, path, route)
            if rule is not None:
                return self._rate_limited(record, rule)
            if parse_error is not None:
                return self._response(record, 400, {"message": parse_error, "code": 50109})
            if self.validate:
                error = self._validate_body(method, match.template, body)
                if error is not None:
                    self.validation_errors.append(ValidationFailure(method, path, route, body, error))
                    answer = {"code": 50035, "message": "Invalid Form Body", "errors": discord_error_tree(error)}
                    self._note_interaction_rejection(match.params, body, answer)
                    return self._response(record, 400, answer)
            handler = self._rest.handlers.get((method, match.template))
            if handler is None:
                self.unimplemented.append(record)
                return self._response(
                    record, 501, {"message": f"fake Discord does not implement {method} {route}", "code": 0}
                )
            api_request = ApiRequest(method, path, match.params, dict(request.query), body, files, record)
            try:
                status, payload = await handler(api_request)
            except ApiError as exc:
                status, payload = exc.status, exc.body
            except Exception as exc:
                # A bug in the fake, not in the bot. 503 because discord.py's HTTPClient retries
                # 500/502/504 with second-long sleeps; it raises DiscordServerError on a 503 at once.
                self.server_errors.append((record, exc))
                return self._response(record, 503, {"message": f"fake Discord crashed: {exc!r}", "code": 0})
            if self.validate_responses and status < 300 and payload is not None:
                error = self.spec.validate_response(method, match.template, status, payload)
                if error is not None:
                    self.response_errors.append(ValidationFailure(method, path, route, payload, error))
            return self._response(record, status, payload)
        finally:
            self.notify()

    def _note_interaction_rejection(self, params: Mapping[str, str], body: Any, answer: dict[str, Any]) -> None:
        """Show a refused callback or follow-up on its interaction handle, so waits fail with a reason."""
        if "interaction_token" in params:
            handle = self.interactions_by_token.get(params["interaction_token"])
            if handle is not None:
                now = asyncio.get_running_loop().time()
                kind = body.get("type") if isinstance(body, dict) else None
                handle.callbacks.append(CallbackRecord(kind, body, False, 400, answer, now, now - handle.started_at))
        elif "webhook_token" in params:
            handle = self.interactions_by_token.get(params["webhook_token"])
            if handle is not None:
                handle.webhook_errors.append((400, answer))

    def validate_recorded(self, records: list[RecordedRequest]) -> list[ValidationFailure]:
        """Check bodies already served against the spec, as `validate=True` would have checked them on arrival
        (for benchmarks, which must not time the fake's own validation)."""
        return [
            ValidationFailure(r.method, r.path, r.route, r.json, error)
            for r in records
            if r.route is not None
            and self.spec.has_operation(r.method, r.route)
            and (error := self._validate_body(r.method, r.route, r.json)) is not None
        ]

    def _validate_body(self, method: str, template: str, body: Any) -> str | None:
        if body is None:
            return "a request body is required" if self.spec.body_required(method, template) else None
        return self.spec.validate_request(method, template, body)

    def _rate_limited(self, record: RecordedRequest, rule: RateLimitRule) -> web.Response:
        self.rate_limited.append(RateLimitHit(record.method, record.path, record.route, rule.retry_after, rule.global_))
        headers = {
            "Retry-After": str(max(1, int(rule.retry_after + 0.999))),
            "X-RateLimit-Scope": "global" if rule.global_ else "user",
        }
        if rule.global_:
            headers["X-RateLimit-Global"] = "true"
        else:
            limits = self.rate_limit_headers(record.method, record.route)
            limits.update(
                {
                    "X-RateLimit-Limit": "5",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": f"{time.time() + rule.retry_after:.3f}",
                    "X-RateLimit-Reset-After": f"{rule.retry_after:.3f}",
                }
            )
            headers.update(limits)
        body = {"message": "You are being rate limited.", "retry_after": rule.retry_after, "global": rule.global_}
        return self._response(record, 429, body, headers)

    async def _handle_cdn(self, request: web.Request) -> web.Response:
        stored = self.world.files.get(int(request.match_info["attachment_id"]))
        if stored is None or stored.filename != request.match_info["filename"]:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=stored.data, content_type=stored.content_type or "application/octet-stream")
