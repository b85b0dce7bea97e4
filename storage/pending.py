"""Costly shots waiting for their member's Confirm press."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from storage.db import Database

EXPIRES_SECONDS = 15 * 60


@dataclass(frozen=True)
class PendingRow:
    id: int
    guild_id: int
    user_id: int
    channel_id: int
    character_id: int
    shot: str  # JSON
    created_at: float


def _row(row: sqlite3.Row) -> PendingRow:
    return PendingRow(**dict(row))


class PendingShotRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, *, guild_id: int, user_id: int, channel_id: int, character_id: int, shot: str) -> int:
        await self._db.execute("DELETE FROM pending_shots WHERE created_at < ?", (time.time() - EXPIRES_SECONDS,))
        return await self._db.execute(
            "INSERT INTO pending_shots (guild_id, user_id, channel_id, character_id, shot, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (guild_id, user_id, channel_id, character_id, shot, time.time()),
        )

    async def take(self, guild_id: int, user_id: int, pending_id: int) -> PendingRow | None:
        """Remove and return the member's pending shot (at most once, so a double press queues one shot)."""
        rows = await self._db.execute_returning(
            "DELETE FROM pending_shots WHERE id = ? AND guild_id = ? AND user_id = ? AND created_at >= ? "
            "RETURNING id, guild_id, user_id, channel_id, character_id, shot, created_at",
            (pending_id, guild_id, user_id, time.time() - EXPIRES_SECONDS),
        )
        return _row(rows[0]) if rows else None
