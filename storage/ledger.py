"""The money ledger (append-only; see migration 006). Amounts are USD millionths ("micros").

Writes happen inside a caller's transaction: a reservation commits with the job it holds money for, and a
settlement with the state change that ends (or bills) the job, so the ledger can never disagree with the jobs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.domain import LedgerEntry
from storage.db import Database, Transaction


@dataclass(frozen=True)
class Settlement:
    """How a job's reservation ends: released, plus a charge when the provider billed it."""

    charge_micros: int | None = None


_COLUMNS = "id, guild_id, user_id, job_id, entry, micros, day, created_at"


def day_of(timestamp: float) -> str:
    """The UTC day of a moment, as the ledger stores it (YYYY-MM-DD)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


async def committed(tx: Transaction, guild_id: int, *, period: str, user_id: int | None = None) -> int:
    """Money spent or held by shots queued in `period` (a day 'YYYY-MM-DD' or a month 'YYYY-MM')."""
    where = "guild_id = ? AND day LIKE ?"
    params: list[object] = [guild_id, period + "%"]
    if user_id is not None:
        where += " AND user_id = ?"
        params.append(user_id)
    row = await tx.fetchone(f"SELECT COALESCE(SUM(micros), 0) FROM ledger WHERE {where}", params)
    return int(row[0]) if row else 0


async def reserve(
    tx: Transaction, *, guild_id: int, user_id: int, job_id: int, micros: int, now: float | None = None
) -> None:
    now = time.time() if now is None else now
    await tx.execute(
        "INSERT INTO ledger (guild_id, user_id, job_id, entry, micros, day, created_at) "
        "VALUES (?, ?, ?, 'reserve', ?, ?, ?)",
        (guild_id, user_id, job_id, micros, day_of(now), now),
    )


async def settle(tx: Transaction, job_id: int, charge_micros: int | None, now: float | None = None) -> None:
    """End a job's reservation: release it, and charge `charge_micros` when the provider billed the job.

    Idempotent (one entry of each kind per job), and a job with no reservation (queued before budgets
    existed) is left alone. A charge after an earlier release (a late success) is still recorded."""
    now = time.time() if now is None else now
    copy_reserve = (
        "SELECT guild_id, user_id, job_id, {entry}, {micros}, day, ? FROM ledger WHERE job_id = ? AND entry = 'reserve'"
    )
    insert = "INSERT OR IGNORE INTO ledger (guild_id, user_id, job_id, entry, micros, day, created_at) "
    await tx.execute(insert + copy_reserve.format(entry="'release'", micros="-micros"), (now, job_id))
    if charge_micros is not None:
        await tx.execute(insert + copy_reserve.format(entry="'charge'", micros="?"), (charge_micros, now, job_id))


class LedgerRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def committed(self, guild_id: int, *, period: str, user_id: int | None = None) -> int:
        async with self._db.transaction() as tx:
            return await committed(tx, guild_id, period=period, user_id=user_id)

    async def entries(self, guild_id: int, *, period: str | None = None) -> list[LedgerEntry]:
        where, params = "guild_id = ?", [guild_id]
        if period is not None:
            where += " AND day LIKE ?"
            params.append(period + "%")  # type: ignore[arg-type]
        rows = await self._db.fetchall(f"SELECT {_COLUMNS} FROM ledger WHERE {where} ORDER BY id", params)
        return [LedgerEntry.model_validate(dict(row)) for row in rows]

    async def job_totals(self, guild_id: int, job_ids: list[int]) -> dict[int, int]:
        """What each job holds or cost (the sum of its entries)."""
        if not job_ids:
            return {}
        marks = ", ".join("?" for _ in job_ids)
        rows = await self._db.fetchall(
            f"SELECT job_id, SUM(micros) FROM ledger WHERE guild_id = ? AND job_id IN ({marks}) GROUP BY job_id",
            [guild_id, *job_ids],
        )
        return {int(row[0]): int(row[1]) for row in rows}

    async def unsettled_jobs(self) -> list[int]:
        """Jobs with a reservation and no release."""
        rows = await self._db.fetchall(
            "SELECT r.job_id FROM ledger r WHERE r.entry = 'reserve' AND NOT EXISTS "
            "(SELECT 1 FROM ledger x WHERE x.job_id = r.job_id AND x.entry = 'release') ORDER BY r.job_id"
        )
        return [int(row[0]) for row in rows]

    async def settle(self, job_id: int, charge_micros: int | None) -> None:
        async with self._db.transaction() as tx:
            await settle(tx, job_id, charge_micros)
