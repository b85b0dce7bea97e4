"""Servers' own provider keys, sealed (the repository never sees a plaintext key)."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import dataclass

from storage.db import Database, Transaction
from storage.jobs import STILL_IN_PLAY

_COLUMNS = "guild_id, provider, ciphertext, set_by, set_at"


def key_version(ciphertext: bytes) -> str:
    """Which setting of a server's key this is. Every seal has a fresh nonce, so setting the same key again is a
    new version too; a job records the version it was sent with (jobs.account)."""
    return hashlib.sha256(ciphertext).hexdigest()[:16]


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

    async def put(
        self, guild_id: int, provider: str, ciphertext: bytes, set_by: int
    ) -> tuple[SealedProviderKey, str | None]:
        """Store (or replace) a server's key for a provider: the stored key, and the version of the key it replaced
        (retired: see `_retire`), if any."""
        async with self._db.transaction() as tx:
            replaced = await self._retire(tx, guild_id, provider)
            rows = await tx.fetchall(
                f"INSERT INTO provider_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (guild_id, provider) DO UPDATE SET ciphertext = excluded.ciphertext, "
                f"set_by = excluded.set_by, set_at = excluded.set_at RETURNING {_COLUMNS}",
                (guild_id, provider, ciphertext, set_by, time.time()),
            )
        return _row(rows[0]), replaced

    async def delete(self, guild_id: int, provider: str) -> bool:
        """Forget a server's key (it is retired: see `_retire`); False when it had none."""
        async with self._db.transaction() as tx:
            await self._retire(tx, guild_id, provider)
            changed = await tx.execute(
                "DELETE FROM provider_keys WHERE guild_id = ? AND provider = ?", (guild_id, provider)
            )
        return changed > 0

    async def retired(self, guild_id: int, provider: str, version: str) -> SealedProviderKey | None:
        """A replaced or removed key that shots sent with it still need."""
        row = await self._db.fetchone(
            "SELECT guild_id, provider, ciphertext, 0 AS set_by, retired_at AS set_at FROM retired_provider_keys "
            "WHERE guild_id = ? AND provider = ? AND version = ?",
            (guild_id, provider, version),
        )
        return _row(row) if row is not None else None

    async def jobs_on(self, guild_id: int, provider: str, version: str) -> int:
        """Shots sent with this version of a key that may still need it."""
        row = await self._db.fetchone(
            f"SELECT COUNT(*) FROM jobs j WHERE j.guild_id = ? AND j.provider = ? AND j.account = ? "
            f"AND {STILL_IN_PLAY}",
            (guild_id, provider, version),
        )
        return int(row[0]) if row is not None else 0

    async def purge_retired(self) -> list[tuple[int, str, str]]:
        """Delete the retired keys no shot needs any more; (guild, provider, version) of each."""
        rows = await self._db.execute_returning(
            "DELETE FROM retired_provider_keys AS r WHERE NOT EXISTS (SELECT 1 FROM jobs j "
            "WHERE j.guild_id = r.guild_id AND j.provider = r.provider AND j.account = r.version "
            f"AND {STILL_IN_PLAY}) RETURNING guild_id, provider, version"
        )
        return [(int(row[0]), str(row[1]), str(row[2])) for row in rows]

    @staticmethod
    async def _retire(tx: Transaction, guild_id: int, provider: str) -> str | None:
        """Keep the current key aside, sealed as it was: shots already sent with it are collected with it (the
        provider only shows a task to the account that made it). `purge_retired` drops it once they end.
        Returns its version (None: the server had no key)."""
        row = await tx.fetchone(
            "SELECT ciphertext FROM provider_keys WHERE guild_id = ? AND provider = ?", (guild_id, provider)
        )
        if row is None:
            return None
        ciphertext = bytes(row[0])
        version = key_version(ciphertext)
        await tx.execute(
            "INSERT OR IGNORE INTO retired_provider_keys (guild_id, provider, version, ciphertext, retired_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (guild_id, provider, version, ciphertext, time.time()),
        )
        return version
