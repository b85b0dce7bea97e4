"""Budgets: what shots cost, the caps admins set, and the ledger that holds and charges the money.

A shot's estimate is reserved when it is queued, in the same transaction as the job, after checking that
it fits both the member's daily cap and the server's monthly cap counting everything already spent or
held; so concurrent commands cannot overspend. The worker settles the reservation in the same transaction
as the state change that ends the job: charged when the provider billed it, released otherwise.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.domain import Actor, Job, JobState, Money, ServerRules
from bot.domain.errors import InvalidInputError, NotAllowedError
from storage import Storage
from storage.db import Transaction
from storage.ledger import Settlement, Totals, committed, day_of, reserve

RECENT_JOBS = 10


def charge_of(job: Job) -> Money:
    """What a job that the provider billed costs: what the provider reported, else the estimate."""
    return job.cost_final if job.cost_final is not None else job.cost_estimate


class OverBudgetError(NotAllowedError):
    """A shot that does not fit a cap; the message has the numbers."""


@dataclass(frozen=True)
class BudgetSummary:
    day: str
    month: str
    server: Totals
    member: Totals
    monthly_cap: Money | None
    daily_cap: Money | None
    recent: list[tuple[Job, Money]]  # the member's latest jobs and what each holds or cost


def _until(now: datetime, then: datetime) -> str:
    minutes = max(1, int((then - now).total_seconds() // 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


class Budget:
    def __init__(self, storage: Storage, *, clock: Callable[[], float] = time.time) -> None:
        self._storage = storage
        self._clock = clock

    def today(self) -> str:
        return day_of(self._clock())

    async def check(self, tx: Transaction, actor: Actor, rules: ServerRules, cost: Money) -> None:
        """Refuse a shot of `cost` that would pass the member's daily or the server's monthly cap."""
        if cost <= Money.ZERO:
            return
        day = self.today()
        now = datetime.fromtimestamp(self._clock(), UTC)
        if rules.daily_cap_usd is not None:
            cap = rules.daily_cap_usd
            used = await committed(tx, actor.guild_id, period=day, user_id=actor.user_id)
            if used + cost > cap:
                midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
                raise OverBudgetError(
                    f"This shot is estimated at {cost}, but you have {max(Money.ZERO, cap - used)} left of your "
                    f"{cap} daily limit in this server ({used} spent or held by your shots today). "
                    f"It resets at 00:00 UTC, in {_until(now, midnight)}."
                )
        if rules.monthly_cap_usd is not None:
            cap = rules.monthly_cap_usd
            used = await committed(tx, actor.guild_id, period=day[:7])
            if used + cost > cap:
                raise OverBudgetError(
                    f"This shot is estimated at {cost}, but this server has {max(Money.ZERO, cap - used)} left of "
                    f"its {cap} monthly budget ({used} spent or held this month). It resets on the 1st "
                    "(UTC); an admin can raise it with `/settings budget`."
                )

    async def reserve_for(
        self,
        actor: Actor,
        rules: ServerRules,
        cost: Money,
        create: Callable[[Transaction], Awaitable[Job]],
        checks: Sequence[Callable[[Transaction], Awaitable[None]]] = (),
    ) -> Job:
        """Create a job (`create`, inside the transaction) with `cost` reserved for it, if the member's limits
        (`checks`) and the caps allow. One transaction: two commands at once cannot both pass a cap."""
        try:
            async with self._storage.db.transaction() as tx:
                for check in checks:
                    await check(tx)
                await self.check(tx, actor, rules, cost)
                job = await create(tx)
                await reserve(
                    tx, guild_id=actor.guild_id, user_id=actor.user_id, job_id=job.id, amount=cost, now=self._clock()
                )
        except OverBudgetError as refused:
            await self._audit(actor, refused)
            raise
        return job

    async def precheck(self, actor: Actor, rules: ServerRules, cost: Money) -> None:
        """`check` outside a transaction: before asking a member to confirm a shot that would be refused."""
        try:
            async with self._storage.db.transaction() as tx:
                await self.check(tx, actor, rules, cost)
        except OverBudgetError as refused:
            await self._audit(actor, refused)
            raise

    async def _audit(self, actor: Actor, refused: OverBudgetError) -> None:
        """Admins see who hits the caps (after the transaction: the audit log is written on its own)."""
        await self._storage.audit.record(
            guild_id=actor.guild_id, user_id=actor.user_id, action="refused.budget", detail=str(refused)
        )

    def needs_confirmation(self, rules: ServerRules, cost: Money) -> bool:
        return rules.confirm_over_usd is not None and cost > Money.ZERO and cost >= rules.confirm_over_usd

    async def summary(self, actor: Actor) -> BudgetSummary:
        server = await self._storage.guilds.get(actor.guild_id)
        day = self.today()
        jobs = [j for j in await self._storage.jobs.recent_in_guild(actor.guild_id, 50) if j.user_id == actor.user_id]
        jobs = jobs[:RECENT_JOBS]
        totals = await self._storage.ledger.job_totals(actor.guild_id, [j.id for j in jobs])
        rules = server.rules
        return BudgetSummary(
            day=day,
            month=day[:7],
            server=await self._storage.ledger.totals(actor.guild_id, period=day[:7]),
            member=await self._storage.ledger.totals(actor.guild_id, period=day, user_id=actor.user_id),
            monthly_cap=rules.monthly_cap_usd,
            daily_cap=rules.daily_cap_usd,
            recent=[(job, totals.get(job.id, Money.ZERO)) for job in jobs],
        )

    async def month_csv(self, actor: Actor, month: str | None = None) -> tuple[str, bytes]:
        """The month's jobs and money as CSV (admins): (file name, bytes)."""
        if not actor.manages_server:
            raise NotAllowedError("Only members with Manage Server can export the server's spending.")
        month = month or self.today()[:7]
        if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
            raise InvalidInputError(f"Give the month as YYYY-MM, like {self.today()[:7]}.")
        money = await self._storage.ledger.month_by_job(actor.guild_id, month)
        jobs = {job.id: job for job in await self._storage.jobs.queued_in_month(actor.guild_id, month)}
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            ["job_id", "queued_utc", "member_id", "character", "kind", "provider", "model", "seconds", "state",
             "estimate_usd", "held_usd", "charged_usd"]
        )  # fmt: skip
        total_held = total_charged = Money.ZERO
        for job_id, reserved, held, charged in money:
            job = jobs.get(job_id)
            if job is None:
                continue
            total_held, total_charged = total_held + held, total_charged + charged
            writer.writerow(
                [job.id, datetime.fromtimestamp(job.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S"), job.user_id,
                 job.character_name, job.kind, job.provider, job.model, job.params.duration, job.state.value,
                 reserved.plain, held.plain, charged.plain]
            )  # fmt: skip
        writer.writerow(["total", "", "", "", "", "", "", "", "", "", total_held.plain, total_charged.plain])
        return f"likeness-spend-{month}.csv", out.getvalue().encode()

    async def reconcile(self, now: float | None = None) -> int:
        """Settle jobs that ended holding a reservation (a safety net; settling normally commits with the state
        change). A job the provider may still finish after a give-up keeps its hold until its late check ends."""
        now = self._clock() if now is None else now
        settled = 0
        for job_id in await self._storage.ledger.unsettled_jobs():
            job = await self._storage.jobs.get(job_id)
            if job is None or not job.state.finished:
                continue
            if job.late_check_until is not None and job.late_check_until > now:
                continue
            billed = job.state is JobState.DONE or (job.cost_final is not None and job.cost_final > Money.ZERO)
            await self._storage.ledger.settle(job.id, charge_of(job) if billed else None)
            settled += 1
        return settled


def settlement(*, billed: bool, job: Job) -> Settlement:
    """Release a job's hold, charging it when the provider billed it."""
    return Settlement(charge_of(job) if billed else None)
