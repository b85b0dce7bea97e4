"""Shot orders: validate, bind the references, compile the prompt, estimate the cost, and queue the job (through
bot.generation.queueing, which generated sheets share).

Everything a member can get wrong is checked here, before a job exists; after that the worker owns it.
Cancel, a manager's choice for a shot the provider may have, and the result buttons' rules live here too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

from bot.domain import Actor, Character, Job, JobState, Quality, ServerRules, ShotParams, WorkKind
from bot.domain.errors import InvalidInputError, NotAllowedError, NotFoundError
from bot.generation.casting import CastMember, bind_cast
from bot.generation.prompts import CAMERA_MOVES, DEFAULT_NEGATIVE_PRESETS, choose_references, compile_prompt
from bot.generation.queueing import OrderQueue, PendingShot
from bot.governance.limits import Place, check_channel
from bot.jobs.delivery import Delivery, Progress
from bot.library.characters import Library, can_see
from bot.library.references import Upload
from bot.library.sheets.generate import SheetGenerator
from bot.providers.base import Capabilities, ModelRow, RenderRequest
from bot.providers.registry import ProviderRegistry
from storage import Storage
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
    audio: bool = False
    end_frame: str | None = None  # blob digest of the image the clip ends on
    start_frame: str | None = None  # blob digest of the image the clip begins on (else the lead view)
    cast: tuple[int, ...] = ()  # the other characters in the shot (ids), after the one it is queued for


@dataclass(frozen=True)
class QueueView:
    """The server's unfinished shots as one member may see them: place in line of the queued ones, and the
    character's name where this member may read it (None: hidden, still counted)."""

    jobs: list[Job]
    places: dict[int, int]
    names: dict[int, str | None]


class AnimateService:
    """Shot orders: a new shot, another take of one, confirming a costly order, cancel, and a manager's choice for
    a shot the provider may have. Generated sheets are bot.library.sheets.generate; both queue through `orders`."""

    def __init__(
        self,
        storage: Storage,
        library: Library,
        providers: ProviderRegistry,
        orders: OrderQueue,
        sheets: SheetGenerator,
        delivery: Delivery,
        positions: Callable[[], Awaitable[dict[int, int]]],
        take_frame: Callable[[Actor, Upload], Awaitable[str]] | None = None,
    ) -> None:
        self._storage = storage
        self._library = library
        self._providers = providers
        self._orders = orders
        self._sheets = sheets
        self._delivery = delivery  # a canceled or decided shot's status message changes at once
        self._positions = positions  # the worker's order of the queued shots
        self._take_frame = take_frame  # stores a member's start/end frame image, returns its digest

    async def queue(
        self,
        actor: Actor,
        place: Place,
        character: Character,
        shot: Shot,
        *,
        parent_job_id: int | None = None,
        confirmed: bool = False,
        end_frame: Upload | None = None,
        start_frame: Upload | None = None,
    ) -> Job | PendingShot:
        """Queue a shot, or hold it for a Confirm press when it costs more than the server's threshold.
        `start_frame` / `end_frame`: images the member attached for the clip to begin / end on (checked against
        the model first)."""
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
        # the server's chosen video model applies to its chosen provider (when the member did not pick another)
        server_model = server.video_model if shot.provider in (None, server.provider) else None
        model = shot.model or (server_model if server_model in caps.models else None) or caps.default_model
        row = caps.find_row(model)
        if row is None:
            raise InvalidInputError(f"**{caps.label}** has the models {', '.join(caps.models)}, not `{model}`.")
        duration = shot.duration or row.durations[0]
        aspect = shot.aspect_ratio or row.aspect_ratios[0]
        mode = _checked_mode(caps, row, shot.mode, shot.quality, rules)
        check_row(
            caps,
            row,
            duration=duration,
            aspect=aspect,
            mode=mode,
            audio=shot.audio,
            end_frame=end_frame is not None or shot.end_frame is not None,
            start_frame=start_frame is not None or shot.start_frame is not None,
        )
        if shot.camera not in CAMERA_MOVES:
            raise InvalidInputError(f"Unknown camera move `{shot.camera}`: use one of {', '.join(CAMERA_MOVES)}.")
        if shot.setting and len(shot.setting) > SETTING_MAX:
            raise InvalidInputError(f"The setting can be at most {SETTING_MAX} characters.")
        typed_words = {"prompt": action, "setting": shot.setting, "negative prompt": shot.negative}
        await self._orders.screen_words(actor, place, rules, typed_words)

        others = await self._cast_of(actor, character, tuple(shot.cast))
        if 1 + len(others) > row.max_subjects:
            can = [m for m in caps.clip_models_where(lambda r: r.max_subjects > len(others)) if m != row.model]
            raise InvalidInputError(
                f"**{caps.label}** `{row.model}` takes {_characters(row.max_subjects)} in one shot, not "
                f"{1 + len(others)}." + (f" For this cast, choose the model {_either(can)}." if can else "")
            )
        details = await self._library.details(actor, character)
        if others:
            members = [CastMember(character.name, details.views, details.elements)]
            for other in others:
                theirs = await self._library.details(actor, other)
                members.append(CastMember(other.name, theirs.views, theirs.elements))
            casting = bind_cast(members, row.max_images)
            if casting.unseated:
                names = ", ".join(f"**{name}**" for name in casting.unseated)
                raise InvalidInputError(
                    f"{names} would have no reference image in this shot: `{row.model}` takes "
                    f"{row.max_images} images in all, and every character needs at least a front view."
                )
            binding = casting.binding
        else:
            binding = choose_references(details.views, details.elements, row.max_images)
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
            syntax=row.element_syntax,
            negative_supported=row.negative_prompt,
            max_chars=row.prompt_max_chars,
            negative_presets=DEFAULT_NEGATIVE_PRESETS if server.negative_presets is None else server.negative_presets,
            extra_negative=", ".join(t for t in (server.negative_extra, shot.negative) if t) or None,
            provider_label=caps.label,
            with_characters=others,
        )
        typed = (action, shot.setting)
        await self._orders.screen_prompt(actor, place, rules, character, binding, compiled.prompt, "shot", typed)
        frame_digest = await self._frame(actor, end_frame, shot.end_frame)
        start_digest = await self._frame(actor, start_frame, shot.start_frame)
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
                audio=shot.audio,
            )
        )
        if self._orders.needs_confirmation(rules, estimate, confirmed=confirmed):
            fixed = Shot(
                **{
                    **asdict(shot),
                    "duration": duration,
                    "aspect_ratio": aspect,
                    "model": model,
                    "mode": mode,
                    "end_frame": frame_digest,
                    "start_frame": start_digest,
                }
            )
            payload = {"shot": asdict(fixed), "parent_job_id": parent_job_id}
            return await self._orders.hold_for_confirmation(
                actor, rules, place, character, estimate, payload, caps, duration, WorkKind.ANIMATE
            )
        return await self._orders.enqueue(
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
                audio=shot.audio,
                end_frame=frame_digest,
                start_frame=start_digest,
                cast=[other.id for other in others],
            ),
            binding=binding,
            estimate=estimate,
            parent_job_id=parent_job_id,
        )

    async def _cast_of(self, actor: Actor, lead: Character, ids: tuple[int, ...]) -> list[Character]:
        """The other characters of a shot, as they are now. One the member cannot see (another server's, private,
        deleted) is refused like a character that does not exist; so is the same character twice."""
        others: list[Character] = []
        for character_id in ids:
            if character_id == lead.id or character_id in (other.id for other in others):
                raise InvalidInputError("A character can be in a shot only once: choose different characters.")
            other = await self._storage.characters.get(actor.guild_id, character_id)
            if other is None or not can_see(actor, other):
                raise NotFoundError(
                    "A character of this shot does not exist (or is no longer shared with you): choose another."
                )
            others.append(other)
        return others

    async def _frame(self, actor: Actor, upload: Upload | None, kept: str | None) -> str | None:
        """The digest of a frame image: the member's new upload (stored now), else the one the shot kept."""
        if upload is None:
            return kept
        if self._take_frame is None:
            raise InvalidInputError("This bot does not take start or end frames.")
        return await self._take_frame(actor, upload)

    async def confirm(self, actor: Actor, place: Place, pending_id: int) -> Job:
        """Queue a shot (or generated sheet) its member confirmed (once, however often the button is pressed)."""
        pending = await self._orders.take_pending(actor, pending_id)
        data, character = pending.payload, pending.character
        if self._sheets.is_pending_sheet(data):
            return await self._sheets.confirmed(actor, place, character, data)
        shot = data["shot"]
        shot["quality"] = Quality(shot["quality"]) if shot.get("quality") else None
        job = await self.queue(
            actor, place, character, Shot(**shot), parent_job_id=data.get("parent_job_id"), confirmed=True
        )
        assert isinstance(job, Job)
        return job

    async def drop_pending(self, actor: Actor, pending_id: int) -> None:
        await self._orders.drop_pending(actor, pending_id)

    async def job_for(self, actor: Actor, job_id: int) -> Job:
        """A job of the actor's server (never another server's, whatever id is guessed)."""
        return await self._orders.job_for(actor, job_id)

    def ensure_owner_or(self, actor: Actor, job: Job, *, can_moderate: bool, what: str) -> None:
        if actor.user_id != job.user_id and not can_moderate:
            raise NotAllowedError(f"Only <@{job.user_id}>, who queued shot #{job.id}, or a moderator can {what}.")

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
            job.id, [JobState.QUEUED], JobState.CANCELED, settle=Settlement(), finished_at=self._orders.now()
        )
        if canceled is None:  # already with the provider: the worker cancels it there
            await self._storage.jobs.update(job.id, cancel_requested=1)
            canceled = await self._storage.jobs.get(job.id)
        self._orders.wake(job.id)
        assert canceled is not None
        if canceled.state is JobState.CANCELED:
            await self._delivery.show_status(canceled, Progress())
        return canceled

    async def queue_view(self, actor: Actor) -> QueueView:
        """What `/queue show` lists: this server's queued, rendering and unsure shots."""
        jobs = await self._storage.jobs.in_states(
            [JobState.QUEUED, *[s for s in JobState if s.active], JobState.UNSURE], guild_id=actor.guild_id
        )
        places = await self._positions()
        return QueueView(jobs, places, await self._library.job_names(actor, jobs))

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
                finished_at=self._orders.now(),
            )
        if moved is None:
            raise InvalidInputError(f"Shot #{job.id} is no longer waiting for a manager: someone decided already.")
        await self._storage.audit.record(
            guild_id=actor.guild_id,
            user_id=actor.user_id,
            action="shot.resend" if send_again else "shot.release",
            detail=f"#{job.id} ({job.provider}, {job.cost_estimate.usd} USD held)",
        )
        self._orders.wake(job.id)
        await self._delivery.show_status(moved, Progress())
        return moved

    async def again(
        self, actor: Actor, place: Place, job_id: int, *, action: str | None = None, same_shot: bool = True
    ) -> Job | PendingShot:
        """Re-roll (same shot), Edit prompt (same shot, new words) or Next shot (same character, new words)."""
        job = await self.job_for(actor, job_id)
        self.ensure_owner_or(actor, job, can_moderate=actor.is_manager, what="start another take from it")
        character = await self._orders.character_of(actor, job, ", so this shot can't be taken again")
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
            audio=params.audio,
            end_frame=params.end_frame if same_shot else None,
            start_frame=params.start_frame if same_shot else None,
            cast=tuple(params.cast),
        )
        return await self.queue(actor, place, character, shot, parent_job_id=job.id)


def _checked_mode(
    caps: Capabilities, row: ModelRow, asked: str | None, quality: Quality | None, rules: ServerRules
) -> str | None:
    """The mode asked for (refused when the model has no such mode), else the one draft/final picks (None: the
    provider's default, which the provider fits to the model)."""
    if asked is not None and asked not in row.modes:
        modes = ", ".join(row.modes) or "none (one quality)"
        raise InvalidInputError(f"**{caps.label}** `{row.model}` has the quality modes: {modes}; `{asked}` is not one.")
    return asked or _mode_for(caps, row, quality, rules)


def check_row(
    caps: Capabilities,
    row: ModelRow,
    *,
    duration: int,
    aspect: str,
    mode: str | None,
    audio: bool,
    end_frame: bool,
    start_frame: bool = False,
) -> None:
    """Refuse, before anything is held, what the chosen model cannot do, naming the limit and the models of the
    same provider that can."""

    def instead(test: Callable[[ModelRow], bool], what: str) -> str:
        others = [m for m in caps.clip_models_where(test) if m != row.model]
        return f" For {what}, choose the model {_either(others)}." if others else ""

    name = f"**{caps.label}** `{row.model}`"
    if duration not in row.durations:
        raise InvalidInputError(
            f"{name} renders {row.seconds_text()} clips, not {duration} s."
            + instead(lambda r: duration in r.durations, f"{duration} s")
        )
    if aspect not in row.aspect_ratios:
        raise InvalidInputError(
            f"{name} takes the aspect ratios {', '.join(row.aspect_ratios)}, not {aspect}."
            + instead(lambda r: aspect in r.aspect_ratios, aspect)
        )
    if audio and not row.audio:
        raise InvalidInputError(f"{name} renders no audio." + instead(lambda r: r.audio, "native audio"))
    if end_frame and not row.takes_end_frame(mode):
        if row.end_frame is not None and row.end_frame_modes:
            raise InvalidInputError(
                f"{name} takes an end frame only in the mode {_either(list(row.end_frame_modes))}: "
                f"add `mode:{row.end_frame_modes[0]}`."
            )
        raise InvalidInputError(f"{name} takes no end frame." + instead(lambda r: r.end_frame is not None, "one"))
    if start_frame and row.start_frame is None:
        raise InvalidInputError(f"{name} takes no start frame." + instead(lambda r: r.start_frame is not None, "one"))


def _characters(count: int) -> str:
    return "one character" if count == 1 else f"{count} characters"


def _either(names: list[str]) -> str:
    quoted = [f"`{n}`" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f" or {quoted[-1]}"


def _mode_for(caps: Capabilities, row: ModelRow, quality: Quality | None, rules: ServerRules) -> str | None:
    """The provider mode for draft (its cheapest) or final (its best), where the model has both."""
    if quality is not None and len(row.modes) < 2:
        raise InvalidInputError(
            f"**{caps.label}** `{row.model}` has a single quality, so draft and final are the same there."
        )
    chosen = quality or rules.quality
    if chosen is None or len(row.modes) < 2:
        return None
    return row.modes[0] if chosen is Quality.DRAFT else row.modes[-1]
