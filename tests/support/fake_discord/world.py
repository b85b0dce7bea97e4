"""The state of the fake Discord: users, guilds, roles, channels, messages and files.

Everything here is plain data plus the JSON shapes Discord uses for it. Permissions are computed
the way Discord documents it: @everyone, then the member's roles, administrator or ownership
grants everything, then channel overwrites (@everyone, roles, member) are applied.
"""

from __future__ import annotations

import datetime
import itertools
import mimetypes
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

DISCORD_EPOCH_MS = 1_420_070_400_000
MIB = 1024 * 1024
DEFAULT_UPLOAD_LIMIT = 10 * MIB  # what a guild without boosts allows per file


class Perm:
    """Permission bits (https://discord.com/developers/docs/topics/permissions)."""

    CREATE_INSTANT_INVITE = 1 << 0
    KICK_MEMBERS = 1 << 1
    BAN_MEMBERS = 1 << 2
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    MANAGE_ROLES = 1 << 28
    USE_APPLICATION_COMMANDS = 1 << 31
    SEND_MESSAGES_IN_THREADS = 1 << 38
    # Every bit Discord defines (0-46 and 49-52), which owners and administrators get.
    ALL = sum(1 << bit for bit in itertools.chain(range(47), range(49, 53)))
    # What @everyone gets in a newly created guild.
    EVERYONE_DEFAULT = 1_071_698_660_929
    # What the bot's own managed role gets unless FakeDiscord(bot_permissions=...) says otherwise.
    BOT_DEFAULT = (
        VIEW_CHANNEL
        | SEND_MESSAGES
        | SEND_MESSAGES_IN_THREADS
        | EMBED_LINKS
        | ATTACH_FILES
        | READ_MESSAGE_HISTORY
        | ADD_REACTIONS
        | USE_EXTERNAL_EMOJIS
        | USE_APPLICATION_COMMANDS
    )


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def iso(ts: datetime.datetime | None) -> str | None:
    return None if ts is None else ts.isoformat()


class SnowflakeFactory:
    """Real-looking, strictly increasing snowflakes whose timestamp is the creation time."""

    def __init__(self) -> None:
        self._last = 0
        self._increment = itertools.count()

    def __call__(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        candidate = (ms << 22) | (1 << 17) | (next(self._increment) & 0xFFF)
        self._last = max(candidate, self._last + 1)
        return self._last


@dataclass(eq=False)
class FakeUser:
    id: int
    name: str
    bot: bool = False
    global_name: str | None = None
    locale: str = "en-US"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.name,
            "global_name": self.global_name,
            "discriminator": "0",
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
            "collectibles": None,
            "primary_guild": None,
        }


@dataclass(eq=False)
class FakeRole:
    id: int
    guild_id: int
    name: str
    permissions: int
    position: int = 0
    color: int = 0
    hoist: bool = False
    mentionable: bool = False
    managed: bool = False
    bot_id: int | None = None  # set on the bot's own managed role

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "description": None,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": self.color,
            "colors": {"primary_color": self.color, "secondary_color": None, "tertiary_color": None},
            "hoist": self.hoist,
            "managed": self.managed,
            "mentionable": self.mentionable,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
            "tags": {"bot_id": str(self.bot_id)} if self.bot_id else {},
        }


@dataclass
class Overwrite:
    """A channel permission overwrite; ``type`` 0 is a role, 1 a member."""

    id: int
    type: int
    allow: int = 0
    deny: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"id": str(self.id), "type": self.type, "allow": str(self.allow), "deny": str(self.deny)}


@dataclass(eq=False)
class FakeChannel:
    id: int
    guild_id: int
    name: str
    type: int = 0  # 0 = guild text channel
    position: int = 0
    topic: str | None = None
    nsfw: bool = False
    parent_id: int | None = None
    overwrites: list[Overwrite] = field(default_factory=list)
    last_message_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "permission_overwrites": [o.to_dict() for o in self.overwrites],
            "topic": self.topic,
            "nsfw": self.nsfw,
            "parent_id": None if self.parent_id is None else str(self.parent_id),
            "last_message_id": None if self.last_message_id is None else str(self.last_message_id),
            "rate_limit_per_user": 0,
            "flags": 0,
        }


@dataclass(eq=False)
class FakeMember:
    user: FakeUser
    guild_id: int
    role_ids: list[int] = field(default_factory=list)
    nick: str | None = None
    joined_at: datetime.datetime = field(default_factory=utcnow)

    def to_dict(self, *, with_user: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "roles": [str(r) for r in self.role_ids],
            "nick": self.nick,
            "avatar": None,
            "banner": None,
            "joined_at": iso(self.joined_at),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
            "unusual_dm_activity_until": None,
        }
        if with_user:
            data["user"] = self.user.to_dict()
        return data


@dataclass(eq=False)
class FakeGuild:
    id: int
    name: str
    owner_id: int
    everyone_role_id: int = 0
    bot_role_id: int = 0
    upload_limit: int = DEFAULT_UPLOAD_LIMIT
    locale: str = "en-US"
    roles: dict[int, FakeRole] = field(default_factory=dict)
    channels: dict[int, FakeChannel] = field(default_factory=dict)
    members: dict[int, FakeMember] = field(default_factory=dict)
    joined_at: datetime.datetime = field(default_factory=utcnow)

    @property
    def channel_id(self) -> int:
        """The first text channel (``#general``)."""
        return next(c.id for c in self.channels.values() if c.type == 0)

    @property
    def everyone(self) -> FakeRole:
        return self.roles[self.everyone_role_id]

    def to_gateway_dict(self, *, member_ids: set[int] | None = None) -> dict[str, Any]:
        """The GUILD_CREATE payload; ``member_ids`` limits the member list (no GUILD_MEMBERS intent)."""
        members = [m for m in self.members.values() if member_ids is None or m.user.id in member_ids]
        text = [c for c in self.channels.values() if c.type == 0]
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "widget_enabled": False,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "nsfw": False,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": self.locale,
            "system_channel_id": str(text[0].id) if text else None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "application_id": None,
            "max_members": 500000,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "features": [],
            "roles": [r.to_dict() for r in self.roles.values()],
            "emojis": [],
            "stickers": [],
            "channels": [c.to_dict() for c in self.channels.values()],
            "threads": [],
            "members": [m.to_dict() for m in members],
            "member_count": len(self.members),
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "embedded_activities": [],
            "incidents_data": None,
            "joined_at": iso(self.joined_at),
            "large": False,
            "lazy": True,
            "unavailable": False,
        }

    def to_rest_dict(self) -> dict[str, Any]:
        """GET /guilds/{id} (with counts): the guild without the gateway-only lists."""
        data = self.to_gateway_dict()
        for key in (
            "channels", "threads", "members", "member_count", "presences", "voice_states", "stage_instances",
            "guild_scheduled_events", "soundboard_sounds", "embedded_activities", "joined_at", "large", "lazy",
            "unavailable",
        ):  # fmt: skip
            del data[key]
        data.update(
            home_header=None,
            region="deprecated",
            widget_channel_id=None,
            max_presences=None,
            approximate_member_count=len(self.members),
            approximate_presence_count=0,
        )
        return data


class FakeFile(NamedTuple):
    """An attachment as a member sees it: ``filename, data, content_type = file`` works."""

    filename: str
    data: bytes
    content_type: str | None


@dataclass(eq=False)
class StoredFile:
    """A file the fake CDN serves at ``url``."""

    id: int
    channel_id: int
    filename: str
    data: bytes
    content_type: str | None
    url: str
    description: str | None = None
    ephemeral: bool = False

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": len(self.data),
            "url": self.url,
            "proxy_url": self.url,
        }
        if self.content_type:
            data["content_type"] = self.content_type
        if self.description:
            data["description"] = self.description
        if self.ephemeral:
            data["ephemeral"] = True
        return data

    def as_fake_file(self) -> FakeFile:
        return FakeFile(self.filename, self.data, self.content_type)


def guess_content_type(filename: str) -> str | None:
    """Discord ignores the part's content type and derives one from the file name."""
    return mimetypes.guess_type(filename)[0]


@dataclass
class MessageState:
    """One version of a message, kept in ``FakeMessage.history`` when it is edited."""

    content: str
    embeds: list[dict[str, Any]]
    components: list[dict[str, Any]]
    attachments: list[FakeFile]
    flags: int
    at: datetime.datetime


# Message flags used here.
FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_COMPONENTS_V2 = 1 << 15


@dataclass(eq=False)
class FakeMessage:
    id: int
    channel_id: int
    guild_id: int | None
    author: FakeUser
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    files: list[StoredFile] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    tts: bool = False
    reply_to: int | None = None
    webhook_id: int | None = None
    application_id: int | None = None
    interaction_metadata: dict[str, Any] | None = None
    interaction_legacy: dict[str, Any] | None = None
    interaction_id: int | None = None  # the interaction whose response (or follow-up) this is
    timestamp: datetime.datetime = field(default_factory=utcnow)
    edited_at: datetime.datetime | None = None
    edits: int = 0
    history: list[MessageState] = field(default_factory=list)
    deleted: bool = False
    reactions: list[str] = field(default_factory=list)  # emoji the bot reacted with ("👍", "name:id")
    mentions: list[FakeUser] = field(default_factory=list)

    @property
    def attachments(self) -> list[FakeFile]:
        return [f.as_fake_file() for f in self.files]

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        """A deferred ("thinking...") response nobody has filled in yet."""
        return bool(self.flags & FLAG_LOADING)

    def snapshot(self) -> MessageState:
        return MessageState(
            self.content,
            list(self.embeds),
            list(self.components),
            self.attachments,
            self.flags,
            self.edited_at or self.timestamp,
        )

    def iter_components(self) -> list[dict[str, Any]]:
        """Every component on the message, nested ones (rows, sections, containers) included."""
        found: list[dict[str, Any]] = []

        def walk(items: list[dict[str, Any]]) -> None:
            for item in items:
                found.append(item)
                walk(item.get("components", []))
                if isinstance(item.get("accessory"), dict):
                    found.append(item["accessory"])

        walk(self.components)
        return found

    def find_component(self, custom_id: str) -> dict[str, Any] | None:
        return next((c for c in self.iter_components() if c.get("custom_id") == custom_id), None)

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in self.iter_components() if "custom_id" in c]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "channel_id": str(self.channel_id),
            "author": self.author.to_dict(),
            "content": self.content,
            "embeds": self.embeds,
            "components": self.components,
            "attachments": [f.to_dict() for f in self.files],
            "timestamp": iso(self.timestamp),
            "edited_timestamp": iso(self.edited_at),
            "flags": self.flags,
            "tts": self.tts,
            "mention_everyone": False,
            "mentions": [u.to_dict() for u in self.mentions],
            "mention_roles": [],
            "pinned": False,
        }
        if self.reactions:
            data["reactions"] = [_reaction(emoji) for emoji in self.reactions]
        if self.guild_id is not None:
            data["guild_id"] = str(self.guild_id)
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
        if self.application_id is not None:
            data["application_id"] = str(self.application_id)
        if self.interaction_metadata is not None:
            data["interaction_metadata"] = self.interaction_metadata
        if self.interaction_legacy is not None:
            data["interaction"] = self.interaction_legacy
        if self.reply_to is not None:
            data["message_reference"] = {
                "type": 0,
                "message_id": str(self.reply_to),
                "channel_id": str(self.channel_id),
                **({"guild_id": str(self.guild_id)} if self.guild_id is not None else {}),
            }
        return data


def _reaction(emoji: str) -> dict[str, Any]:
    name, _, emoji_id = emoji.partition(":")
    return {
        "emoji": {"id": emoji_id or None, "name": name},
        "count": 1,
        "count_details": {"burst": 0, "normal": 1},
        "burst_colors": [],
        "me_burst": False,
        "me": True,
    }


class World:
    """All guilds, users, messages and files of one fake Discord."""

    def __init__(self) -> None:
        self.snowflake = SnowflakeFactory()
        self.users: dict[int, FakeUser] = {}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        self.messages: dict[int, FakeMessage] = {}
        self.files: dict[int, StoredFile] = {}

    # --- lookups -------------------------------------------------------------------------------

    def guild_of_channel(self, channel_id: int) -> FakeGuild | None:
        channel = self.channels.get(channel_id)
        return None if channel is None else self.guilds.get(channel.guild_id)

    def member(self, guild: FakeGuild, user_id: int) -> FakeMember | None:
        return guild.members.get(user_id)

    # --- permissions ---------------------------------------------------------------------------

    def base_permissions(self, guild: FakeGuild, member: FakeMember) -> int:
        if member.user.id == guild.owner_id:
            return Perm.ALL
        perms = guild.everyone.permissions
        for role_id in member.role_ids:
            role = guild.roles.get(role_id)
            if role is not None:
                perms |= role.permissions
        return Perm.ALL if perms & Perm.ADMINISTRATOR else perms

    def channel_permissions(self, guild: FakeGuild, member: FakeMember, channel: FakeChannel) -> int:
        perms = self.base_permissions(guild, member)
        if perms & Perm.ADMINISTRATOR:
            return Perm.ALL
        by_id = {(o.type, o.id): o for o in channel.overwrites}
        everyone = by_id.get((0, guild.everyone_role_id))
        if everyone is not None:
            perms = (perms & ~everyone.deny) | everyone.allow
        allow = deny = 0
        for role_id in member.role_ids:
            overwrite = by_id.get((0, role_id))
            if overwrite is not None:
                allow |= overwrite.allow
                deny |= overwrite.deny
        perms = (perms & ~deny) | allow
        own = by_id.get((1, member.user.id))
        if own is not None:
            perms = (perms & ~own.deny) | own.allow
        # Without VIEW_CHANNEL nothing else in the channel is usable.
        return perms if perms & Perm.VIEW_CHANNEL else 0

    def permissions_for(self, guild: FakeGuild, user_id: int, channel: FakeChannel | None = None) -> int:
        member = guild.members.get(user_id)
        if member is None:
            return 0
        if channel is None:
            return self.base_permissions(guild, member)
        return self.channel_permissions(guild, member, channel)
