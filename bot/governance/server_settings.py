"""Per-server settings that admins change. Only members who manage the server may change them, every value is
validated, and every change is written to the audit log with what it was and what it became."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from bot.domain import Actor, AuditEntry, GuildSettings, Money, Quality, ServerRules
from bot.domain.errors import InvalidInputError, NotAllowedError
from bot.generation.prompts import DEFAULT_NEGATIVE_PRESETS, NEGATIVE_PRESETS, clean_member_text, resolve_presets
from bot.governance.limits import Place, check_channel
from bot.governance.moderation import LIST_MAX, checked_pattern, checked_word
from bot.providers.registry import ProviderRegistry
from storage import Storage

EXTRA_MAX = 300
MONEY_MAX = Decimal(100_000)
COOLDOWN_MAX = 86_400
QUEUED_MAX = 100
RUNNING_MAX = 10
CHANNELS_MAX = 25
ROLES_MAX = 25
NO_LIMIT = ("none", "off", "no", "unlimited", "-")
DEFAULT_RULES = ServerRules()  # a server that set nothing (read on every interaction: built once)


def parse_presets(text: str) -> list[str] | None:
    """'face, hands' -> ['face', 'hands']; 'default' -> None (the defaults); 'none' -> []."""
    words = [w.strip().lower() for w in text.replace(";", ",").split(",") if w.strip()]
    if words in (["default"], ["defaults"]):
        return None
    if words in (["none"], ["off"], []):
        return []
    resolve_presets(words)  # raises PromptError (a friendly InvalidInputError) naming the valid keys
    return list(dict.fromkeys(words))


def parse_money(text: str, what: str) -> Money | None:
    """'50', '$12.50' -> Money (whole cents); 'none' / 'off' -> None (no limit)."""
    cleaned = text.strip().lower().removeprefix("$").replace(",", "").strip()
    if cleaned in NO_LIMIT:
        return None
    try:
        amount = Decimal(cleaned)
    except InvalidOperation:
        raise InvalidInputError(
            f"The {what} must be an amount in US dollars like `25` or `12.50`, or `none`."
        ) from None
    if not amount.is_finite() or amount < 0 or amount > MONEY_MAX:
        raise InvalidInputError(f"The {what} must be between $0 and ${MONEY_MAX:,}.")
    return Money.from_usd(amount.quantize(Decimal("0.01")))


def money(amount: Money | None) -> str:
    return "no limit" if amount is None else str(amount)


class ServerSettings:
    def __init__(self, storage: Storage, providers: ProviderRegistry | None = None) -> None:
        self._storage = storage
        self._providers = providers

    async def warm(self) -> None:
        """Keep every server's settings in memory (storage.guilds): for code that cannot wait (member roles, the
        scheduler), and so that no interaction waits on the database for its server's rules."""
        await self._storage.guilds.load()

    def cached_rules(self, guild_id: int) -> ServerRules:
        settings = self._storage.guilds.kept(guild_id)
        return settings.rules if settings is not None else DEFAULT_RULES

    def running_caps(self) -> dict[int, int]:
        """Servers that set their own cap on a member's renders at once."""
        return {s.guild_id: s.rules.max_running for s in self._storage.guilds.all_kept() if s.rules.max_running}

    async def get(self, guild_id: int) -> GuildSettings:
        """The settings, for the bot's own use; what a member is shown comes from `view`."""
        return await self._storage.guilds.get(guild_id)

    async def view(self, actor: Actor) -> GuildSettings:
        """The settings as /settings shows them: to members with Manage Server only."""
        ensure_settings_rights(actor)
        return await self._storage.guilds.get(actor.guild_id)

    async def check_place(self, guild_id: int, place: Place) -> None:
        """Refuse generating (shots, sheets) outside the server's allow list (/settings channels)."""
        check_channel((await self._storage.guilds.get(guild_id)).rules, place)

    async def audit(self, actor: Actor, limit: int = 20) -> list[AuditEntry]:
        ensure_settings_rights(actor)
        return await self._storage.audit.recent(actor.guild_id, limit)

    # ------------------------------------------------------------------ changes

    async def set_negative(self, actor: Actor, presets: str, extra: str | None) -> GuildSettings:
        ensure_settings_rights(actor)  # first: a refusal must not hint at what is set
        chosen = parse_presets(presets)
        cleaned_extra = clean_member_text(extra)[:EXTRA_MAX] if extra else None
        return await self._change(
            actor, "negative", {"negative_presets": chosen, "negative_extra": cleaned_extra or None}
        )

    async def set_provider(self, actor: Actor, provider: str | None, model: str | None) -> GuildSettings:
        """The server's default provider (None: the bot's) and video model (None: the provider's default)."""
        ensure_settings_rights(actor)  # first: a refusal must not hint at what is set
        if provider is not None and provider.lower() in ("default", "none"):
            provider = None
        if self._providers is not None and (provider is not None or model is not None):
            # refuses an unknown provider with the list (a server's own key counts)
            caps = (await self._providers.for_guild(actor.guild_id, provider)).capabilities
            if model is not None and model not in caps.models:
                raise InvalidInputError(f"**{caps.label}** has the models {', '.join(caps.models)}, not `{model}`.")
        return await self._change(actor, "provider", {"provider": provider, "video_model": model})

    async def set_budget(
        self, actor: Actor, *, monthly: str | None, daily: str | None, confirm_over: str | None
    ) -> GuildSettings:
        ensure_settings_rights(actor)  # first: a refusal must not hint at what is set
        changes: dict[str, Any] = {}
        if monthly is not None:
            changes["monthly_cap_usd"] = parse_money(monthly, "monthly server budget")
        if daily is not None:
            changes["daily_cap_usd"] = parse_money(daily, "daily limit per member")
        if confirm_over is not None:
            changes["confirm_over_usd"] = parse_money(confirm_over, "confirmation threshold")
        return await self._change_rules(actor, "budget", changes)

    async def set_limits(
        self,
        actor: Actor,
        *,
        cooldown: int | None = None,
        max_queued: int | None = None,
        max_running: int | None = None,
        quality: str | None = None,
    ) -> GuildSettings:
        ensure_settings_rights(actor)  # first: a refusal must not hint at what is set
        changes: dict[str, Any] = {}
        if cooldown is not None:
            if not 0 <= cooldown <= COOLDOWN_MAX:
                raise InvalidInputError(f"The cooldown must be between 0 and {COOLDOWN_MAX} seconds.")
            changes["cooldown_seconds"] = cooldown
        if max_queued is not None:
            if not 1 <= max_queued <= QUEUED_MAX:
                raise InvalidInputError(f"Shots waiting per member must be between 1 and {QUEUED_MAX}.")
            changes["max_queued"] = max_queued
        if max_running is not None:
            if not 1 <= max_running <= RUNNING_MAX:
                raise InvalidInputError(f"Shots rendering at once per member must be between 1 and {RUNNING_MAX}.")
            changes["max_running"] = max_running
        if quality is not None:
            changes["quality"] = None if quality == "provider" else Quality(quality)
        return await self._change_rules(actor, "limits", changes)

    async def set_channel(self, actor: Actor, action: str, channel_id: int | None) -> GuildSettings:
        ensure_settings_rights(actor)  # first: a refusal must not hint at what is set
        rules = (await self._storage.guilds.get(actor.guild_id)).rules
        channels = _edited(rules.allowed_channels, action, channel_id, "channel", CHANNELS_MAX)
        return await self._change_rules(actor, "channels", {"allowed_channels": channels})

    async def set_manager_role(self, actor: Actor, action: str, role_id: int | None) -> GuildSettings:
        ensure_settings_rights(actor)  # first: a refusal must not hint at what is set
        rules = (await self._storage.guilds.get(actor.guild_id)).rules
        roles = _edited(rules.manager_roles, action, role_id, "role", ROLES_MAX)
        return await self._change_rules(actor, "managers", {"manager_roles": roles})

    async def set_blocked(self, actor: Actor, action: str, kind: str, value: str | None) -> GuildSettings:
        ensure_settings_rights(actor)  # first: a refusal must not hint at what is set
        rules = (await self._storage.guilds.get(actor.guild_id)).rules
        field = "blocked_patterns" if kind == "pattern" else "blocked_words"
        current: list[str] = list(getattr(rules, field))
        if action == "clear":
            updated: list[str] = []
        else:
            if not value:
                raise InvalidInputError(f"Give the {kind} to {action}.")
            entry = checked_pattern(value) if kind == "pattern" else checked_word(value)
            folded = [e.casefold() for e in current]
            if action == "add":
                if entry.casefold() in folded:
                    raise InvalidInputError(f"`{entry}` is already on the block list.")
                if len(current) >= LIST_MAX:
                    raise InvalidInputError(f"The block list holds at most {LIST_MAX} {kind}s.")
                updated = [*current, entry]
            else:
                if entry.casefold() not in folded:
                    raise InvalidInputError(f"`{entry}` is not on the block list.")
                updated = [e for e in current if e.casefold() != entry.casefold()]
        return await self._change_rules(actor, "blocklist", {field: updated})

    async def _change_rules(self, actor: Actor, name: str, changes: dict[str, Any]) -> GuildSettings:
        if not changes:
            raise InvalidInputError("Nothing to change: give at least one option.")
        current = await self._storage.guilds.get(actor.guild_id)
        rules = ServerRules.model_validate({**current.rules.model_dump(), **changes})
        return await self._change(actor, name, {"rules": rules})

    async def _change(self, actor: Actor, name: str, changes: dict[str, Any]) -> GuildSettings:
        ensure_settings_rights(actor)
        current = await self._storage.guilds.get(actor.guild_id)
        updated = current.model_copy(update=changes)
        await self._storage.guilds.save(updated)
        await self._storage.audit.record(
            guild_id=actor.guild_id, user_id=actor.user_id, action=f"settings.{name}", detail=_diff(current, updated)
        )
        return updated


def ensure_settings_rights(actor: Actor) -> None:
    """The one rule for the server's settings, read or written: Manage Server (manager roles do not count)."""
    if not actor.manages_server:
        raise NotAllowedError("Only members with Manage Server can see or change the server's settings.")


def _edited(current: list[int], action: str, item: int | None, what: str, limit: int) -> list[int]:
    if action == "clear":
        return []
    if item is None:
        raise InvalidInputError(f"Choose the {what} to {action}.")
    if action == "add":
        if item in current:
            raise InvalidInputError(f"That {what} is already on the list.")
        if len(current) >= limit:
            raise InvalidInputError(f"The list holds at most {limit} {what}s.")
        return [*current, item]
    if item not in current:
        raise InvalidInputError(f"That {what} is not on the list.")
    return [c for c in current if c != item]


def _diff(before: GuildSettings, after: GuildSettings) -> str:
    """'daily_cap_usd: none -> 2.00; ...' for the audit log."""
    old = {**before.model_dump(exclude={"rules"}), **before.rules.model_dump()}
    new = {**after.model_dump(exclude={"rules"}), **after.rules.model_dump()}
    changed = [f"{key}: {_shown(old[key])} -> {_shown(new[key])}" for key in new if old.get(key) != new[key]]
    return "; ".join(changed) or "no change"


def _shown(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, Money):
        return str(value.usd)  # 2.00, as the audit log always showed amounts
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"  # pyright: ignore[reportUnknownArgumentType]
    return str(value)


def describe_negative(settings: GuildSettings) -> str:
    keys = DEFAULT_NEGATIVE_PRESETS if settings.negative_presets is None else settings.negative_presets
    names = ", ".join(NEGATIVE_PRESETS[k].label for k in keys) or "none"
    suffix = " (the defaults)" if settings.negative_presets is None else ""
    extra = f"; extra terms: {settings.negative_extra}" if settings.negative_extra else ""
    return f"{names}{suffix}{extra}"
