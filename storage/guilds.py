"""Per-server settings, kept in memory once loaded (`load`, at start): every interaction reads its server's rules,
and the bot is the only writer of its database, through `save` (a restore runs only while it is stopped)."""

from __future__ import annotations

import json
import sqlite3

from bot.domain import GuildSettings, ServerRules
from storage.db import Database

_COLUMNS = "guild_id, provider, video_model, negative_presets, negative_extra, rules"


def _settings(row: sqlite3.Row) -> GuildSettings:
    data = dict(row)
    data["negative_presets"] = json.loads(data["negative_presets"]) if data["negative_presets"] else None
    data["rules"] = ServerRules.model_validate_json(data["rules"]) if data["rules"] else ServerRules()
    return GuildSettings.model_validate(data)


class GuildSettingsRepository:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._kept: dict[int, GuildSettings] | None = None  # every server that set something, once loaded

    async def load(self) -> None:
        """Read every server's settings into memory, in one read; from then on `get` never waits."""
        rows = await self._db.fetchall(f"SELECT {_COLUMNS} FROM guild_settings")
        self._kept = {settings.guild_id: settings for settings in map(_settings, rows)}

    def kept(self, guild_id: int) -> GuildSettings | None:
        """The server's settings from memory; None when it never set anything (or before `load`)."""
        return self._kept.get(guild_id) if self._kept is not None else None

    def all_kept(self) -> list[GuildSettings]:
        return list(self._kept.values()) if self._kept is not None else []

    async def get(self, guild_id: int) -> GuildSettings:
        """The server's settings; a server that never changed anything gets the defaults."""
        if self._kept is not None:
            return self._kept.get(guild_id) or GuildSettings(guild_id=guild_id)
        row = await self._db.fetchone(f"SELECT {_COLUMNS} FROM guild_settings WHERE guild_id = ?", (guild_id,))
        return _settings(row) if row is not None else GuildSettings(guild_id=guild_id)

    async def save(self, settings: GuildSettings) -> None:
        presets = json.dumps(settings.negative_presets) if settings.negative_presets is not None else None
        await self._db.execute(
            f"INSERT INTO guild_settings ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (guild_id) DO UPDATE SET provider = excluded.provider, video_model = excluded.video_model, "
            "negative_presets = excluded.negative_presets, negative_extra = excluded.negative_extra, "
            "rules = excluded.rules, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            (
                settings.guild_id,
                settings.provider,
                settings.video_model,
                presets,
                settings.negative_extra,
                settings.rules.model_dump_json(exclude_defaults=True),
            ),
        )
        if self._kept is not None:
            self._kept[settings.guild_id] = settings
