"""Servers' own provider keys, sealed (the repository never sees a plaintext key)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from storage.db import Database

_COLUMNS = "guild_id, provider, ciphertext, set_by, set_at"


@dataclass(frozen=True)
class SealedProviderKey:
    guild_id: int
    provider: str
    ciphertext: bytes
    set_by: int  # the member who entered it
    set_at: float  # unix time


def _row(row: sqlite3.Row) -> SealedProviderKey:
    return SealedProviderKey(
        guild_id=int(row["guild_id"]),
        provider=str(row["provider"]),
        ciphertext=bytes(row["ciphertext"]),
        set_by=int(row["set_by"]),
        set_at=float(row["set_at"]),
    )


class ProviderKeyRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, guild_id: int, provider: str) -> SealedProviderKey | None:
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM provider_keys WHERE guild_id = ? AND provider = ?", (guild_id, provider)
        )
        return _row(row) if row is not None else None

    async def for_guild(self, guild_id: int) -> list[SealedProviderKey]:
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM provider_keys WHERE guild_id = ? ORDER BY provider", (guild_id,)
        )
        return [_row(row) for row in rows]

    async def put(self, guild_id: int, provider: str, ciphertext: bytes, set_by: int) -> SealedProviderKey:
        """Store (or replace) a server's key for a provider."""
        rows = await self._db.execute_returning(
            f"INSERT INTO provider_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (guild_id, provider) DO UPDATE SET ciphertext = excluded.ciphertext, "
            f"set_by = excluded.set_by, set_at = excluded.set_at RETURNING {_COLUMNS}",
            (guild_id, provider, ciphertext, set_by, time.time()),
        )
        return _row(rows[0])

    async def delete(self, guild_id: int, provider: str) -> bool:
        """Forget a server's key; False when it had none."""
        changed = await self._db.execute(
            "DELETE FROM provider_keys WHERE guild_id = ? AND provider = ?", (guild_id, provider)
        )
        return changed > 0
