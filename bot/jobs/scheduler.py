"""Which queued job starts next: per-provider caps, a per-user cap, round-robin across servers.

A full provider means waiting, not an error. Within a server jobs start in the order they were queued;
across servers, the server that started a job least recently goes first, so one busy server cannot make
the others wait behind its whole backlog.
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bot.domain import BOT_ACCOUNT, Job


@dataclass(frozen=True)
class Limits:
    provider_caps: Mapping[str, int]  # tasks a provider account may run at once
    per_user: int = 2  # jobs of one member holding provider slots at once
    per_user_by_guild: Mapping[int, int] = field(default_factory=dict)  # servers that set their own
    # servers' own provider accounts (their own keys): (guild, provider) -> tasks that account runs at once
    server_accounts: Mapping[tuple[int, str], int] = field(default_factory=dict)

    def account(self, job: Job) -> tuple[int, str] | str:
        """Whose provider account a job runs on: its server's (own key) or the bot's (by provider name). A job
        that left the queue runs on the account it was sent with, even if its server's key changed since."""
        key = (job.guild_id, job.provider)
        if job.account is not None:
            return job.provider if job.account == BOT_ACCOUNT else key
        return key if key in self.server_accounts else job.provider

    def account_cap(self, account: tuple[int, str] | str) -> int:
        if isinstance(account, tuple):  # a server's key removed while its shots render: the provider's usual cap
            return self.server_accounts.get(account, self.provider_caps.get(account[1], 1))
        return self.provider_caps.get(account, 1)

    def user_cap(self, guild_id: int) -> int:
        return self.per_user_by_guild.get(guild_id, self.per_user)


def fair_order(queued: Sequence[Job], last_start: Mapping[int, float]) -> list[Job]:
    """The order queued jobs would start in with unlimited capacity: round-robin over servers."""
    by_guild: dict[int, deque[Job]] = defaultdict(deque)
    for job in sorted(queued, key=lambda j: (j.created_at, j.id)):
        by_guild[job.guild_id].append(job)
    # servers that started least recently first; a server never served goes by its oldest job
    guilds = sorted(by_guild, key=lambda g: (last_start.get(g, 0.0), by_guild[g][0].created_at))
    order: list[Job] = []
    while guilds:
        still: list[int] = []
        for guild in guilds:
            order.append(by_guild[guild].popleft())
            if by_guild[guild]:
                still.append(guild)
        guilds = still
    return order


def jobs_to_start(
    queued: Sequence[Job], active: Sequence[Job], limits: Limits, last_start: Mapping[int, float]
) -> list[Job]:
    """The queued jobs that may start now, in order, without passing any cap."""
    per_account = Counter(limits.account(job) for job in active)
    per_user = Counter((job.guild_id, job.user_id) for job in active)
    starting: list[Job] = []
    for job in fair_order(queued, last_start):
        account = limits.account(job)
        user = (job.guild_id, job.user_id)
        if per_account[account] >= limits.account_cap(account) or per_user[user] >= limits.user_cap(job.guild_id):
            continue
        per_account[account] += 1
        per_user[user] += 1
        starting.append(job)
    return starting


def positions(queued: Sequence[Job], last_start: Mapping[int, float]) -> dict[int, int]:
    """1-based place in line of each queued job (1 = starts next)."""
    return {job.id: place for place, job in enumerate(fair_order(queued, last_start), start=1)}
