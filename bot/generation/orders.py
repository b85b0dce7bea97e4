"""Queueing shots: validate, bind the references, compile the prompt, estimate the cost, persist the job.

Everything a member can get wrong is checked here, before a job exists; after that the worker owns it.
Cancel and the result buttons' rules live here too.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bot.domain import (
    Actor,
    BoundImage,
    Character,
    Job,
    JobState,
    Money,
    Quality,
    ServerRules,
    ShotParams,
    StoredImage,
    View,
    WorkKind,
)
from bot.domain.errors import InvalidInputError, NotAllowedError, NotFoundError
from bot.domain.text import clean_member_text
from bot.generation.prompts import CAMERA_MOVES, DEFAULT_NEGATIVE_PRESETS, Binding, choose_references, compile_prompt
from bot.governance.budget import Budget
from bot.governance.limits import Place, check_channel, check_cooldown, check_queue_room
from bot.governance.moderation import Moderator, beyond_own_words
from bot.library.characters import Library, can_see
from bot.library.references import png_bytes
from bot.library.sheets.split import Figure, on_white, sheet_prompt, split_sheet
from bot.providers.base import Capabilities, Provider, RenderRequest
from bot.providers.registry import ProviderRegistry
from storage import Storage
from storage.db import Transaction
from storage.ledger import Settlement

ACTION_MAX = 500
SETTING_MAX = 200


@dataclass(frozen=True)
class Shot:
    """What the member asked for."""

    action: str
    duration: int | None = None
    camera: str = "push_in"
    aspect_ratio: str | None = None
    negative: str | None = None
    setting: str | None = None
    provider: str | None = None
    mode: str | None = None
    model: str | None = None
    quality: Quality | None = None


@dataclass(frozen=True)
class PendingShot:
    """A costly shot waiting for its member to confirm the estimate."""

    id: int
    character: Character
    estimate: Money
    provider_label: str
    duration: int  # seconds; 0 for a sheet
    kind: WorkKind = WorkKind.ANIMATE


class AnimateService:
    def __init__(
        self,
        storage: Storage,
        library: Library,
        providers: ProviderRegistry,
        wake_worker: Callable[[int | None], None],
        *,
        budget: Budget | None = None,
        moderator: Moderator | None = None,
        max_queued_per_user: int = 10,
        sheet_provider: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._storage = storage
        self._library = library
        self._providers = providers
        self._wake = wake_worker
        self._budget = budget or Budget(storage, clock=clock)
        self._moderator = moderator or Moderator(storage)
        self._clock = clock
        self.max_queued_per_user = max_queued_per_user
        self.sheet_provider = sheet_provider

    def set_wake(self, wake_worker: Callable[[int | None], None]) -> None:
        self._wake = wake_worker

    async def queue(
        self,
        actor: Actor,
        place: Place,
        character: Character,
        shot: Shot,
        *,
        parent_job_id: int | None = None,
        confirmed: bool = False,
    ) -> Job | PendingShot:
        """Queue a shot, or hold it for a Confirm press when it costs more than the server's threshold."""
        server = await self._storage.guilds.get(actor.guild_id)
        rules = server.rules
        check_channel(rules, place)
        provider = await self._providers.for_guild(actor.guild_id, shot.provider or server.provider)
        caps = provider.capabilities
        action = shot.action.strip()
        if not action:
            raise InvalidInputError("Describe what happens in the shot, for example: `waves and smiles at the camera`.")
        if len(action) > ACTION_MAX:
            raise InvalidInputError(f"The shot description can be at most {ACTION_MAX} characters.")
        duration = shot.duration or caps.durations[0]
        if duration not in caps.durations:
            allowed = ", ".join(f"{d} s" for d in caps.durations)
            raise InvalidInputError(f"**{caps.name}** renders {allowed} clips, not {duration} s.")
        aspect = shot.aspect_ratio or caps.aspect_ratios[0]
        if aspect not in caps.aspect_ratios:
            raise InvalidInputError(f"**{caps.name}** takes the aspect ratios {', '.join(caps.aspect_ratios)}.")
        # the server's chosen video model applies to its chosen provider (when the member did not pick another)
        server_model = server.video_model if shot.provider in (None, server.provider) else None
        model = shot.model or (server_model if server_model in caps.models else None) or caps.default_model
        if model not in caps.models:
            raise InvalidInputError(f"**{caps.label}** has the models {', '.join(caps.models)}, not `{model}`.")
        if shot.mode is not None and shot.mode not in caps.modes:
            modes = ", ".join(caps.modes) or "none"
            raise InvalidInputError(f"**{caps.label}** has the quality modes: {modes}; `{shot.mode}` is not one.")
        mode = shot.mode or _mode_for(caps, shot.quality, rules)
        if shot.camera not in CAMERA_MOVES:
            raise InvalidInputError(f"Unknown camera move `{shot.camera}`: use one of {', '.join(CAMERA_MOVES)}.")
        if shot.setting and len(shot.setting) > SETTING_MAX:
            raise InvalidInputError(f"The setting can be at most {SETTING_MAX} characters.")
        await self._moderator.screen(
            actor.guild_id,
            actor.user_id,
            {"prompt": action, "setting": shot.setting, "negative prompt": shot.negative},
            nsfw_allowed=place.nsfw,
            rules=rules,
        )

        details = await self._library.details(actor, character)
        binding = choose_references(details.views, details.elements, caps.max_reference_images)
        if not binding.chosen:
            raise InvalidInputError(
                f"**{character.name}** has no reference images yet. Add a front view first with "
                "`/character view add`, then animate."
            )
        compiled = compile_prompt(
            character=character,
            action=action,
            camera=shot.camera,
            setting=shot.setting,
            binding=binding,
            syntax=caps.element_syntax,
            negative_supported=caps.negative_prompt,
            max_chars=caps.prompt_max_chars,
            negative_presets=DEFAULT_NEGATIVE_PRESETS if server.negative_presets is None else server.negative_presets,
            extra_negative=", ".join(t for t in (server.negative_extra, shot.negative) if t) or None,
            provider_label=caps.label,
        )
        typed = (action, shot.setting)
        await self._screen_prompt(actor, place, rules, character, binding, compiled.prompt, "shot", typed)
        estimate = provider.estimate_cost(
            RenderRequest(
                job_id=0,
                kind=WorkKind.ANIMATE,
                model=model,
                prompt=compiled.prompt,
                negative_prompt=compiled.negative_prompt,
                duration=duration,
                aspect_ratio=aspect,
                camera=shot.camera,
                images=(),
                mode=mode,
            )
        )
        if not confirmed and self._budget.needs_confirmation(rules, estimate):
            fixed = Shot(**{**asdict(shot), "duration": duration, "aspect_ratio": aspect, "model": model, "mode": mode})
            payload = {"shot": asdict(fixed), "parent_job_id": parent_job_id}
            return await self._hold_for_confirmation(actor, rules, place, character, estimate, payload, caps, duration)
        return await self._enqueue(
            actor,
            place.channel_id,
            character,
            rules=rules,
            kind=WorkKind.ANIMATE,
            provider=caps.name,
            model=model,
            action=action,
            prompt=compiled.prompt,
            negative_prompt=compiled.negative_prompt,
            params=ShotParams(
                duration=duration,
                aspect_ratio=aspect,
                camera=shot.camera,
                setting=shot.setting,
                mode=mode,
                notes=list(compiled.notes),
            ),
            binding=binding,
            estimate=estimate,
            parent_job_id=parent_job_id,
        )

    async def _screen_prompt(
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

    async def _enqueue(
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
                bound=[BoundImage(label=ref.label, role=ref.role, blob=ref.blob) for ref in binding.chosen],
                cost_estimate=estimate,
                parent_job_id=parent_job_id,
                tx=tx,
            )

        job = await self._budget.reserve_for(actor, rules, estimate, create, [cooldown, queue_room])
        self._wake(job.id)
        return job

    async def _hold_for_confirmation(
        self,
        actor: Actor,
        rules: ServerRules,
        place: Place,
        character: Character,
        estimate: Money,
        payload: dict[str, Any],
        caps: Capabilities,
        duration: int,
    ) -> PendingShot:
        """Keep a costly shot or sheet (`payload`, what `confirm` needs to queue it) until its member confirms."""
        await self._budget.precheck(actor, rules, estimate)  # never ask to confirm a refusal
        pending_id = await self._storage.pending.create(
            guild_id=actor.guild_id,
            user_id=actor.user_id,
            channel_id=place.channel_id,
            character_id=character.id,
            shot=json.dumps(payload),
        )
        kind = WorkKind.SHEET if "sheet" in payload else WorkKind.ANIMATE
        return PendingShot(pending_id, character, estimate, caps.label, duration, kind)

    async def confirm(self, actor: Actor, place: Place, pending_id: int) -> Job:
        """Queue a shot its member confirmed (once, however often the button is pressed)."""
        row = await self._storage.pending.take(actor.guild_id, actor.user_id, pending_id)
        if row is None:
            raise NotFoundError("This shot is no longer waiting for you: it was confirmed, canceled or expired.")
        data = json.loads(row.shot)
        character = await self._storage.characters.get(actor.guild_id, row.character_id)
        if character is None:
            raise NotFoundError("That character was deleted, so this shot can't be made.")
        if "sheet" in data:
            job = await self.queue_sheet(actor, place, character, data["sheet"]["style"], confirmed=True)
            assert isinstance(job, Job)
            return job
        shot = data["shot"]
        shot["quality"] = Quality(shot["quality"]) if shot.get("quality") else None
        job = await self.queue(
            actor, place, character, Shot(**shot), parent_job_id=data.get("parent_job_id"), confirmed=True
        )
        assert isinstance(job, Job)
        return job

    async def drop_pending(self, actor: Actor, pending_id: int) -> None:
        await self._storage.pending.take(actor.guild_id, actor.user_id, pending_id)

    async def job_for(self, actor: Actor, job_id: int) -> Job:
        """A job of the actor's server (never another server's, whatever id is guessed)."""
        job = await self._storage.jobs.get_in_guild(actor.guild_id, job_id)
        if job is None:
            raise NotFoundError(f"There is no job #{job_id} in this server.")
        return job

    def ensure_owner_or(self, actor: Actor, job: Job, *, can_moderate: bool, what: str) -> None:
        if actor.user_id != job.user_id and not can_moderate:
            raise NotAllowedError(f"Only <@{job.user_id}>, who queued shot #{job.id}, or a moderator can {what}.")

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

    async def cancel(self, actor: Actor, job_id: int) -> Job:
        job = await self.job_for(actor, job_id)
        self.ensure_owner_or(actor, job, can_moderate=actor.is_manager, what="cancel it")
        if job.state.finished:
            raise InvalidInputError(f"Shot #{job.id} is already {job.state.value}.")
        if job.state is JobState.UNSURE:
            raise InvalidInputError(
                f"Shot #{job.id} may already be at the provider: a manager decides with the **Send again** and "
                "**Release** buttons on its status message."
            )
        canceled = await self._storage.jobs.transition(
            job.id, [JobState.QUEUED], JobState.CANCELED, settle=Settlement(), finished_at=self._clock()
        )
        if canceled is None:  # already with the provider: the worker cancels it there
            await self._storage.jobs.update(job.id, cancel_requested=1)
            canceled = await self._storage.jobs.get(job.id)
        self._wake(job.id)
        assert canceled is not None
        return canceled

    async def decide_unsure(self, actor: Actor, job_id: int, *, send_again: bool) -> Job:
        """A manager's choice for a shot the provider may have: send it once more (back to the queue, sent when a
        slot is free) or release its money (nothing charged). Whoever's update matched decided; a second press
        finds the job no longer unsure."""
        job = await self.job_for(actor, job_id)
        if not actor.is_manager:
            raise NotAllowedError(
                f"Only a manager (Manage Server or a manager role) can decide what happens to shot #{job.id}."
            )
        if job.state is not JobState.UNSURE:
            raise InvalidInputError(
                f"Shot #{job.id} is no longer waiting for a manager (it is {job.state.label.lower()})."
            )
        who = f"<@{actor.user_id}>"
        if send_again:
            moved = await self._storage.jobs.transition(
                job.id,
                [JobState.UNSURE],
                JobState.QUEUED,
                submit_sent=0,
                attempts=0,
                error=None,
                started_at=None,
                next_poll_at=None,
                waiting_since=None,
            )
        else:
            moved = await self._storage.jobs.transition(
                job.id,
                [JobState.UNSURE],
                JobState.FAILED,
                settle=Settlement(),  # its hold released, nothing charged
                error=f"Released by {who}: not sent again, and nothing was charged for it.",
                finished_at=self._clock(),
            )
        if moved is None:
            raise InvalidInputError(f"Shot #{job.id} is no longer waiting for a manager: someone decided already.")
        await self._storage.audit.record(
            guild_id=actor.guild_id,
            user_id=actor.user_id,
            action="shot.resend" if send_again else "shot.release",
            detail=f"#{job.id} ({job.provider}, {job.cost_estimate.usd} USD held)",
        )
        self._wake(job.id)
        return moved

    async def again(
        self, actor: Actor, place: Place, job_id: int, *, action: str | None = None, same_shot: bool = True
    ) -> Job | PendingShot:
        """Re-roll (same shot), Edit prompt (same shot, new words) or Next shot (same character, new words)."""
        job = await self.job_for(actor, job_id)
        self.ensure_owner_or(actor, job, can_moderate=actor.is_manager, what="start another take from it")
        character = await self.character_of(actor, job, ", so this shot can't be taken again")
        params = job.params
        shot = Shot(
            action=action if action is not None else job.action,
            duration=params.duration if same_shot else None,
            camera=params.camera if same_shot else "push_in",
            aspect_ratio=params.aspect_ratio,
            setting=params.setting if same_shot else None,
            provider=job.provider,
            mode=params.mode,
            model=job.model,
        )
        return await self.queue(actor, place, character, shot, parent_job_id=job.id)

    # ------------------------------------------------------------------ generated sheets

    async def queue_sheet(
        self, actor: Actor, place: Place, character: Character, style: str | None, *, confirmed: bool = False
    ) -> Job | PendingShot:
        """Ask an image provider for a multi-angle sheet of the character, from its traits and references (held for
        a Confirm press, like a shot, when it costs more than the server's threshold)."""
        self._library.ensure_can_change(actor, character)  # the kept views will change the character
        rules = (await self._storage.guilds.get(actor.guild_id)).rules
        check_channel(rules, place)
        provider = await self._sheet_provider(actor.guild_id)
        caps = provider.capabilities
        style = clean_member_text(style)[:SETTING_MAX] if style else None
        await self._moderator.screen(
            actor.guild_id, actor.user_id, {"style": style}, nsfw_allowed=place.nsfw, rules=rules
        )
        details = await self._library.details(actor, character)
        binding = choose_references(details.views, [], min(caps.max_reference_images, 3))
        prompt = sheet_prompt(clean_member_text(character.name), clean_member_text(character.description), style)
        await self._screen_prompt(actor, place, rules, character, binding, prompt, "sheet", (style,))
        model = caps.image_model or caps.default_model
        estimate = provider.estimate_cost(
            RenderRequest(0, WorkKind.SHEET, model, prompt, None, 0, "16:9", "static", images=())
        )
        if not confirmed and self._budget.needs_confirmation(rules, estimate):
            payload = {"sheet": {"style": style}}
            return await self._hold_for_confirmation(actor, rules, place, character, estimate, payload, caps, 0)
        return await self._enqueue(
            actor,
            place.channel_id,
            character,
            rules=rules,
            kind=WorkKind.SHEET,
            provider=caps.name,
            model=model,
            action=f"character sheet{f' ({style})' if style else ''}",
            prompt=prompt[: caps.prompt_max_chars],
            negative_prompt=None,
            params=ShotParams(duration=0, aspect_ratio="16:9", camera="static", setting=style),
            binding=binding,
            estimate=estimate,
        )

    async def retry_sheet(self, actor: Actor, place: Place, job_id: int) -> Job | PendingShot:
        """Another generated sheet like job `job_id` (same character, same style)."""
        job = await self.job_for(actor, job_id)
        character = await self.character_of(actor, job)
        return await self.queue_sheet(actor, place, character, job.params.setting)

    async def _sheet_provider(self, guild_id: int) -> Provider:
        """The configured sheet provider, else the server's if it makes images, else local."""
        server = await self._storage.guilds.get(guild_id)
        names = await self._providers.names_for_guild(guild_id)
        for name in (self.sheet_provider, server.provider, self._providers.default, "local"):
            if name and name in names:
                provider = await self._providers.for_guild(guild_id, name)
                if WorkKind.SHEET in provider.capabilities.kinds:
                    return provider
        raise InvalidInputError("No provider on this bot can generate images for sheets.")

    async def sheet_figures(self, actor: Actor, job_id: int) -> tuple[Job, list[Figure]]:
        job = await self.job_for(actor, job_id)
        if job.kind is not WorkKind.SHEET or job.result_blob is None:
            raise InvalidInputError(f"Job #{job_id} is not a finished sheet.")
        data = await self._storage.blobs.get(job.result_blob)
        return job, await asyncio.to_thread(split_sheet, data)

    async def keep_views(self, actor: Actor, job_id: int, views: list[View] | None) -> tuple[Character, list[View]]:
        """Make figures of a generated sheet the character's references (all, or the chosen views)."""
        job, figures = await self.sheet_figures(actor, job_id)
        character = await self.character_of(actor, job)
        self._library.ensure_can_change(actor, character)
        chosen = [f for f in figures if views is None or f.view in views]
        if not chosen:
            raise InvalidInputError("None of those views were found on the sheet.")
        for figure in chosen:
            white, cutout = await asyncio.to_thread(
                lambda f=figure: (png_bytes(on_white(f.cutout)), png_bytes(f.cutout))
            )
            stored = StoredImage(
                original=await self._storage.blobs.put(white),
                cleaned=await self._storage.blobs.put(white),
                cutout=await self._storage.blobs.put(cutout),
            )
            await self._storage.references.set_view(actor.guild_id, character.id, figure.view, stored, actor.user_id)
        updated = await self._storage.characters.get(actor.guild_id, character.id)
        assert updated is not None
        return updated, [f.view for f in chosen]


def _mode_for(caps: Capabilities, quality: Quality | None, rules: ServerRules) -> str | None:
    """The provider mode for draft (its cheapest) or final (its best), where the provider has both."""
    if quality is not None and len(caps.modes) < 2:
        raise InvalidInputError(f"**{caps.label}** has a single quality, so draft and final are the same there.")
    chosen = quality or rules.quality
    if chosen is None or len(caps.modes) < 2:
        return None
    return caps.modes[0] if chosen is Quality.DRAFT else caps.modes[-1]
