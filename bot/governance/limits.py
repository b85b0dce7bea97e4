"""Where and how often members may generate: the channel allow list, the cooldown and the queue cap."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bot.domain import Actor, ServerRules
from bot.domain.errors import NotAllowedError
from storage.db import Transaction
from storage.jobs import JobRepository


@dataclass(frozen=True)
class Place:
    """The channel a generation command came from (a thread counts as its parent channel)."""

    channel_id: int
    parent_id: int | None = None
    nsfw: bool = False  # age-restricted

    @property
    def channels(self) -> set[int]:
        return {self.channel_id} | ({self.parent_id} if self.parent_id else set())


class CooldownError(NotAllowedError):
    pass


def check_channel(rules: ServerRules, place: Place) -> None:
    if rules.allowed_channels and not place.channels & set(rules.allowed_channels):
        where = ", ".join(f"<#{c}>" for c in rules.allowed_channels)
        raise NotAllowedError(f"Shots and sheets can be made only in {where} in this server.")


async def check_cooldown(tx: Transaction, jobs: JobRepository, actor: Actor, rules: ServerRules, now: float) -> None:
    if rules.cooldown_seconds <= 0:
        return
    last = await jobs.last_created(actor.guild_id, actor.user_id, tx)
    if last is not None and now - last < rules.cooldown_seconds:
        wait = math.ceil(rules.cooldown_seconds - (now - last))
        raise CooldownError(
            f"Slow down a little: this server allows one shot every {rules.cooldown_seconds} s per member. "
            f"Try again in {wait} s."
        )


async def check_queue_room(tx: Transaction, jobs: JobRepository, actor: Actor, limit: int) -> None:
    waiting = await jobs.count_waiting(actor.guild_id, actor.user_id, tx)
    if waiting >= limit:
        raise NotAllowedError(
            f"You already have {waiting} shots waiting or rendering; the limit is {limit}. "
            "Wait for some to finish, or cancel one with `/queue cancel`."
        )
