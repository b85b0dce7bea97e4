"""Property: whatever members and providers do, in any order, with restarts and days passing in between, the
money ledger balances, it only grows, and no cap is ever exceeded.

The operations drive the same code the bot runs: `Budget.reserve_for` (what /animate calls to queue a job with its
money held), `JobRepository.transition(..., settle=...)` (what the worker and /queue cancel call to end a job),
and `Budget.reconcile` (what runs at every start)."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.domain import Actor, Job, JobState, Money, ServerRules
from bot.governance.budget import Budget, OverBudgetError, charge_of
from bot.library.characters import Library
from storage import Storage
from storage.db import Transaction
from storage.ledger import Settlement, day_of
from tests.support.factories import new_job

GUILD = 1
RULES = ServerRules(daily_cap_usd=Money.from_usd("2.00"), monthly_cap_usd=Money.from_usd("5.00"))
START = 1_795_000_000.0  # a fixed moment, so runs are reproducible
DAY = 86_400.0

USERS = st.sampled_from([10, 11, 12])
COSTS = st.sampled_from(["0.98", "1.40", "0.50", "0.35", "0.05", "0", "2.10"])  # big first: caps get tested
PICK = st.integers(min_value=0, max_value=1_000)
ENQUEUE = st.tuples(st.just("enqueue"), USERS, COSTS)
OPERATIONS = st.lists(
    st.one_of(
        ENQUEUE,
        ENQUEUE,
        ENQUEUE,  # three times as likely as each other operation: caps and holds need traffic
        st.tuples(st.just("start"), PICK),
        st.tuples(st.just("succeed"), PICK, st.sampled_from(["1", "0.5", "0"])),  # billed share of the estimate
        st.tuples(st.just("fail"), PICK, st.booleans()),  # charged by the provider?
        st.tuples(st.just("cancel"), PICK),
        st.tuples(st.just("give_up"), PICK),
        st.tuples(st.just("late_success"), PICK),
        st.tuples(st.just("restart"), st.booleans()),  # True: long enough after that late checks expired
        st.tuples(st.just("next_day"), st.integers(min_value=1, max_value=20)),
    ),
    min_size=5,
    max_size=50,
)


@dataclass
class World:
    path: Path
    now: list[float] = field(default_factory=lambda: [START])
    storage: Storage | None = None
    budget: Budget | None = None
    character_id: int = 0

    async def open(self) -> None:
        self.storage = await Storage.open(self.path / "db.sqlite3", self.path / "blobs")
        self.budget = Budget(self.storage, clock=lambda: self.now[0])

    async def jobs(self) -> list[Job]:
        assert self.storage is not None
        return sorted(await self.storage.jobs.recent_in_guild(GUILD, 1_000), key=lambda j: j.id)


async def enqueue(world: World, user: int, usd: str) -> None:
    assert world.storage is not None and world.budget is not None
    storage = world.storage
    cost = Money.from_usd(usd)

    async def create(tx: Transaction) -> Job:
        return await new_job(storage, guild_id=GUILD, user_id=user, character_id=world.character_id, cost=cost, tx=tx)

    with contextlib.suppress(OverBudgetError):  # a refusal is fine; the invariants say it changed nothing
        await world.budget.reserve_for(Actor(GUILD, user), RULES, cost, create)


async def apply(world: World, operation: tuple[object, ...]) -> None:
    assert world.storage is not None and world.budget is not None
    jobs = world.storage.jobs
    kind = operation[0]
    if kind == "enqueue":
        await enqueue(world, int(operation[1]), str(operation[2]))  # type: ignore[arg-type]
        return
    if kind == "restart":
        await world.storage.close()
        if operation[1]:
            world.now[0] += 2 * DAY
        await world.open()
        assert world.budget is not None
        await world.budget.reconcile()
        return
    if kind == "next_day":
        world.now[0] += DAY * int(operation[1]) / 10  # type: ignore[arg-type]
        return
    candidates = await world.jobs()
    if not candidates:
        return
    job = candidates[int(operation[1]) % len(candidates)]  # type: ignore[arg-type]
    now = world.now[0]
    if kind == "start":
        await jobs.transition(job.id, [JobState.QUEUED], JobState.RUNNING, started_at=now)
    elif kind == "succeed":
        billed = job.cost_estimate * Decimal(str(operation[2]))
        await jobs.transition(job.id, [JobState.RUNNING], JobState.DONE, settle=Settlement(billed), cost_final=billed)
    elif kind == "fail":
        charged = bool(operation[2])
        await jobs.transition(
            job.id,
            [JobState.QUEUED, JobState.RUNNING],
            JobState.FAILED,
            settle=Settlement(charge_of(job) if charged else None),
            cost_final=job.cost_estimate if charged else Money.ZERO,
            finished_at=now,
        )
    elif kind == "cancel":
        await jobs.transition(job.id, [JobState.QUEUED, JobState.RUNNING], JobState.CANCELED, settle=Settlement())
    elif kind == "give_up":  # the worker stops waiting; the hold stays while the provider may still finish
        await jobs.transition(job.id, [JobState.RUNNING], JobState.FAILED, late_check_until=now + DAY, finished_at=now)
    elif kind == "late_success" and job.late_check_until is not None and job.late_check_until > now:
        # the worker looks again only within the window; after it, the hold was released for good
        await jobs.transition(
            job.id,
            [JobState.FAILED],
            JobState.DONE,
            settle=Settlement(charge_of(job)),
            late_check_until=None,
            cost_final=job.cost_estimate,
        )


async def check_invariants(world: World, before: list[tuple[int, str, int]]) -> list[tuple[int, str, int]]:
    assert world.storage is not None
    entries = await world.storage.ledger.entries(GUILD)
    rows = [(e.id, e.entry, e.amount.micros) for e in entries]
    assert rows[: len(before)] == before, "the ledger changed an entry it already had (it must only grow)"

    # it balances: the sum of the ledger is what jobs still hold plus what they were charged
    expected = 0
    for job in await world.jobs():
        mine = {e.entry: e.amount.micros for e in entries if e.job_id == job.id}
        assert "reserve" in mine and mine["reserve"] == job.cost_estimate.micros
        settled = "release" in mine
        if settled:
            assert mine["release"] == -mine["reserve"]
            expected += mine.get("charge", 0)
        else:
            assert "charge" not in mine
            assert not job.state.finished or job.late_check_until is not None or job.state is JobState.DONE
            expected += mine["reserve"]
        if job.state is JobState.DONE:
            assert settled and mine.get("charge") == (job.cost_final or Money.ZERO).micros
        if job.state is JobState.CANCELED:
            assert settled and "charge" not in mine
    assert sum(e.amount.micros for e in entries) == expected

    # no cap is ever exceeded (charges never exceed estimates here, as with every provider's cost model)
    per_member_day: dict[tuple[int, str], int] = {}
    per_month: dict[str, int] = {}
    for entry in entries:
        key = (entry.user_id, entry.day)
        per_member_day[key] = per_member_day.get(key, 0) + entry.amount.micros
        per_month[entry.day[:7]] = per_month.get(entry.day[:7], 0) + entry.amount.micros
    assert RULES.daily_cap_usd is not None and RULES.monthly_cap_usd is not None
    for (user, day), total in per_member_day.items():  # the running totals the caps read agree with the entries
        assert (await world.storage.ledger.totals(GUILD, period=day, user_id=user)).committed.micros == total
    for month, total in per_month.items():
        assert (await world.storage.ledger.totals(GUILD, period=month)).committed.micros == total
    assert all(total <= RULES.daily_cap_usd.micros for total in per_member_day.values())
    assert all(total <= RULES.monthly_cap_usd.micros for total in per_month.values())
    return rows


async def play(operations: list[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        world = World(Path(folder))
        await world.open()
        assert world.storage is not None
        world.character_id = (await Library(world.storage).create(Actor(GUILD, 10), "Ava", "traits")).id
        seen: list[tuple[int, str, int]] = []
        try:
            for operation in operations:
                await apply(world, operation)
                seen = await check_invariants(world, seen)
        finally:
            assert world.storage is not None
            await world.storage.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPERATIONS)
def test_the_ledger_balances_and_no_cap_is_exceeded(operations: list[tuple[object, ...]]) -> None:
    asyncio.run(play(operations))


def test_days_are_utc() -> None:
    assert day_of(0) == "1970-01-01"
    assert day_of(START) == "2026-11-18"  # 20775.46 days after 1970-01-01
