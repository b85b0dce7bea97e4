"""Per-server settings."""

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

    async def get(self, guild_id: int) -> GuildSettings:
        """The server's settings; a server that never changed anything gets the defaults."""
        row = await self._db.fetchone(f"SELECT {_COLUMNS} FROM guild_settings WHERE guild_id = ?", (guild_id,))
        return _settings(row) if row is not None else GuildSettings(guild_id=guild_id)

    async def all_with_rules(self) -> list[GuildSettings]:
        """Every server that set something (to warm caches at start), in one read."""
        rows = await self._db.fetchall(f"SELECT {_COLUMNS} FROM guild_settings WHERE rules IS NOT NULL")
        return [_settings(row) for row in rows]

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
