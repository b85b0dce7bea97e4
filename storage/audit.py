"""The audit log: refusals and admin changes, per server, newest first."""

from __future__ import annotations

import time

from bot.domain import AuditEntry
from storage.db import Database

DETAIL_MAX = 500


class AuditRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, *, guild_id: int, user_id: int, action: str, detail: str = "") -> None:
        await self._db.execute(
            "INSERT INTO audit_log (guild_id, user_id, action, detail, created_at) VALUES (?, ?, ?, ?, ?)",
            (guild_id, user_id, action, detail[:DETAIL_MAX], time.time()),
        )

    async def recent(self, guild_id: int, limit: int = 20, before_id: int | None = None) -> list[AuditEntry]:
        rows = await self._db.fetchall(
            "SELECT id, guild_id, user_id, action, detail, created_at FROM audit_log "
            "WHERE guild_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
            (guild_id, before_id if before_id is not None else 2**63 - 1, limit),
        )
        return [AuditEntry.model_validate(dict(row)) for row in rows]

    async def drop_before(self, cutoff: float) -> int:
        """Delete the entries made before `cutoff` (a Unix time), every server's; how many went."""
        return await self._db.execute("DELETE FROM audit_log WHERE created_at < ?", (cutoff,))
