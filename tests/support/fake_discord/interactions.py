"""Interactions as a member's Discord client would send them, and the handle a test watches.

``build_command_data`` turns ``("character create", {"name": "Ava"})`` into the ``data`` of an
APPLICATION_COMMAND interaction, using the command definitions the bot synced so option types,
nesting and ``resolved`` are what Discord would send. It refuses what a real client would not
let a member send (unknown command or option, missing required option, value not in choices).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .world import FakeChannel, FakeFile, FakeGuild, FakeMessage, FakeRole, FakeUser, World

if TYPE_CHECKING:
    from .server import FakeDiscord


class FakeDiscordError(Exception):
    """The test asked for something a member's Discord client could not do."""


class CommandUnavailable(FakeDiscordError):
    """The member may not use this command (``default_member_permissions``, contexts)."""


# Interaction types and application command option types.
PING, APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 1, 2, 3, 4, 5
SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = 3, 4, 5, 6, 7, 8, 9, 10, 11
OPTION_TYPE_NAMES = {
    1: "subcommand",
    2: "subcommand group",
    3: "string",
    4: "integer",
    5: "boolean",
    6: "user",
    7: "channel",
    8: "role",
    9: "mentionable",
    10: "number",
    11: "attachment",
}

Uploader = Callable[[bytes, str, "str | None"], dict[str, Any]]


@dataclass
class CallbackRecord:
    """One POST to ``/interactions/{id}/{token}/callback``, accepted or not."""

    type: int | None
    data: dict[str, Any] | None
    accepted: bool
    status: int
    error: dict[str, Any] | None
    at: float  # event loop time
    latency: float  # seconds since INTERACTION_CREATE was sent


class InteractionHandle:
    """What a test sees of one interaction it started."""

    def __init__(
        self,
        fake: FakeDiscord,
        *,
        id: int,
        token: str,
        type: int,
        guild: FakeGuild,
        channel_id: int,
        user: FakeUser,
        payload: dict[str, Any],
        source_message: FakeMessage | None = None,
        deadline: float | None = None,
    ) -> None:
        self._fake = fake
        self.id = id
        self.token = token
        self.type = type
        self.guild = guild
        self.channel_id = channel_id
        self.user = user
        self.payload = payload
        self.source_message = source_message  # the message a pressed component is on
        self.parent: InteractionHandle | None = None  # for a modal submit: the interaction that opened it
        self.deadline = deadline  # seconds; None means fake.interaction_deadline
        self.token_lifetime: float | None = None  # seconds; None means fake.token_lifetime
        self.created_at = asyncio.get_running_loop().time()
        self.dispatched_at: float | None = None
        self.callbacks: list[CallbackRecord] = []
        self.original: FakeMessage | None = None
        self.followups: list[FakeMessage] = []
        self.choices: list[dict[str, Any]] | None = None  # autocomplete result
        self.modal: dict[str, Any] | None = None  # modal the bot opened
        self.webhook_errors: list[tuple[int, dict[str, Any]]] = []  # rejected follow-up/edit calls
        self.updates = 0  # edits of @original, follow-ups and deletions after the first callback

    def __repr__(self) -> str:
        return f"<InteractionHandle id={self.id} type={self.type} callback={self.callback_type}>"

    # --- timing --------------------------------------------------------------------------------

    @property
    def started_at(self) -> float:
        """When the interaction reached the bot (its INTERACTION_CREATE was sent), in the loop's time."""
        return self.dispatched_at if self.dispatched_at is not None else self.created_at

    def effective_deadline(self) -> float:
        return self._fake.interaction_deadline if self.deadline is None else self.deadline

    def effective_token_lifetime(self) -> float:
        return self._fake.token_lifetime if self.token_lifetime is None else self.token_lifetime

    def is_past_deadline(self, now: float) -> bool:
        return now - self.started_at > self.effective_deadline()

    def is_token_expired(self, now: float) -> bool:
        return now - self.started_at > self.effective_token_lifetime()

    def expire_token(self) -> None:
        """Make the interaction token invalid now, as if 15 minutes had passed."""
        self.token_lifetime = -1.0

    # --- state ---------------------------------------------------------------------------------

    @property
    def first_callback(self) -> CallbackRecord | None:
        accepted = [c for c in self.callbacks if c.accepted]
        if accepted:
            return accepted[0]
        return self.callbacks[0] if self.callbacks else None

    @property
    def acknowledged(self) -> bool:
        return any(c.accepted for c in self.callbacks)

    @property
    def timed_out(self) -> bool:
        """True when no callback was accepted in time ("The application did not respond")."""
        first = next((c for c in self.callbacks if c.accepted), None)
        if first is not None:
            return False
        return self.is_past_deadline(asyncio.get_running_loop().time())

    @property
    def ack_latency(self) -> float:
        """Seconds from INTERACTION_CREATE being sent to the first callback arriving."""
        if not self.callbacks:
            raise FakeDiscordError(f"{self!r} has no callback yet; await wait_response() first")
        return self.callbacks[0].latency

    @property
    def callback_type(self) -> int | None:
        first = self.first_callback
        return None if first is None else first.type

    @property
    def callback_status(self) -> int | None:
        """HTTP status the fake gave the first callback (200, or 400/404 when refused)."""
        first = self.first_callback
        return None if first is None else first.status

    @property
    def ephemeral(self) -> bool:
        first = self.first_callback
        if first is None or first.data is None:
            return False
        flags = (first.data.get("data") or {}).get("flags") or 0
        return bool(flags & 64)

    @property
    def settled(self) -> bool:
        first = next((c for c in self.callbacks if c.accepted), None)
        if first is None:
            return False
        if first.type in (4, 7, 8, 9):
            return True
        return self.updates > 0

    @property
    def message(self) -> FakeMessage | None:
        """The original response (for component interactions: the message the component is on)."""
        return self.original

    @property
    def result(self) -> FakeMessage | None:
        """The visible result: the original response once it has content, else the last follow-up."""
        original = self.original
        if original is not None and not original.loading and not original.deleted:
            return original
        if self.followups:
            return self.followups[-1]
        return original

    @property
    def content(self) -> str:
        result = self.result
        return "" if result is None else result.content

    @property
    def embeds(self) -> list[dict[str, Any]]:
        result = self.result
        return [] if result is None else result.embeds

    @property
    def components(self) -> list[dict[str, Any]]:
        result = self.result
        return [] if result is None else result.components

    @property
    def attachments(self) -> list[FakeFile]:
        result = self.result
        return [] if result is None else result.attachments

    # --- waiting -------------------------------------------------------------------------------

    async def wait_response(self, timeout: float = 15.0) -> CallbackRecord:  # noqa: ASYNC109 - the harness API
        """Wait until the bot called back (accepted or rejected); returns that callback."""
        await self._fake.wait_until(lambda: bool(self.callbacks), timeout, f"a callback for {self!r}", poll=None)
        return self.callbacks[0]

    async def wait_settled(self, timeout: float = 15.0) -> InteractionHandle:  # noqa: ASYNC109 - the harness API
        """Wait for a final visible state: a message/update/choices/modal, or a deferral plus an edit
        of the original response or a follow-up."""
        await self._fake.wait_until(
            lambda: self.settled, timeout, f"{self!r} to settle ({self._describe()})", poll=None
        )
        return self

    def _describe(self) -> str:
        calls = [f"{c.type}:{c.status}" for c in self.callbacks] or ["none"]
        errors = [f"{status} {body.get('message')} {body.get('errors', '')}" for status, body in self.webhook_errors]
        rejected = [f"{c.status} {c.error}" for c in self.callbacks if not c.accepted]
        if rejected:
            calls.append(f"rejected: {rejected}")
        return f"callbacks {', '.join(calls)}; updates {self.updates}; webhook errors {errors or 'none'}"


# --- building APPLICATION_COMMAND / AUTOCOMPLETE data --------------------------------------------


def _describe_options(options: list[dict[str, Any]]) -> str:
    return ", ".join(f"{o['name']} ({OPTION_TYPE_NAMES.get(o['type'], o['type'])})" for o in options) or "none"


def build_command_data(
    command: dict[str, Any],
    path: list[str],
    values: Mapping[str, Any],
    *,
    world: World,
    guild: FakeGuild,
    user: FakeUser,
    upload: Uploader,
    focused: str | None = None,
) -> dict[str, Any]:
    """The ``data`` object of a slash command (or, with ``focused``, an autocomplete) interaction."""
    full_name = " ".join(path)
    data: dict[str, Any] = {"id": command["id"], "name": command["name"], "type": command.get("type", 1)}
    if command.get("guild_id"):
        data["guild_id"] = command["guild_id"]

    # Walk down subcommand groups and subcommands; the leaf's options take the values.
    definitions: list[dict[str, Any]] = command.get("options") or []
    container: list[dict[str, Any]] = []
    data["options"] = container
    for name in path[1:]:
        sub = next(
            (o for o in definitions if o["name"] == name and o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP)), None
        )
        if sub is None:
            subs = [o["name"] for o in definitions if o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP)]
            raise FakeDiscordError(f"/{full_name}: no subcommand or group {name!r}; the bot synced {subs or 'none'}")
        node: dict[str, Any] = {"type": sub["type"], "name": name, "options": []}
        container.append(node)
        container = node["options"]
        definitions = sub.get("options") or []
    if any(o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP) for o in definitions):
        subs = [o["name"] for o in definitions]
        raise FakeDiscordError(f"/{full_name} is a group; Discord only runs one of its subcommands: {subs}")

    resolved: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        option = next((o for o in definitions if o["name"] == name), None)
        if option is None:
            raise FakeDiscordError(
                f"/{full_name} has no option {name!r}; synced options: {_describe_options(definitions)}"
            )
        entry: dict[str, Any] = {"name": name, "type": option["type"]}
        if name == focused:
            if not option.get("autocomplete"):
                raise FakeDiscordError(f"/{full_name} option {name!r} has no autocomplete")
            entry["value"] = str(value)  # what the member has typed so far
            entry["focused"] = True
        else:
            entry["value"] = _option_value(
                full_name=full_name,
                option=option,
                value=value,
                world=world,
                guild=guild,
                user=user,
                upload=upload,
                resolved=resolved,
            )
        container.append(entry)

    if focused is None:
        missing = [o["name"] for o in definitions if o.get("required") and o["name"] not in values]
        if missing:
            raise FakeDiscordError(f"/{full_name}: required option(s) missing: {missing}")
        if resolved:
            data["resolved"] = resolved
    elif focused not in values:
        raise FakeDiscordError(f"/{full_name}: the focused option {focused!r} needs a value (what was typed)")
    if not data["options"]:
        del data["options"]
    return data


def _option_value(
    *,
    full_name: str,
    option: dict[str, Any],
    value: Any,
    world: World,
    guild: FakeGuild,
    user: FakeUser,
    upload: Uploader,
    resolved: dict[str, dict[str, Any]],
) -> Any:
    kind = option["type"]
    label = f"/{full_name} option {option['name']!r} ({OPTION_TYPE_NAMES.get(kind, kind)})"

    def bad(why: str) -> FakeDiscordError:
        return FakeDiscordError(f"{label}: {why}, got {value!r}")

    if kind == STRING:
        if not isinstance(value, str):
            raise bad("needs a str")
        if len(value) < option.get("min_length", 0) or len(value) > option.get("max_length", 6000):
            raise bad("length outside min_length/max_length")
    elif kind == INTEGER:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("needs an int")
    elif kind == NUMBER:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("needs a number")
        value = float(value)
    elif kind == BOOLEAN and not isinstance(value, bool):
        raise bad("needs a bool")
    if kind in (INTEGER, NUMBER):
        if "min_value" in option and value < option["min_value"]:
            raise bad(f"below min_value {option['min_value']}")
        if "max_value" in option and value > option["max_value"]:
            raise bad(f"above max_value {option['max_value']}")
    if kind in (STRING, INTEGER, NUMBER, BOOLEAN):
        choices = option.get("choices")
        if choices and value not in [c["value"] for c in choices]:
            raise bad(f"must be one of {[c['value'] for c in choices]}")
        return value

    if kind == USER or (kind == MENTIONABLE and isinstance(value, FakeUser)):
        target = world.users.get(value) if isinstance(value, int) else value
        if not isinstance(target, FakeUser):
            raise bad("needs a FakeUser or a user id")
        resolved.setdefault("users", {})[str(target.id)] = target.to_dict()
        member = guild.members.get(target.id)
        if member is not None:
            member_data = member.to_dict(with_user=False)
            member_data["permissions"] = str(world.base_permissions(guild, member))
            resolved.setdefault("members", {})[str(target.id)] = member_data
        return str(target.id)
    if kind in (ROLE, MENTIONABLE):
        role = guild.roles.get(value) if isinstance(value, int) else value
        if not isinstance(role, FakeRole) or role.guild_id != guild.id:
            raise bad("needs a FakeRole (or role id) of this guild")
        resolved.setdefault("roles", {})[str(role.id)] = role.to_dict()
        return str(role.id)
    if kind == CHANNEL:
        channel = world.channels.get(value) if isinstance(value, int) else value
        if not isinstance(channel, FakeChannel) or channel.guild_id != guild.id:
            raise bad("needs a channel (or channel id) of this guild")
        allowed_types = option.get("channel_types")
        if allowed_types and channel.type not in allowed_types:
            raise bad(f"channel type must be one of {allowed_types}")
        channel_data = {
            "id": str(channel.id),
            "name": channel.name,
            "type": channel.type,
            "parent_id": None if channel.parent_id is None else str(channel.parent_id),
            "permissions": str(world.permissions_for(guild, user.id, channel)),
            "nsfw": channel.nsfw,
            "position": channel.position,
            "topic": channel.topic,
            "flags": 0,
            "rate_limit_per_user": 0,
            "last_message_id": None,
        }
        resolved.setdefault("channels", {})[str(channel.id)] = channel_data
        return str(channel.id)
    if kind == ATTACHMENT:
        if isinstance(value, bytes):
            attachment = upload(value, f"{option['name']}.bin", None)
        elif isinstance(value, FakeFile):
            attachment = upload(value.data, value.filename, value.content_type)
        elif isinstance(value, tuple) and len(value) == 2:  # pyright: ignore[reportUnknownArgumentType]
            filename, raw = value  # pyright: ignore[reportUnknownVariableType]
            attachment = upload(bytes(raw), str(filename), None)  # pyright: ignore[reportUnknownArgumentType]
        elif isinstance(value, dict) and "id" in value and "url" in value:
            attachment = dict(value)  # pyright: ignore[reportUnknownArgumentType]
        else:
            raise bad("needs bytes, (filename, bytes), a FakeFile or fake.upload(...)'s result")
        resolved.setdefault("attachments", {})[str(attachment["id"])] = attachment
        return str(attachment["id"])
    raise bad(f"option type {kind} is not supported by the fake")


def find_command(commands: list[dict[str, Any]], name: str, *, where: str) -> dict[str, Any]:
    command = next((c for c in commands if c["name"] == name and c.get("type", 1) == 1), None)
    if command is None:
        names = sorted(c["name"] for c in commands if c.get("type", 1) == 1)
        raise FakeDiscordError(f"no slash command /{name} was synced {where}; synced: {names or 'none'}")
    return command


# --- modal submit data ---------------------------------------------------------------------------


def _modal_inputs(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for item in components:
        if "custom_id" in item:
            found.append(item)
        found += _modal_inputs(item.get("components", []))
        if isinstance(item.get("component"), dict):
            found += _modal_inputs([item["component"]])
    return found


def build_modal_components(modal: dict[str, Any], values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The submitted ``components`` of a modal, mirroring the layout the bot sent (rows or labels)."""
    known = [i["custom_id"] for i in _modal_inputs(modal.get("components", []))]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise FakeDiscordError(f"modal {modal.get('custom_id')!r} has no field(s) {unknown}; fields: {known}")

    def submitted(item: dict[str, Any]) -> dict[str, Any]:
        custom_id = item.get("custom_id")
        if custom_id is None:  # text display and other non-inputs come back as type and id only
            return {"type": item["type"], "id": item.get("id", 0)}
        if item["type"] == 4:  # text input
            value = values.get(custom_id, item.get("value") or "")
            if not isinstance(value, str):
                raise FakeDiscordError(f"modal field {custom_id!r} takes a str, got {value!r}")
            if item.get("required", True) and not value:
                raise FakeDiscordError(f"modal field {custom_id!r} is required")
            return {"type": 4, "id": item.get("id", 0), "custom_id": custom_id, "value": value}
        chosen = values.get(custom_id, [])
        chosen = [chosen] if isinstance(chosen, str) else list(chosen)
        return {"type": item["type"], "id": item.get("id", 0), "custom_id": custom_id, "values": chosen}

    result: list[dict[str, Any]] = []
    for top in modal.get("components", []):
        if top["type"] == 1:
            children = [submitted(c) for c in top.get("components", [])]
            result.append({"type": 1, "id": top.get("id", 0), "components": children})
        elif top["type"] == 18 and "component" in top:
            result.append({"type": 18, "id": top.get("id", 0), "component": submitted(top["component"])})
        else:
            result.append(submitted(top))
    return result
