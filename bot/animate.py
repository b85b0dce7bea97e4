"""Queueing shots: validate, bind the references, compile the prompt, estimate the cost, persist the job.

Everything a member can get wrong is checked here, before a job exists; after that the worker owns it.
Cancel and the result buttons' rules live here too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from bot.domain import BoundImage, Character, Job, JobState, ShotParams, StoredImage, View
from bot.errors import InvalidInputError, NotAllowedError, NotFoundError
from bot.library import Actor, Library
from bot.prompts import (
    CAMERA_MOVES,
    DEFAULT_NEGATIVE_PRESETS,
    Binding,
    choose_references,
    clean_member_text,
    compile_prompt,
)
from bot.providers.base import Provider, RenderRequest, WorkKind
from bot.providers.registry import ProviderRegistry
from bot.references import png_bytes
from bot.sheet_split import Figure, on_white, sheet_prompt, split_sheet
from storage import Storage

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


class AnimateService:
    def __init__(
        self,
        storage: Storage,
        library: Library,
        providers: ProviderRegistry,
        wake_worker: Callable[[int | None], None],
        *,
        max_queued_per_user: int = 10,
        sheet_provider: str | None = None,
    ) -> None:
        self._storage = storage
        self._library = library
        self._providers = providers
        self._wake = wake_worker
        self.max_queued_per_user = max_queued_per_user
        self.sheet_provider = sheet_provider

    def set_wake(self, wake_worker: Callable[[int | None], None]) -> None:
        self._wake = wake_worker

    async def queue(
        self, actor: Actor, channel_id: int, character: Character, shot: Shot, *, parent_job_id: int | None = None
    ) -> Job:
        server = await self._storage.guilds.get(actor.guild_id)
        provider = self._providers.get(shot.provider or server.provider)
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
        model = shot.model or caps.default_model
        if model not in caps.models:
            raise InvalidInputError(f"**{caps.label}** has the models {', '.join(caps.models)}, not `{model}`.")
        if shot.mode is not None and shot.mode not in caps.modes:
            modes = ", ".join(caps.modes) or "none"
            raise InvalidInputError(f"**{caps.label}** has the quality modes: {modes}; `{shot.mode}` is not one.")
        if shot.camera not in CAMERA_MOVES:
            raise InvalidInputError(f"Unknown camera move `{shot.camera}`: use one of {', '.join(CAMERA_MOVES)}.")
        if shot.setting and len(shot.setting) > SETTING_MAX:
            raise InvalidInputError(f"The setting can be at most {SETTING_MAX} characters.")
        await self._check_queue_room(actor)

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
                mode=shot.mode,
            )
        )
        return await self._enqueue(
            actor,
            channel_id,
            character,
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
                mode=shot.mode,
                notes=list(compiled.notes),
            ),
            binding=binding,
            estimate=estimate,
            parent_job_id=parent_job_id,
        )

    async def _enqueue(
        self,
        actor: Actor,
        channel_id: int,
        character: Character,
        *,
        kind: WorkKind,
        provider: str,
        model: str,
        action: str,
        prompt: str,
        negative_prompt: str | None,
        params: ShotParams,
        binding: Binding,
        estimate: Decimal,
        parent_job_id: int | None = None,
    ) -> Job:
        """Persist a job for the worker (state queued) and wake it."""
        job = await self._storage.jobs.create(
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
            cost_estimate=str(estimate),
            parent_job_id=parent_job_id,
        )
        self._wake(job.id)
        return job

    async def _check_queue_room(self, actor: Actor) -> None:
        waiting = await self._storage.jobs.in_states(
            [JobState.QUEUED, JobState.SUBMITTING, JobState.RUNNING], guild_id=actor.guild_id
        )
        mine = [job for job in waiting if job.user_id == actor.user_id]
        if len(mine) >= self.max_queued_per_user:
            raise NotAllowedError(
                f"You already have {len(mine)} shots waiting or rendering; the limit is {self.max_queued_per_user}. "
                "Wait for some to finish, or cancel one with `/queue cancel`."
            )

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
        return character

    async def cancel(self, actor: Actor, job_id: int) -> Job:
        job = await self.job_for(actor, job_id)
        self.ensure_owner_or(actor, job, can_moderate=actor.is_manager, what="cancel it")
        if job.state.finished:
            raise InvalidInputError(f"Shot #{job.id} is already {job.state.value}.")
        canceled = await self._storage.jobs.transition(job.id, [JobState.QUEUED], JobState.CANCELED)
        if canceled is None:  # already with the provider: the worker cancels it there
            await self._storage.jobs.update(job.id, cancel_requested=1)
            canceled = await self._storage.jobs.get(job.id)
        self._wake(job.id)
        assert canceled is not None
        return canceled

    async def again(
        self, actor: Actor, channel_id: int, job_id: int, *, action: str | None = None, same_shot: bool = True
    ) -> Job:
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
        return await self.queue(actor, channel_id, character, shot, parent_job_id=job.id)

    # ------------------------------------------------------------------ generated sheets

    async def queue_sheet(self, actor: Actor, channel_id: int, character: Character, style: str | None) -> Job:
        """Ask an image provider for a multi-angle sheet of the character, from its traits and references."""
        self._library.ensure_can_change(actor, character)  # the kept views will change the character
        provider = await self._sheet_provider(actor.guild_id)
        caps = provider.capabilities
        style = clean_member_text(style)[:SETTING_MAX] if style else None
        await self._check_queue_room(actor)
        details = await self._library.details(actor, character)
        binding = choose_references(details.views, [], min(caps.max_reference_images, 3))
        prompt = sheet_prompt(clean_member_text(character.name), clean_member_text(character.description), style)
        model = caps.image_model or caps.default_model
        estimate = provider.estimate_cost(
            RenderRequest(0, WorkKind.SHEET, model, prompt, None, 0, "16:9", "static", images=())
        )
        return await self._enqueue(
            actor,
            channel_id,
            character,
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

    async def retry_sheet(self, actor: Actor, channel_id: int, job_id: int) -> Job:
        """Another generated sheet like job `job_id` (same character, same style)."""
        job = await self.job_for(actor, job_id)
        character = await self.character_of(actor, job)
        return await self.queue_sheet(actor, channel_id, character, job.params.setting)

    async def _sheet_provider(self, guild_id: int) -> Provider:
        """The configured sheet provider, else the server's if it makes images, else local."""
        server = await self._storage.guilds.get(guild_id)
        for name in (self.sheet_provider, server.provider, self._providers.default, "local"):
            if name and name in self._providers.names():
                provider = self._providers.get(name)
                if WorkKind.SHEET in provider.capabilities.kinds:
                    return provider
        raise InvalidInputError("No provider on this bot can generate images for sheets.")

    async def sheet_figures(self, actor: Actor, job_id: int) -> tuple[Job, list[Figure]]:
        job = await self.job_for(actor, job_id)
        if job.kind != WorkKind.SHEET.value or job.result_blob is None:
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
