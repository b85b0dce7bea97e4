"""The money path under load: holding a shot's estimate (caps checked in the same transaction as the job insert),
settling it, and reading /budget, on a database that already holds a busy month.

Setup: one server with 20 000 past jobs and their ledger entries (60 000 rows) this month. Then:
- 400 holds fired at once by 40 members against a monthly cap that fits exactly 250: how many got through
  (must be 250: no overspend), the latency of each hold (p50 / p99), and holds per second;
- settling each of them (the worker's charge/release transition);
- /budget show's summary and the month's CSV export.
Prints one JSON object as its last line."""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from bot.domain import Actor, Job, JobState, Money, ServerRules
from bot.governance.budget import Budget, OverBudgetError
from bot.library.characters import Library
from storage import Storage
from storage.db import Transaction
from storage.ledger import Settlement, reserve
from tests.support.factories import new_job

GUILD = 1
PAST_JOBS = 20_000
BURST = 400
MEMBERS = 40
COST = Money.from_usd("0.50")
ROOM = 250  # shots the month's remaining budget fits


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def create_job(tx: Transaction, storage: Storage, character_id: int, user: int) -> Job:
    return await new_job(
        storage,
        guild_id=GUILD,
        user_id=user,
        character_id=character_id,
        provider="kling",
        model="kling-v2-1",
        cost=COST,
        tx=tx,
    )


async def main() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        storage = await Storage.open(Path(folder) / "db.sqlite3", Path(folder) / "blobs")
        character = await Library(storage).create(Actor(GUILD, 100), "Ava", "traits")
        started = time.perf_counter()
        async with storage.db.transaction() as tx:
            for n in range(PAST_JOBS):
                job = await create_job(tx, storage, character.id, user=100 + n % MEMBERS)
                await reserve(tx, guild_id=GUILD, user_id=job.user_id, job_id=job.id, amount=COST)
        for job_id in range(1, PAST_JOBS + 1):
            await storage.jobs.transition(
                job_id, [JobState.QUEUED], JobState.DONE, settle=Settlement(COST), cost_final=COST
            )
        seed_seconds = time.perf_counter() - started

        spent = COST * PAST_JOBS
        rules = ServerRules(monthly_cap_usd=spent + COST * ROOM, daily_cap_usd=None)
        budget = Budget(storage)
        latencies: list[float] = []
        held: list[Job] = []
        refused = 0

        async def hold(n: int) -> None:
            nonlocal refused
            actor = Actor(GUILD, 100 + n % MEMBERS)
            t0 = time.perf_counter()
            try:
                job = await budget.reserve_for(
                    actor, rules, COST, lambda tx: create_job(tx, storage, character.id, actor.user_id)
                )
                held.append(job)
            except OverBudgetError:
                refused += 1
            latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(hold(n) for n in range(BURST)))
        burst_seconds = time.perf_counter() - t0

        t0 = time.perf_counter()
        for job in held:
            await storage.jobs.transition(
                job.id, [JobState.QUEUED], JobState.DONE, settle=Settlement(COST), cost_final=COST
            )
        settle_seconds = time.perf_counter() - t0

        t0 = time.perf_counter()
        summary = await budget.summary(Actor(GUILD, 100))
        summary_ms = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        _, csv_bytes = await budget.month_csv(Actor(GUILD, 100, is_manager=True, manages_server=True))
        csv_seconds = time.perf_counter() - t0
        total = sum((e.amount for e in await storage.ledger.entries(GUILD)), Money.ZERO)
        await storage.close()

    cap = rules.monthly_cap_usd or Money.ZERO
    return {
        "seed_jobs": PAST_JOBS,
        "seed_seconds": round(seed_seconds, 1),
        "burst_holds": BURST,
        "held": len(held),
        "refused": refused,
        "overspent_micros": max(Money.ZERO, total - cap).micros,
        "ledger_balances": total == summary.server.committed == cap,
        "hold_p50_ms": round(statistics.median(latencies) * 1000, 2),
        "hold_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "holds_per_second": round(BURST / burst_seconds),
        "settle_per_job_ms": round(settle_seconds / max(1, len(held)) * 1000, 2),
        "budget_summary_ms": round(summary_ms, 1),
        "csv_export_seconds": round(csv_seconds, 2),
        "csv_kib": round(len(csv_bytes) / 1024),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
