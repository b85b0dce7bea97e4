"""The money ledger (append-only; see migration 006). The columns hold USD millionths ("micros"); what this
module takes and returns is Money.

Writes happen inside a caller's transaction: a reservation commits with the job it holds money for, and a
settlement with the state change that ends (or bills) the job, so the ledger can never disagree with the jobs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from sqlite3 import Row

from bot.domain import LedgerEntry, Money
from storage.db import Database, Transaction


@dataclass(frozen=True)
class Settlement:
    """How a job's reservation ends: released, plus a charge when the provider billed it."""

    charge: Money | None = None


_COLUMNS = "id, guild_id, user_id, job_id, entry, micros, day, created_at"


def day_of(timestamp: float) -> str:
    """The UTC day of a moment, as the ledger stores it (YYYY-MM-DD)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class Totals:
    committed: Money  # spent or held
    charged: Money  # spent

    @property
    def held(self) -> Money:
        return self.committed - self.charged


NO_TOTALS = Totals(Money.ZERO, Money.ZERO)


_TOTALS = "SELECT micros, charged FROM ledger_totals WHERE guild_id = ? AND period = ? AND user_id = ?"


def _totals_key(guild_id: int, period: str, user_id: int | None) -> tuple[int, str, int]:
    """A member's day ('YYYY-MM-DD', their id) or the server's month ('YYYY-MM', no member): what the
    database keeps running totals of (migration 006)."""
    if (user_id is None) != (len(period) == 7):
        raise ValueError("totals are kept per member per day and per server per month")
    return guild_id, period, user_id or 0


def _totals(row: Row | None) -> Totals:
    return Totals(Money(int(row[0])), Money(int(row[1]))) if row else NO_TOTALS


def _entry(row: Row) -> LedgerEntry:
    data = dict(row)
    return LedgerEntry.model_validate({**data, "amount": Money(int(data.pop("micros")))})


async def totals(tx: Transaction, guild_id: int, *, period: str, user_id: int | None = None) -> Totals:
    return _totals(await tx.fetchone(_TOTALS, _totals_key(guild_id, period, user_id)))


async def committed(tx: Transaction, guild_id: int, *, period: str, user_id: int | None = None) -> Money:
    """Money spent or held by shots queued in a member's day or the server's month (one lookup)."""
    return (await totals(tx, guild_id, period=period, user_id=user_id)).committed


async def reserve(
    tx: Transaction, *, guild_id: int, user_id: int, job_id: int, amount: Money, now: float | None = None
) -> None:
    now = time.time() if now is None else now
    await tx.execute(
        "INSERT INTO ledger (guild_id, user_id, job_id, entry, micros, day, created_at) "
        "VALUES (?, ?, ?, 'reserve', ?, ?, ?)",
        (guild_id, user_id, job_id, amount.micros, day_of(now), now),
    )


async def settle(tx: Transaction, job_id: int, charge: Money | None, now: float | None = None) -> None:
    """End a job's reservation: release it, and charge `charge` when the provider billed the job.

    Idempotent (one entry of each kind per job), and a job with no reservation (queued before budgets
    existed) is left alone. A charge after an earlier release (a late success) is still recorded."""
    now = time.time() if now is None else now
    copy_reserve = (
        "SELECT guild_id, user_id, job_id, {entry}, {micros}, day, ? FROM ledger WHERE job_id = ? AND entry = 'reserve'"
    )
    insert = "INSERT OR IGNORE INTO ledger (guild_id, user_id, job_id, entry, micros, day, created_at) "
    await tx.execute(insert + copy_reserve.format(entry="'release'", micros="-micros"), (now, job_id))
    if charge is not None:
        await tx.execute(insert + copy_reserve.format(entry="'charge'", micros="?"), (charge.micros, now, job_id))


class LedgerRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def totals(self, guild_id: int, *, period: str, user_id: int | None = None) -> Totals:
        return _totals(await self._db.fetchone(_TOTALS, _totals_key(guild_id, period, user_id)))

    async def month_by_job(self, guild_id: int, month: str) -> list[tuple[int, Money, Money, Money]]:
        """(job id, reserved, held, charged) of every job queued in `month`, in job order."""
        rows = await self._db.fetchall(
            "SELECT job_id, SUM(CASE entry WHEN 'reserve' THEN micros ELSE 0 END), "
            "SUM(CASE entry WHEN 'charge' THEN 0 ELSE micros END), SUM(CASE entry WHEN 'charge' THEN micros ELSE 0 END) "
            "FROM ledger WHERE guild_id = ? AND day >= ? AND day < ? GROUP BY job_id ORDER BY job_id",
            (guild_id, f"{month}-01", f"{month}-99"),
        )
        return [(int(r[0]), Money(int(r[1])), Money(int(r[2])), Money(int(r[3]))) for r in rows]

    async def entries(self, guild_id: int, *, period: str | None = None) -> list[LedgerEntry]:
        where, params = "guild_id = ?", [guild_id]
        if period is not None:
            where += " AND day LIKE ?"
            params.append(period + "%")  # type: ignore[arg-type]
        rows = await self._db.fetchall(f"SELECT {_COLUMNS} FROM ledger WHERE {where} ORDER BY id", params)
        return [_entry(row) for row in rows]

    async def job_totals(self, guild_id: int, job_ids: list[int]) -> dict[int, Money]:
        """What each job holds or cost (the sum of its entries)."""
        if not job_ids:
            return {}
        marks = ", ".join("?" for _ in job_ids)
        rows = await self._db.fetchall(
            f"SELECT job_id, SUM(micros) FROM ledger WHERE guild_id = ? AND job_id IN ({marks}) GROUP BY job_id",
            [guild_id, *job_ids],
        )
        return {int(row[0]): Money(int(row[1])) for row in rows}

    async def unsettled_jobs(self) -> list[int]:
        """Jobs with a reservation and no release."""
        rows = await self._db.fetchall(
            "SELECT r.job_id FROM ledger r WHERE r.entry = 'reserve' AND NOT EXISTS "
            "(SELECT 1 FROM ledger x WHERE x.job_id = r.job_id AND x.entry = 'release') ORDER BY r.job_id"
        )
        return [int(row[0]) for row in rows]

    async def settle(self, job_id: int, charge: Money | None) -> None:
        async with self._db.transaction() as tx:
            await settle(tx, job_id, charge)
