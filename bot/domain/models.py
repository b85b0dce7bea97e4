"""The plain pydantic models and enums of characters, references, server settings, the ledger and listings."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from bot.domain.money import Money


class View(StrEnum):
    """A reference view of a character, in the order sheets and providers use them."""

    FRONT = "front"
    THREE_QUARTER = "three_quarter"
    SIDE = "side"
    BACK = "back"
    FACE = "face"

    @property
    def label(self) -> str:
        return self.value.replace("_", "-").capitalize()


class ElementKind(StrEnum):
    OUTFIT = "outfit"
    PROP = "prop"
    ACCESSORY = "accessory"
    SCENE = "scene"
    OTHER = "other"


class Visibility(StrEnum):
    """Who sees a character: every member, its owner only, or its owner and members with chosen roles.
    Members with Manage Server always see every character, so they can moderate it."""

    SERVER = "server"
    PRIVATE = "private"
    ROLES = "roles"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Character(Frozen):
    id: int
    guild_id: int
    name: str
    description: str
    owner_id: int
    locked: bool
    version: int
    created_at: datetime
    updated_at: datetime
    visibility: Visibility = Visibility.SERVER
    visible_role_ids: tuple[int, ...] = ()  # only used by Visibility.ROLES


class ReferenceView(Frozen):
    id: int
    character_id: int
    view: View
    original_blob: str
    cleaned_blob: str | None
    cutout_blob: str | None
    uploaded_by: int
    created_at: datetime


class Element(Frozen):
    id: int
    character_id: int
    name: str
    kind: ElementKind
    original_blob: str
    cleaned_blob: str | None
    cutout_blob: str | None
    bound: bool
    created_at: datetime


class StoredImage(Frozen):
    """The three blobs kept for every reference image (sha256 digests in the blob store)."""

    original: str
    cleaned: str
    cutout: str


class Quality(StrEnum):
    """Draft: the provider's cheaper mode, for trying ideas; final: its best mode."""

    DRAFT = "draft"
    FINAL = "final"


class ServerRules(Frozen):
    """What a server's admins set beyond provider and negative prompts. Money is in USD; None means no limit."""

    monthly_cap_usd: Money | None = None  # the whole server, per calendar month (UTC)
    daily_cap_usd: Money | None = None  # each member, per UTC day
    confirm_over_usd: Money | None = Money.from_usd("1.00")  # shots estimated at this or more ask for a Confirm press
    cooldown_seconds: int = 0  # between a member's generation commands
    max_queued: int | None = None  # a member's shots waiting or rendering (None: the bot's default)
    max_running: int | None = None  # a member's shots rendering at once (None: the bot's default)
    allowed_channels: list[int] = []  # generation commands only here (empty: anywhere)
    quality: Quality | None = None  # the default quality where the provider has both
    manager_roles: list[int] = []  # roles that moderate Likeness like Manage Server does
    blocked_words: list[str] = []
    blocked_patterns: list[str] = []  # regular expressions
    nsfw_gate: bool = True  # NSFW-looking prompts only in age-restricted channels


class GuildSettings(Frozen):
    guild_id: int
    provider: str | None = None
    video_model: str | None = None
    negative_presets: list[str] | None = None  # None: the defaults
    negative_extra: str | None = None
    rules: ServerRules = ServerRules()


class AuditEntry(Frozen):
    id: int
    guild_id: int
    user_id: int
    action: str
    detail: str
    created_at: float


class LedgerEntry(Frozen):
    id: int
    guild_id: int
    user_id: int
    job_id: int
    entry: str  # reserve | release | charge
    amount: Money  # negative for a release
    day: str
    created_at: float


T = TypeVar("T")


class Page(Frozen, Generic[T]):
    """One page of a listing: the items, the page number (from 1) and how many pages there are."""

    items: list[T]
    number: int
    total_pages: int
    total_items: int
