"""Per-server settings."""

from __future__ import annotations

from bot.domain import GuildSettings
from storage.db import Database


class GuildSettingsRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, guild_id: int) -> GuildSettings:
        """The server's settings; a server that never changed anything gets the defaults."""
        row = await self._db.fetchone(
            "SELECT guild_id, provider, video_model FROM guild_settings WHERE guild_id = ?", (guild_id,)
        )
        return GuildSettings.model_validate(dict(row)) if row else GuildSettings(guild_id=guild_id)

    async def save(self, settings: GuildSettings) -> None:
        await self._db.execute(
            "INSERT INTO guild_settings (guild_id, provider, video_model) VALUES (?, ?, ?) "
            "ON CONFLICT (guild_id) DO UPDATE SET provider = excluded.provider, "
            "video_model = excluded.video_model, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            (settings.guild_id, settings.provider, settings.video_model),
        )
