"""Per-server settings that admins change. Only members who manage the server may change them."""

from __future__ import annotations

from bot.domain import GuildSettings
from bot.errors import NotAllowedError
from bot.library import Actor
from bot.prompts import DEFAULT_NEGATIVE_PRESETS, NEGATIVE_PRESETS, clean_member_text, resolve_presets
from storage import Storage

EXTRA_MAX = 300


def parse_presets(text: str) -> list[str] | None:
    """'face, hands' -> ['face', 'hands']; 'default' -> None (the defaults); 'none' -> []."""
    words = [w.strip().lower() for w in text.replace(";", ",").split(",") if w.strip()]
    if words in (["default"], ["defaults"]):
        return None
    if words in (["none"], ["off"], []):
        return []
    resolve_presets(words)  # raises PromptError (a friendly InvalidInputError) naming the valid keys
    return list(dict.fromkeys(words))


class ServerSettings:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def get(self, guild_id: int) -> GuildSettings:
        return await self._storage.guilds.get(guild_id)

    async def set_negative(self, actor: Actor, presets: str, extra: str | None) -> GuildSettings:
        if not actor.is_manager:
            raise NotAllowedError("Only members with Manage Server can change the server's settings.")
        chosen = parse_presets(presets)
        cleaned_extra = clean_member_text(extra)[:EXTRA_MAX] if extra else None
        current = await self._storage.guilds.get(actor.guild_id)
        updated = current.model_copy(update={"negative_presets": chosen, "negative_extra": cleaned_extra or None})
        await self._storage.guilds.save(updated)
        return updated


def describe_negative(settings: GuildSettings) -> str:
    keys = DEFAULT_NEGATIVE_PRESETS if settings.negative_presets is None else settings.negative_presets
    names = ", ".join(NEGATIVE_PRESETS[k].label for k in keys) or "none"
    suffix = " (the defaults)" if settings.negative_presets is None else ""
    extra = f"; extra terms: {settings.negative_extra}" if settings.negative_extra else ""
    return f"{names}{suffix}{extra}"
