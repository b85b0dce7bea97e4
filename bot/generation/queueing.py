"""What every order for the render queue goes through, shots (bot.generation.orders) and generated sheets
(bot.library.sheets.generate) alike: screening what the provider will read, holding a costly order for its
member's Confirm press, and inserting the job with its money reserved, then waking the worker.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.domain import (
    Actor,
    BoundImage,
    Character,
    Job,
    Money,
    ServerRules,
    ShotParams,
    WorkKind,
)
from bot.domain.errors import NotFoundError
from bot.domain.text import clean_member_text
from bot.generation.prompts import Binding
from bot.governance.budget import Budget
from bot.governance.limits import Place, check_cooldown, check_queue_room
from bot.governance.moderation import Moderator, beyond_own_words
from bot.library.characters import can_see
from bot.providers.base import Capabilities
from storage import Storage
from storage.db import Transaction


@dataclass(frozen=True)
class PendingShot:
    """A costly shot (or sheet) waiting for its member to confirm the estimate."""

    id: int
    character: Character
    estimate: Money
    provider_label: str
    duration: int  # seconds; 0 for a sheet
    kind: WorkKind = WorkKind.ANIMATE


@dataclass(frozen=True)
class Pending:
    """A confirmed order taken from the pending table: its character and what `hold` kept to queue it."""

    character: Character
    payload: dict[str, Any]


class OrderQueue:
    def __init__(
        self,
        storage: Storage,
        wake_worker: Callable[[int | None], None],
        *,
        budget: Budget | None = None,
        moderator: Moderator | None = None,
        max_queued_per_user: int = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._storage = storage
        self._wake = wake_worker
        self._budget = budget or Budget(storage, clock=clock)
        self._moderator = moderator or Moderator(storage)
        self._clock = clock
        self.max_queued_per_user = max_queued_per_user

    def wake(self, job_id: int | None) -> None:
        self._wake(job_id)

    def now(self) -> float:
        return self._clock()

    async def screen_words(self, actor: Actor, place: Place, rules: ServerRules, words: dict[str, str | None]) -> None:
        """Screen what the member typed for this order (the block lists, this channel's NSFW gate)."""
        await self._moderator.screen(actor.guild_id, actor.user_id, words, nsfw_allowed=place.nsfw, rules=rules)

    async def screen_prompt(
        self,
        actor: Actor,
        place: Place,
        rules: ServerRules,
        character: Character,
        binding: Binding,
        prompt: str,
        what: str,
        typed: tuple[str | None, ...],
    ) -> None:
        """Screen what the provider will read besides the member's own words (`typed`, screened already): the
        character's name, traits and bound element names (written earlier, maybe by someone else, maybe in
        another channel), then the whole compiled prompt, with the block lists and this channel's NSFW gate."""
        name = f"**{character.name}**"
        stored: dict[str, str | None] = {f"the name {name}": character.name}
        stored[f"the description of {name}"] = character.description
        elements = [ref.label for ref in binding.chosen if ref.role == "element"]
        stored.update((f"the element **{label}** of {name}", label) for label in elements)
        screen = self._moderator.screen
        await screen(actor.guild_id, actor.user_id, {}, nsfw_allowed=place.nsfw, rules=rules, stored=stored)
        own = prompt  # the bot's own wording: what is left once every member piece is taken out
        pieces = {clean_member_text(piece) for piece in (*stored.values(), *typed) if piece}
        for piece in sorted(pieces, key=len, reverse=True):
            own = re.sub(re.escape(piece), "\n", own, flags=re.IGNORECASE)
        whole: dict[str, str | None] = {f"the prompt this {what} would send": prompt}
        own_rules = beyond_own_words(rules, own)
        await screen(actor.guild_id, actor.user_id, {}, nsfw_allowed=place.nsfw, rules=own_rules, stored=whole)

    def needs_confirmation(self, rules: ServerRules, estimate: Money, *, confirmed: bool) -> bool:
        """An order the member has not confirmed yet that costs the server's threshold or more."""
        return not confirmed and self._budget.needs_confirmation(rules, estimate)

    async def enqueue(
        self,
        actor: Actor,
        channel_id: int,
        character: Character,
        *,
        rules: ServerRules,
        kind: WorkKind,
        provider: str,
        model: str,
        action: str,
        prompt: str,
        negative_prompt: str | None,
        params: ShotParams,
        binding: Binding,
        estimate: Money,
        parent_job_id: int | None = None,
    ) -> Job:
        """Persist a job for the worker (state queued) with its money reserved, and wake it.

        The member's limits and the caps are checked in the same transaction as the insert, so two commands
        at once cannot both pass a cap that only one of them fits."""
        jobs = self._storage.jobs

        async def cooldown(tx: Transaction) -> None:
            await check_cooldown(tx, jobs, actor, rules, self._clock())

        async def queue_room(tx: Transaction) -> None:
            await check_queue_room(tx, jobs, actor, rules.max_queued or self.max_queued_per_user)

        async def create(tx: Transaction) -> Job:
            return await jobs.create(
                guild_id=actor.guild_id,
                channel_id=channel_id,
                user_id=actor.user_id,
                character_id=character.id,
                character_name=character.name,
                character_version=character.version,
                kind=kind.value,
                provider=provider,
                model=model,
                action=action,
                prompt=prompt,
                negative_prompt=negative_prompt,
                params=params,
                bound=[
                    BoundImage(label=ref.label, role=ref.role, blob=ref.blob, subject=ref.subject)
                    for ref in binding.chosen
                ],
                cost_estimate=estimate,
                parent_job_id=parent_job_id,
                tx=tx,
            )

        job = await self._budget.reserve_for(actor, rules, estimate, create, [cooldown, queue_room])
        self._wake(job.id)
        return job

    async def hold_for_confirmation(
        self,
        actor: Actor,
        rules: ServerRules,
        place: Place,
        character: Character,
        estimate: Money,
        payload: dict[str, Any],
        caps: Capabilities,
        duration: int,
        kind: WorkKind,
    ) -> PendingShot:
        """Keep a costly order (`payload`, what its confirmation needs to queue it) until its member confirms."""
        await self._budget.precheck(actor, rules, estimate)  # never ask to confirm a refusal
        pending_id = await self._storage.pending.create(
            guild_id=actor.guild_id,
            user_id=actor.user_id,
            channel_id=place.channel_id,
            character_id=character.id,
            shot=json.dumps(payload),
        )
        return PendingShot(pending_id, character, estimate, caps.label, duration, kind)

    async def take_pending(self, actor: Actor, pending_id: int) -> Pending:
        """The order its member confirmed, taken once however often the button is pressed."""
        row = await self._storage.pending.take(actor.guild_id, actor.user_id, pending_id)
        if row is None:
            raise NotFoundError("This shot is no longer waiting for you: it was confirmed, canceled or expired.")
        data = json.loads(row.shot)
        character = await self._storage.characters.get(actor.guild_id, row.character_id)
        if character is None:
            raise NotFoundError("That character was deleted, so this shot can't be made.")
        return Pending(character, data)

    async def drop_pending(self, actor: Actor, pending_id: int) -> None:
        await self._storage.pending.take(actor.guild_id, actor.user_id, pending_id)

    async def job_for(self, actor: Actor, job_id: int) -> Job:
        """A job of the actor's server (never another server's, whatever id is guessed)."""
        job = await self._storage.jobs.get_in_guild(actor.guild_id, job_id)
        if job is None:
            raise NotFoundError(f"There is no job #{job_id} in this server.")
        return job

    async def character_of(self, actor: Actor, job: Job, consequence: str = "") -> Character:
        """The character a job was made of, as it is now; `consequence` ends the refusal when it was deleted."""
        character = None
        if job.character_id is not None:
            character = await self._storage.characters.get(actor.guild_id, job.character_id)
        if character is None:
            raise NotFoundError(f"**{job.character_name}** was deleted{consequence}.")
        if not can_see(actor, character):  # its owner made it private (or limited it to roles) since
            raise NotFoundError(f"**{job.character_name}** is no longer shared with you{consequence}.")
        return character
