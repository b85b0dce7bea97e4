"""REST handlers of the fake: login, command sync, interaction callbacks, webhooks, channel messages.

Each handler gets an ``ApiRequest`` (already routed, authenticated and validated) and returns
``(status, json_body)`` or raises ``ApiError`` with Discord's error code and message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .interactions import AUTOCOMPLETE, MESSAGE_COMPONENT, MODAL_SUBMIT, CallbackRecord, InteractionHandle
from .payloads import command_name, drop_nulls, normalize_components, normalize_embeds
from .world import (
    FLAG_COMPONENTS_V2,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    FLAG_SUPPRESS_EMBEDS,
    FakeChannel,
    FakeGuild,
    FakeMessage,
    Perm,
    StoredFile,
    guess_content_type,
    utcnow,
)

if TYPE_CHECKING:
    from .server import FakeDiscord, RecordedFile, RecordedRequest

MAX_CONTENT = 2000
FLAG_SUPPRESS_NOTIFICATIONS = 1 << 12


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.body: dict[str, Any] = {"message": message, "code": code}
        if errors is not None:
            self.body["errors"] = errors


def form_error(field: str, code: str, message: str) -> ApiError:
    return ApiError(400, 50035, "Invalid Form Body", {field: {"_errors": [{"code": code, "message": message}]}})


UNKNOWN_CHANNEL = (404, 10003, "Unknown Channel")
UNKNOWN_MESSAGE = (404, 10008, "Unknown Message")
UNKNOWN_WEBHOOK = (404, 10015, "Unknown Webhook")
UNKNOWN_INTERACTION = (404, 10062, "Unknown interaction")
INVALID_WEBHOOK_TOKEN = (401, 50027, "Invalid Webhook Token")
MISSING_PERMISSIONS = (403, 50013, "Missing Permissions")
ALREADY_ACKNOWLEDGED = (400, 40060, "Interaction has already been acknowledged.")


REACTION = "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}"


@dataclass
class ApiRequest:
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    json: Any
    files: list[RecordedFile]
    record: RecordedRequest

    def snowflake(self, name: str) -> int:
        return int(self.params[name])

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("1", "true")


Handler = Callable[[ApiRequest], Awaitable[tuple[int, Any]]]


class RestApi:
    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.world = fake.world
        self.handlers: dict[tuple[str, str], Handler] = {
            ("GET", "/users/@me"): self.get_me,
            ("GET", "/oauth2/applications/@me"): self.get_application,
            ("GET", "/applications/@me"): self.get_application,
            ("GET", "/gateway"): self.get_gateway,
            ("GET", "/gateway/bot"): self.get_gateway_bot,
            ("GET", "/users/{user_id}"): self.get_user,
            ("GET", "/users/@me/guilds"): self.get_my_guilds,
            ("GET", "/guilds/{guild_id}"): self.get_guild,
            ("GET", "/guilds/{guild_id}/members/{user_id}"): self.get_member,
            ("GET", "/applications/{application_id}/commands"): self.get_commands,
            ("PUT", "/applications/{application_id}/commands"): self.put_commands,
            ("GET", "/applications/{application_id}/guilds/{guild_id}/commands"): self.get_commands,
            ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands"): self.put_commands,
            ("POST", "/interactions/{interaction_id}/{interaction_token}/callback"): self.callback,
            ("POST", "/webhooks/{webhook_id}/{webhook_token}"): self.followup,
            ("GET", "/webhooks/{webhook_id}/{webhook_token}/messages/@original"): self.get_webhook_message,
            ("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/@original"): self.edit_webhook_message,
            ("DELETE", "/webhooks/{webhook_id}/{webhook_token}/messages/@original"): self.delete_webhook_message,
            ("GET", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}"): self.get_webhook_message,
            ("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}"): self.edit_webhook_message,
            ("DELETE", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}"): self.delete_webhook_message,
            ("GET", "/channels/{channel_id}"): self.get_channel,
            ("GET", "/channels/{channel_id}/messages"): self.get_channel_messages,
            ("POST", "/channels/{channel_id}/messages"): self.create_channel_message,
            ("GET", "/channels/{channel_id}/messages/{message_id}"): self.get_channel_message,
            ("PATCH", "/channels/{channel_id}/messages/{message_id}"): self.edit_channel_message,
            ("DELETE", "/channels/{channel_id}/messages/{message_id}"): self.delete_channel_message,
            ("POST", "/channels/{channel_id}/typing"): self.typing,
            ("PUT", f"{REACTION}/@me"): self.add_reaction,
            ("DELETE", f"{REACTION}/@me"): self.remove_reaction,
        }

    # --- login and gateway discovery -------------------------------------------------------------

    async def get_me(self, req: ApiRequest) -> tuple[int, Any]:
        return 200, self.fake.bot_user_payload()

    async def get_application(self, req: ApiRequest) -> tuple[int, Any]:
        fake = self.fake
        return 200, {
            "id": str(fake.application_id),
            "name": fake.bot_user.name,
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "bot": fake.bot_user.to_dict(),
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": fake.verify_key,
            "flags": fake.application_flags,
            "flags_new": str(fake.application_flags),
            "owner": fake.app_owner.to_dict(),
            "team": None,
            "rpc_origins": [],
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "tags": [],
            "approximate_guild_count": len(self.world.guilds),
            "approximate_user_install_count": 0,
            "approximate_user_authorization_count": 0,
            "explicit_content_filter": 0,
            "eligible_oauth2_scopes": [],
            "integration_types_config": {"0": {}},
            "hook": True,
            "is_monetized": False,
            "is_verified": False,
            "is_discoverable": False,
            "storefront_available": False,
        }

    async def get_gateway(self, req: ApiRequest) -> tuple[int, Any]:
        return 200, {"url": str(self.fake.ws_url)}

    async def get_gateway_bot(self, req: ApiRequest) -> tuple[int, Any]:
        return 200, {
            "url": str(self.fake.ws_url),
            "shards": self.fake.shard_count,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1},
        }

    async def get_user(self, req: ApiRequest) -> tuple[int, Any]:
        user = self.world.users.get(req.snowflake("user_id"))
        if user is None:
            raise ApiError(404, 10013, "Unknown User")
        return 200, user.to_dict()

    async def get_my_guilds(self, req: ApiRequest) -> tuple[int, Any]:
        """The bot's servers by id, paged with `after`/`before`/`limit`, each with the bot's permissions there."""
        bot_id = self.fake.bot_user.id
        guilds = sorted((g for g in self.world.guilds.values() if bot_id in g.members), key=lambda g: g.id)
        if "after" in req.query:
            guilds = [g for g in guilds if g.id > int(req.query["after"])]
        if "before" in req.query:
            guilds = [g for g in guilds if g.id < int(req.query["before"])]
        limit = int(req.query.get("limit", 200))
        return 200, [
            {
                "id": str(g.id),
                "name": g.name,
                "icon": None,
                "banner": None,
                "owner": g.owner_id == bot_id,
                "permissions": str(self.world.permissions_for(g, bot_id)),
                "features": [],
            }
            for g in guilds[:limit]
        ]

    def _guild(self, req: ApiRequest) -> FakeGuild:
        guild = self.world.guilds.get(req.snowflake("guild_id"))
        if guild is None:
            raise ApiError(404, 10004, "Unknown Guild")
        return guild

    async def get_guild(self, req: ApiRequest) -> tuple[int, Any]:
        return 200, self._guild(req).to_rest_dict()

    async def get_member(self, req: ApiRequest) -> tuple[int, Any]:
        member = self._guild(req).members.get(req.snowflake("user_id"))
        if member is None:
            raise ApiError(404, 10007, "Unknown Member")
        return 200, member.to_dict()

    # --- application commands --------------------------------------------------------------------

    def _command_scope(self, req: ApiRequest) -> tuple[list[dict[str, Any]], int | None]:
        if req.snowflake("application_id") != self.fake.application_id:
            raise ApiError(403, 50001, "Missing Access")
        if "guild_id" not in req.params:
            return self.fake.global_commands, None
        guild = self._guild(req)
        return self.fake.guild_commands.setdefault(guild.id, []), guild.id

    async def get_commands(self, req: ApiRequest) -> tuple[int, Any]:
        commands, _ = self._command_scope(req)
        return 200, commands

    async def put_commands(self, req: ApiRequest) -> tuple[int, Any]:
        existing, guild_id = self._command_scope(req)
        body: list[dict[str, Any]] = req.json or []
        seen: set[tuple[str, int]] = set()
        for index, command in enumerate(body):
            key = (command["name"], command.get("type") or 1)
            if key in seen:
                raise form_error(
                    str(index), "APPLICATION_COMMANDS_DUPLICATE_NAME", "Application command names must be unique"
                )
            seen.add(key)
        by_key = {(c["name"], c["type"]): c for c in existing}
        stored = [self._stored_command(c, guild_id, by_key) for c in body]
        existing[:] = stored
        return 200, stored

    def _stored_command(
        self, command: dict[str, Any], guild_id: int | None, previous: dict[tuple[str, int], dict[str, Any]]
    ) -> dict[str, Any]:
        """A synced command as Discord returns it: ids, version, permissions as a string, no nulls."""
        kind = command.get("type") or 1
        old = previous.get((command["name"], kind))
        permissions = command.get("default_member_permissions")
        stored: dict[str, Any] = {
            "id": old["id"] if old else str(self.world.snowflake()),
            "application_id": str(self.fake.application_id),
            "version": str(self.world.snowflake()),
            "default_member_permissions": None if permissions is None else str(int(permissions)),
            "type": kind,
            "name": command["name"],
            "description": command.get("description") or "",
            "dm_permission": command.get("dm_permission", True),
            "contexts": command.get("contexts"),
            "integration_types": command.get("integration_types") or [0],
            "nsfw": bool(command.get("nsfw", False)),
        }
        for key in ("name_localizations", "description_localizations"):
            if command.get(key):
                stored[key] = command[key]
        if command.get("options"):
            stored["options"] = [drop_nulls(o) for o in command["options"]]
        if guild_id is not None:
            stored["guild_id"] = str(guild_id)
            del stored["dm_permission"]
        return stored

    # --- interaction callbacks -------------------------------------------------------------------

    async def callback(self, req: ApiRequest) -> tuple[int, Any]:
        fake = self.fake
        handle = fake.interactions.get(req.snowflake("interaction_id"))
        body: dict[str, Any] = req.json or {}
        kind = body.get("type")
        now = _loop_time()
        if handle is None or handle.token != req.params["interaction_token"]:
            raise ApiError(*UNKNOWN_INTERACTION)
        record = CallbackRecord(
            type=kind,
            data=body,
            accepted=False,
            status=0,
            error=None,
            at=now,
            latency=now - handle.started_at,
        )
        handle.callbacks.append(record)
        try:
            if handle.acknowledged:
                raise ApiError(*ALREADY_ACKNOWLEDGED)
            if handle.is_past_deadline(now):
                raise ApiError(*UNKNOWN_INTERACTION)
            result = self._apply_callback(handle, body, req.files)
        except ApiError as exc:
            record.status, record.error = exc.status, exc.body
            raise
        record.accepted, record.status = True, 200
        if not req.flag("with_response"):
            return 204, None
        return 200, result

    def _apply_callback(self, handle: InteractionHandle, body: dict[str, Any], files: list[RecordedFile]) -> Any:
        kind = body.get("type")
        data: dict[str, Any] = body.get("data") or {}
        allowed = {
            AUTOCOMPLETE: {8},
            MESSAGE_COMPONENT: {4, 5, 6, 7, 9},
            MODAL_SUBMIT: {4, 5, 6, 7} if handle.source_message is not None else {4, 5},
        }.get(handle.type, {4, 5, 9})
        if kind not in allowed:
            raise form_error("type", "INTERACTION_RESPONSE_TYPE_INVALID", f"Callback type {kind} is not valid here")
        info: dict[str, Any] = {"id": str(handle.id), "type": handle.type}
        result: dict[str, Any] = {"interaction": info}
        guild = handle.guild
        if kind == 4:
            message = self._interaction_message(handle, data, files, flags=_creatable_flags(data))
            handle.original = message
            info.update(response_message_id=str(message.id), response_message_loading=False)
            info["response_message_ephemeral"] = message.ephemeral
            result["resource"] = {"type": 4, "message": message.to_dict()}
        elif kind == 5:
            flags = FLAG_LOADING | ((data.get("flags") or 0) & FLAG_EPHEMERAL)
            message = self._interaction_message(handle, {}, [], flags=flags, allow_empty=True)
            handle.original = message
            info.update(response_message_id=str(message.id), response_message_loading=True)
            info["response_message_ephemeral"] = message.ephemeral
        elif kind == 6:
            handle.original = handle.source_message
        elif kind == 7:
            source = handle.source_message
            if source is None:
                raise form_error("type", "INTERACTION_RESPONSE_TYPE_INVALID", "No message to update")
            self._edit_message(source, data, files, guild)
            handle.original = source
            info.update(response_message_id=str(source.id), response_message_loading=False)
            info["response_message_ephemeral"] = source.ephemeral
            result["resource"] = {"type": 7, "message": source.to_dict()}
        elif kind == 8:
            handle.choices = list(data.get("choices") or [])
        elif kind == 9:
            handle.modal = data
        return result

    # --- interaction webhooks --------------------------------------------------------------------

    def _webhook_handle(self, req: ApiRequest) -> InteractionHandle:
        if req.snowflake("webhook_id") != self.fake.application_id:
            raise ApiError(*UNKNOWN_WEBHOOK)
        handle = self.fake.interactions_by_token.get(req.params["webhook_token"])
        if handle is None or handle.is_token_expired(_loop_time()):
            raise ApiError(*INVALID_WEBHOOK_TOKEN)
        return handle

    def _webhook_target(self, req: ApiRequest, handle: InteractionHandle) -> FakeMessage:
        if "message_id" not in req.params:  # @original
            target = handle.original
        else:
            wanted = req.snowflake("message_id")
            candidates = [handle.original, *handle.followups]
            target = next((m for m in candidates if m is not None and m.id == wanted), None)
        if target is None or target.deleted:
            raise ApiError(*UNKNOWN_MESSAGE)
        return target

    async def _guarded(
        self, req: ApiRequest, action: Callable[[InteractionHandle], tuple[int, Any]]
    ) -> tuple[int, Any]:
        """Run a webhook action, recording refusals on the interaction handle."""
        handle: InteractionHandle | None = None
        try:
            handle = self._webhook_handle(req)
            return action(handle)
        except ApiError as exc:
            if handle is None:
                handle = self.fake.interactions_by_token.get(req.params.get("webhook_token", ""))
            if handle is not None:
                handle.webhook_errors.append((exc.status, exc.body))
            raise

    async def followup(self, req: ApiRequest) -> tuple[int, Any]:
        def action(handle: InteractionHandle) -> tuple[int, Any]:
            if not handle.acknowledged:
                raise ApiError(*UNKNOWN_WEBHOOK)  # the interaction webhook exists once acknowledged
            data: dict[str, Any] = req.json or {}
            original = handle.original
            first_after_defer = (
                original is not None and original.loading and not original.deleted and handle.callback_type == 5
            )
            if first_after_defer and original is not None:
                # The first follow-up after a "thinking" deferral replaces the loading message.
                self._edit_message(original, data, req.files, handle.guild)
                message = original
            else:
                message = self._interaction_message(
                    handle, data, req.files, flags=_creatable_flags(data), followup=True
                )
            handle.followups.append(message)
            handle.updates += 1
            return (200, message.to_dict()) if req.flag("wait") else (204, None)

        return await self._guarded(req, action)

    async def get_webhook_message(self, req: ApiRequest) -> tuple[int, Any]:
        return await self._guarded(req, lambda handle: (200, self._webhook_target(req, handle).to_dict()))

    async def edit_webhook_message(self, req: ApiRequest) -> tuple[int, Any]:
        def action(handle: InteractionHandle) -> tuple[int, Any]:
            target = self._webhook_target(req, handle)
            self._edit_message(target, req.json or {}, req.files, handle.guild)
            handle.updates += 1
            return 200, target.to_dict()

        return await self._guarded(req, action)

    async def delete_webhook_message(self, req: ApiRequest) -> tuple[int, Any]:
        def action(handle: InteractionHandle) -> tuple[int, Any]:
            target = self._webhook_target(req, handle)
            self._delete_message(target)
            handle.updates += 1
            return 204, None

        return await self._guarded(req, action)

    def _interaction_message(
        self,
        handle: InteractionHandle,
        data: dict[str, Any],
        files: list[RecordedFile],
        *,
        flags: int,
        followup: bool = False,
        allow_empty: bool = False,
    ) -> FakeMessage:
        fake = self.fake
        message = FakeMessage(
            id=self.world.snowflake(),
            channel_id=handle.channel_id,
            guild_id=handle.guild.id,
            author=fake.bot_user,
            type=20 if handle.type == 2 else 0,
            webhook_id=fake.application_id,
            application_id=fake.application_id,
            interaction_id=handle.id,
            interaction_metadata=self._interaction_metadata(handle, followup=followup),
        )
        if handle.type == 2:
            message.interaction_legacy = {
                "id": str(handle.id),
                "type": 2,
                "name": command_name(handle.payload["data"]),
                "user": handle.user.to_dict(),
            }
        message.flags = flags
        self._fill_message(message, data, files, handle.guild, creating=True, allow_empty=allow_empty)
        self._store_message(message)
        return message

    def _interaction_metadata(self, handle: InteractionHandle, *, followup: bool = False) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "id": str(handle.id),
            "type": handle.type,
            "user": handle.user.to_dict(),
            "authorizing_integration_owners": {"0": str(handle.guild.id)},
        }
        if followup and handle.original is not None:
            metadata["original_response_message_id"] = str(handle.original.id)
        if handle.type == 2:
            metadata["name"] = command_name(handle.payload["data"])
            metadata["command_type"] = handle.payload["data"].get("type", 1)
        elif handle.type == MESSAGE_COMPONENT and handle.source_message is not None:
            metadata["interacted_message_id"] = str(handle.source_message.id)
        elif handle.type == MODAL_SUBMIT and handle.parent is not None:
            metadata["triggering_interaction_metadata"] = self._interaction_metadata(handle.parent)
        return metadata

    # --- channels and channel messages -----------------------------------------------------------

    def _visible_channel(self, req: ApiRequest) -> tuple[FakeGuild, FakeChannel, int]:
        """The channel if the bot can see it, plus the bot's permissions there; else Unknown Channel."""
        channel = self.world.channels.get(req.snowflake("channel_id"))
        guild = self.world.guild_of_channel(channel.id) if channel is not None else None
        if channel is None or guild is None:
            raise ApiError(*UNKNOWN_CHANNEL)
        perms = self.world.permissions_for(guild, self.fake.bot_user.id, channel)
        if not perms & Perm.VIEW_CHANNEL:
            raise ApiError(*UNKNOWN_CHANNEL)
        return guild, channel, perms

    def _channel_message(self, req: ApiRequest, channel: FakeChannel) -> FakeMessage:
        message = self.world.messages.get(req.snowflake("message_id"))
        if message is None or message.channel_id != channel.id or message.deleted or message.ephemeral:
            raise ApiError(*UNKNOWN_MESSAGE)
        return message

    async def get_channel(self, req: ApiRequest) -> tuple[int, Any]:
        _, channel, _ = self._visible_channel(req)
        return 200, channel.to_dict()

    async def typing(self, req: ApiRequest) -> tuple[int, Any]:
        self._visible_channel(req)
        return 204, None

    async def get_channel_messages(self, req: ApiRequest) -> tuple[int, Any]:
        _, channel, perms = self._visible_channel(req)
        if not perms & Perm.READ_MESSAGE_HISTORY:
            return 200, []
        messages = [
            m
            for m in self.fake.channel_messages(channel.id, include_ephemeral=False)
            if not m.deleted
            and ("before" not in req.query or m.id < int(req.query["before"]))
            and ("after" not in req.query or m.id > int(req.query["after"]))
        ]
        limit = int(req.query.get("limit", 50))
        newest_first = sorted(messages, key=lambda m: m.id, reverse=True)
        return 200, [m.to_dict() for m in newest_first[:limit]]

    async def create_channel_message(self, req: ApiRequest) -> tuple[int, Any]:
        guild, channel, perms = self._visible_channel(req)
        if not perms & Perm.SEND_MESSAGES:
            raise ApiError(*MISSING_PERMISSIONS)
        if req.files and not perms & Perm.ATTACH_FILES:
            raise ApiError(*MISSING_PERMISSIONS)
        data: dict[str, Any] = req.json or {}
        nonce = str(data["nonce"]) if data.get("nonce") is not None else None
        if nonce and data.get("enforce_nonce"):
            # Discord: the same author and nonce within a few minutes returns the first message, no new one.
            earlier = self.fake.nonces.get((self.fake.bot_user.id, nonce))
            if earlier is not None and not earlier.deleted and utcnow() - earlier.timestamp < self.fake.nonce_window:
                return 200, earlier.to_dict()
        message = FakeMessage(
            id=self.world.snowflake(), channel_id=channel.id, guild_id=guild.id, author=self.fake.bot_user
        )
        reference = data.get("message_reference")
        if reference and reference.get("message_id"):
            target = self.world.messages.get(int(reference["message_id"]))
            if target is None or target.deleted or target.channel_id != channel.id:
                if reference.get("fail_if_not_exists", True):
                    raise form_error("message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
            else:
                message.reply_to, message.type = target.id, 19
        message.flags = _creatable_flags(data) & ~FLAG_EPHEMERAL  # only interaction responses can be ephemeral
        message.tts = bool(data.get("tts"))
        self._fill_message(message, data, req.files, guild, creating=True)
        self._store_message(message)
        if nonce:  # only a message that was really created answers for its nonce later
            self.fake.nonces[(self.fake.bot_user.id, nonce)] = message
        return 200, message.to_dict()

    async def get_channel_message(self, req: ApiRequest) -> tuple[int, Any]:
        _, channel, perms = self._visible_channel(req)
        if not perms & Perm.READ_MESSAGE_HISTORY:
            raise ApiError(403, 50001, "Missing Access")
        return 200, self._channel_message(req, channel).to_dict()

    async def edit_channel_message(self, req: ApiRequest) -> tuple[int, Any]:
        guild, channel, _ = self._visible_channel(req)
        message = self._channel_message(req, channel)
        if message.author.id != self.fake.bot_user.id:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        self._edit_message(message, req.json or {}, req.files, guild)
        return 200, message.to_dict()

    async def delete_channel_message(self, req: ApiRequest) -> tuple[int, Any]:
        _, channel, perms = self._visible_channel(req)
        message = self._channel_message(req, channel)
        if message.author.id != self.fake.bot_user.id and not perms & Perm.MANAGE_MESSAGES:
            raise ApiError(*MISSING_PERMISSIONS)
        self._delete_message(message)
        return 204, None

    async def add_reaction(self, req: ApiRequest) -> tuple[int, Any]:
        _, channel, perms = self._visible_channel(req)
        message = self._channel_message(req, channel)
        if not perms & Perm.READ_MESSAGE_HISTORY or not perms & Perm.ADD_REACTIONS:
            raise ApiError(*MISSING_PERMISSIONS)
        emoji = req.params["emoji_name"]
        if emoji not in message.reactions:
            message.reactions.append(emoji)
        return 204, None

    async def remove_reaction(self, req: ApiRequest) -> tuple[int, Any]:
        _, channel, _ = self._visible_channel(req)
        message = self._channel_message(req, channel)
        if req.params["emoji_name"] in message.reactions:
            message.reactions.remove(req.params["emoji_name"])
        return 204, None

    # --- message bodies --------------------------------------------------------------------------

    def _store_message(self, message: FakeMessage) -> None:
        self.world.messages[message.id] = message
        channel = self.world.channels.get(message.channel_id)
        if channel is not None and not message.ephemeral:
            channel.last_message_id = message.id
        self.fake.broadcast_message_event("MESSAGE_CREATE", message, message.to_dict())

    def _delete_message(self, message: FakeMessage) -> None:
        message.deleted = True
        data = {"id": str(message.id), "channel_id": str(message.channel_id)}
        if message.guild_id is not None:
            data["guild_id"] = str(message.guild_id)
        self.fake.broadcast_message_event("MESSAGE_DELETE", message, data)

    def _edit_message(
        self, message: FakeMessage, data: dict[str, Any], files: list[RecordedFile], guild: FakeGuild
    ) -> None:
        was_loading = message.loading
        if not was_loading:
            message.history.append(message.snapshot())
        if "flags" in data and data["flags"] is not None:
            changeable = FLAG_SUPPRESS_EMBEDS | FLAG_COMPONENTS_V2
            message.flags = (message.flags & ~changeable) | (int(data["flags"]) & changeable)
        message.flags &= ~FLAG_LOADING
        self._fill_message(message, data, files, guild, creating=was_loading)
        if not was_loading:  # filling in a deferred response is not an edit to the member
            message.edits += 1
            message.edited_at = utcnow()
        self.fake.broadcast_message_event("MESSAGE_UPDATE", message, message.to_dict())

    def _fill_message(
        self,
        message: FakeMessage,
        data: dict[str, Any],
        files: list[RecordedFile],
        guild: FakeGuild,
        *,
        creating: bool,
        allow_empty: bool = False,
    ) -> None:
        """Apply a create/edit body like Discord: on an edit, absent fields stay and null clears."""

        def pick(name: str, current: Any, empty: Any) -> Any:
            if name in data:
                return data[name] or empty
            return empty if creating else current

        content: str = pick("content", message.content, "")
        if len(content) > MAX_CONTENT:
            raise form_error("content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length.")
        stored = self._attachments(message, data, files, guild)
        embeds: list[dict[str, Any]] = pick("embeds", message.embeds, [])
        if "embeds" in data:
            embeds = normalize_embeds(embeds, stored)
        components: list[dict[str, Any]] = pick("components", message.components, [])
        if "components" in data:
            components = normalize_components(components, stored, self.world.snowflake)
        flags = message.flags | ((data.get("flags") or 0) & FLAG_COMPONENTS_V2)
        if flags & FLAG_COMPONENTS_V2 and (content or embeds):
            raise form_error(
                "content",
                "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
                "The 'content' and 'embeds' fields cannot be used when using components v2",
            )
        has_anything = content or embeds or components or stored or data.get("sticker_ids") or data.get("poll")
        if not has_anything and not allow_empty:
            raise ApiError(400, 50006, "Cannot send an empty message")
        message.content, message.embeds, message.components, message.files = content, embeds, components, stored
        message.flags = flags

    def _attachments(
        self, message: FakeMessage, data: dict[str, Any], files: list[RecordedFile], guild: FakeGuild
    ) -> list[StoredFile]:
        """Existing attachments kept plus new uploads, following the body's ``attachments`` list."""
        uploads: dict[int, RecordedFile] = {}
        for index, file in enumerate(files):
            if len(file.data) > guild.upload_limit:
                raise ApiError(413, 40005, "Request entity too large")
            number = file.field[6:-1] if file.field.startswith("files[") else ""
            uploads[int(number) if number.isdigit() else index] = file

        def store(file: RecordedFile, entry: dict[str, Any]) -> StoredFile:
            filename = entry.get("filename") or file.filename
            return self.fake.store_file(
                message.channel_id,
                filename,
                file.data,
                guess_content_type(filename),
                description=entry.get("description"),
                ephemeral=message.ephemeral,
            )

        entries = data.get("attachments")
        if entries is None:
            return message.files + [store(f, {}) for f in uploads.values()]
        kept_by_id = {f.id: f for f in message.files}
        result: list[StoredFile] = []
        used: set[int] = set()
        for position, entry in enumerate(entries):
            ident = int(entry["id"])
            if ident in kept_by_id:
                result.append(kept_by_id[ident])
            elif ident in uploads:
                result.append(store(uploads[ident], entry))
                used.add(ident)
            else:
                raise form_error(f"attachments.{position}.id", "ATTACHMENT_NOT_FOUND", "Unknown attachment")
        result += [store(f, {}) for i, f in uploads.items() if i not in used]
        return result


def _creatable_flags(data: dict[str, Any]) -> int:
    """The message flags a bot may set when creating a message; Discord ignores the rest."""
    allowed = FLAG_SUPPRESS_EMBEDS | FLAG_EPHEMERAL | FLAG_SUPPRESS_NOTIFICATIONS | FLAG_COMPONENTS_V2
    return int(data.get("flags") or 0) & allowed


def _loop_time() -> float:
    return asyncio.get_running_loop().time()
