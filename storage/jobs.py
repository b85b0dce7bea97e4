"""The render queue's rows. State changes are conditional (`WHERE state IN ...`), so a cancel racing the
worker, or two workers, can never both win: whoever's update matched owns the transition."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any

from bot.domain import BoundImage, Job, JobState, Money, ShotParams
from storage import ledger
from storage.db import Database, Transaction
from storage.ledger import Settlement

_COLUMNS = (
    "id, guild_id, channel_id, user_id, character_id, character_name, character_version, kind, provider, model, "
    "action, prompt, negative_prompt, params, bound, cost_estimate, cost_final, state, task_id, status_url, "
    "attempts, polls, next_poll_at, status_message_id, result_message_id, result_blob, error, parent_job_id, "
    "cancel_requested, created_at, started_at, finished_at, late_check_until, account, "
    "result_posted_whole, submit_sent, waiting_since"
)
# A job whose inputs (bound images) and provider account may still be used: not finished, or given up on but
# looked at again later (`late_checks`; late_check_until is only ever set on failed jobs). A SQL condition on the
# jobs table's columns, for other tables' queries to share.
STILL_IN_PLAY = "(state NOT IN ('done', 'failed', 'canceled') OR late_check_until IS NOT NULL)"
_UPDATABLE = frozenset(_COLUMNS.replace(" ", "").split(",")) - {"id", "guild_id", "created_at"}
# Money columns keep the USD text they always had ('0.50', '0.0035'); the job holds Money.
_MONEY_COLUMNS = frozenset({"cost_estimate", "cost_final"})


def _job(row: sqlite3.Row) -> Job:
    data = dict(row)
    data["params"] = json.loads(data["params"])
    data["bound"] = json.loads(data["bound"])
    for name in _MONEY_COLUMNS:
        if data[name] is not None:
            data[name] = Money.from_usd(data[name])
    return Job.model_validate(data)


def _money_text(amount: object) -> str:
    """A money column's value: the USD text of a Money (never a bare number or string)."""
    if not isinstance(amount, Money):
        raise TypeError(f"money columns take Money, not {type(amount).__name__}")
    return str(amount.usd)


def _column_value(name: str, value: object) -> object:
    return _money_text(value) if name in _MONEY_COLUMNS and value is not None else value


def _placeholders(values: Iterable[object]) -> str:
    return ", ".join("?" for _ in values)


class JobRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        *,
        guild_id: int,
        channel_id: int,
        user_id: int,
        character_id: int,
        character_name: str,
        character_version: int,
        kind: str,
        provider: str,
        model: str,
        action: str,
        prompt: str,
        negative_prompt: str | None,
        params: ShotParams,
        bound: list[BoundImage],
        cost_estimate: Money,
        parent_job_id: int | None = None,
        tx: Transaction | None = None,
    ) -> Job:
        """Insert a queued job; inside `tx` when it must commit with something else (its reservation)."""
        sql = (
            "INSERT INTO jobs (guild_id, channel_id, user_id, character_id, character_name, character_version, kind, "
            "provider, model, action, prompt, negative_prompt, params, bound, cost_estimate, parent_job_id, "
            f"created_at) VALUES ({_placeholders(range(17))}) RETURNING {_COLUMNS}"
        )
        values = (
            guild_id,
            channel_id,
            user_id,
            character_id,
            character_name,
            character_version,
            kind,
            provider,
            model,
            action,
            prompt,
            negative_prompt,
            params.model_dump_json(),
            json.dumps([b.model_dump() for b in bound]),
            _money_text(cost_estimate),
            parent_job_id,
            time.time(),
        )
        rows = await self._rows(sql, values, tx)
        return _job(rows[0])

    async def _rows(self, sql: str, params: Sequence[object], tx: Transaction | None) -> list[sqlite3.Row]:
        """One statement inside `tx` when it must commit with others, else on its own."""
        return await (tx.fetchall(sql, params) if tx is not None else self._db.execute_returning(sql, params))

    async def get(self, job_id: int) -> Job | None:
        row = await self._db.fetchone(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _job(row) if row else None

    async def get_in_guild(self, guild_id: int, job_id: int) -> Job | None:
        row = await self._db.fetchone(f"SELECT {_COLUMNS} FROM jobs WHERE guild_id = ? AND id = ?", (guild_id, job_id))
        return _job(row) if row else None

    async def in_states(self, states: Iterable[JobState], *, guild_id: int | None = None) -> list[Job]:
        wanted = [s.value for s in states]
        where = f"state IN ({_placeholders(wanted)})"
        params: list[object] = list(wanted)
        if guild_id is not None:
            where += " AND guild_id = ?"
            params.append(guild_id)
        rows = await self._db.fetchall(f"SELECT {_COLUMNS} FROM jobs WHERE {where} ORDER BY created_at, id", params)
        return [_job(row) for row in rows]

    async def recent_in_guild(self, guild_id: int, limit: int = 25) -> list[Job]:
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM jobs WHERE guild_id = ? ORDER BY id DESC LIMIT ?", (guild_id, limit)
        )
        return [_job(row) for row in rows]

    async def transition(
        self,
        job_id: int,
        allowed_from: Iterable[JobState],
        to: JobState,
        *,
        settle: Settlement | None = None,
        **fields: Any,
    ) -> Job | None:
        """Move a job to `to` only if it is in one of `allowed_from`; None if it was not (someone else won).
        With `settle`, the job's reservation is settled in the same transaction (only if the move happened)."""
        sources: list[object] = [s.value for s in allowed_from]
        condition = f"state IN ({_placeholders(sources)})"
        if settle is None:
            return await self._update(job_id, {"state": to.value, **fields}, condition, sources)
        async with self._db.transaction() as tx:
            moved = await self._update(job_id, {"state": to.value, **fields}, condition, sources, tx=tx)
            if moved is not None:
                await ledger.settle(tx, job_id, settle.charge)
            return moved

    async def count_unfinished(self) -> dict[str, int]:
        """Jobs waiting or in progress, by state (every such state present, zeros included)."""
        rows = await self._db.fetchall(
            "SELECT state, COUNT(*) FROM jobs WHERE state NOT IN ('done', 'failed', 'canceled') GROUP BY state"
        )
        counts = {state.value: 0 for state in JobState if not state.finished}
        counts.update({str(row[0]): int(row[1]) for row in rows})
        return counts

    async def queued_in_month(self, guild_id: int, month: str) -> list[Job]:
        """Jobs whose money was reserved in `month` ('YYYY-MM'), for the month's spending export."""
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM jobs WHERE guild_id = ? AND id IN (SELECT job_id FROM ledger "
            "WHERE guild_id = ? AND entry = 'reserve' AND day >= ? AND day < ?) ORDER BY id",
            (guild_id, guild_id, f"{month}-01", f"{month}-99"),
        )
        return [_job(row) for row in rows]

    async def drop_posted_clips(self, finished_before: float) -> int:
        """Forget the result blob of shots whose clip was posted whole before then (bot.jobs.retention deletes the
        files); sheets are kept, as their figures can still be kept as views. Returns how many."""
        return await self._db.execute(
            "UPDATE jobs SET result_blob = NULL WHERE state = 'done' AND kind != 'sheet' AND result_posted_whole = 1 "
            "AND result_blob IS NOT NULL AND finished_at < ?",
            (finished_before,),
        )

    async def late_checks(self) -> list[Job]:
        """Failed jobs whose render the provider may still finish (the bot gave up waiting)."""
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM jobs WHERE state = 'failed' AND late_check_until IS NOT NULL "
            "AND task_id IS NOT NULL ORDER BY id",
        )
        return [_job(row) for row in rows]

    async def last_created(self, guild_id: int, user_id: int, tx: Transaction | None = None) -> float | None:
        """When the member last queued a job in this server."""
        sql = "SELECT MAX(created_at) FROM jobs WHERE guild_id = ? AND user_id = ?"
        [row] = await self._rows(sql, (guild_id, user_id), tx)
        return float(row[0]) if row[0] is not None else None

    async def count_waiting(self, guild_id: int, user_id: int, tx: Transaction | None = None) -> int:
        """The member's jobs queued, holding a provider slot, or waiting for a manager in this server."""
        sql = (
            "SELECT COUNT(*) FROM jobs WHERE guild_id = ? AND user_id = ? "
            "AND state IN ('queued', 'submitting', 'running', 'downloading', 'delivering', 'unsure')"
        )
        [row] = await self._rows(sql, (guild_id, user_id), tx)
        return int(row[0])

    async def update(self, job_id: int, **fields: Any) -> Job | None:
        """Change fields without changing the state."""
        return await self._update(job_id, fields, "1 = 1", [])

    async def _update(
        self, job_id: int, fields: dict[str, Any], condition: str, params: list[object], tx: Transaction | None = None
    ) -> Job | None:
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"not job columns: {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        sql = f"UPDATE jobs SET {assignments} WHERE id = ? AND {condition} RETURNING {_COLUMNS}"
        values = (*(_column_value(name, value) for name, value in fields.items()), job_id, *params)
        rows = await self._rows(sql, values, tx)
        return _job(rows[0]) if rows else None
