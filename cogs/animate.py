"""/animate and /queue, and the buttons under results. Thin: parse, check, call bot.animate, reply."""

from __future__ import annotations

import re
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.animate import ACTION_MAX, PendingShot, Shot
from bot.app import LikenessBot
from bot.budget import to_micros, usd
from bot.discord_io.errors import LikenessView, handle_form, report_error
from bot.discord_io.replies import actor_of, modal_field, place_of
from bot.domain import Job, JobState, Quality
from bot.errors import UserFacingError
from bot.jobs.delivery import Progress
from bot.library import HIDDEN_CHARACTER
from bot.prompts import CAMERA_MOVES
from bot.providers.base import Capabilities, WorkKind
from cogs.characters import CharacterArg, bot_of

QUALITY_CHOICES = [
    app_commands.Choice(name="Draft (the provider's cheaper mode)", value=Quality.DRAFT.value),
    app_commands.Choice(name="Final (the provider's best mode)", value=Quality.FINAL.value),
]
CAMERA_CHOICES = [app_commands.Choice(name=key.replace("_", " "), value=key) for key in CAMERA_MOVES]


async def provider_autocomplete(interaction: discord.Interaction[Any], value: str) -> list[app_commands.Choice[str]]:
    providers = bot_of(interaction).services.providers
    names = await providers.names_for_guild(interaction.guild_id) if interaction.guild_id else providers.names()
    return [app_commands.Choice(name=n, value=n) for n in names if value.lower() in n][:25]


async def duration_autocomplete(interaction: discord.Interaction[Any], value: str) -> list[app_commands.Choice[int]]:
    caps = await _chosen_capabilities(interaction)
    durations = caps.durations if caps else ()
    return [app_commands.Choice(name=f"{d} seconds", value=d) for d in durations if value in str(d)][:25]


async def _chosen_capabilities(interaction: discord.Interaction[Any]) -> Capabilities | None:
    """The capabilities of the provider chosen so far in the command (or the default), for autocomplete."""
    providers = bot_of(interaction).services.providers
    chosen = getattr(interaction.namespace, "provider", None)
    if interaction.guild_id is None:
        return None
    try:
        return (
            await providers.for_guild(interaction.guild_id, chosen if isinstance(chosen, str) else None)
        ).capabilities
    except UserFacingError:
        return None


async def aspect_autocomplete(interaction: discord.Interaction[Any], value: str) -> list[app_commands.Choice[str]]:
    caps = await _chosen_capabilities(interaction)
    return [app_commands.Choice(name=a, value=a) for a in (caps.aspect_ratios if caps else ()) if value in a][:25]


async def mode_autocomplete(interaction: discord.Interaction[Any], value: str) -> list[app_commands.Choice[str]]:
    caps = await _chosen_capabilities(interaction)
    return [app_commands.Choice(name=m, value=m) for m in (caps.modes if caps else ()) if value in m][:25]


async def model_autocomplete(interaction: discord.Interaction[Any], value: str) -> list[app_commands.Choice[str]]:
    caps = await _chosen_capabilities(interaction)
    return [app_commands.Choice(name=m, value=m) for m in (caps.models if caps else ()) if value in m][:25]


async def my_jobs_autocomplete(interaction: discord.Interaction[Any], value: str) -> list[app_commands.Choice[int]]:
    if interaction.guild_id is None:
        return []
    jobs = await bot_of(interaction).storage.jobs.in_states(
        [JobState.QUEUED, JobState.SUBMITTING, JobState.RUNNING], guild_id=interaction.guild_id
    )
    actor = actor_of(interaction)
    mine = [j for j in jobs if j.user_id == actor.user_id or actor.is_manager]
    return [
        app_commands.Choice(name=f"#{j.id} {j.character_name}: {j.action}"[:100], value=j.id)
        for j in mine
        if value in str(j.id) or value.lower() in j.action.lower()
    ][:25]


def queued_text(job: Job, what: str = "Queued") -> str:
    """'Queued shot #12 of **Ava** (about $0.50). Progress and the clip will be posted in this channel.'"""
    cost = f" (about {usd(to_micros(job.cost_estimate))})" if to_micros(job.cost_estimate) > 0 else ""
    if job.kind == WorkKind.SHEET.value:
        return (
            f"{what} sheet #{job.id} of **{job.character_name}** ({job.provider}){cost}. It will be posted in this "
            "channel with buttons to keep the views."
        )
    return f"{what} shot #{job.id} of **{job.character_name}**{cost}. Progress and the clip will be posted in this channel."


async def answer_queued(interaction: discord.Interaction[Any], result: Job | PendingShot, what: str = "Queued") -> None:
    """Tell the member their shot is queued (and show its status in the channel), or ask them to confirm its cost.

    The answer is ephemeral: the first response, or an edit of the deferred one."""
    bot = bot_of(interaction)
    if isinstance(result, Job):
        await bot.delivery.show_status(result, Progress())
        notes = "".join(f"\n• {note}" for note in result.params.notes)
        content = f"{queued_text(result, what)}{notes}"
        shown = await bot.storage.jobs.get(result.id)
        if shown is not None and shown.status_message_id is None:
            content += (
                "\n⚠️ I can't post in this channel (I need View Channel, Send Messages, Attach Files, Embed Links and "
                "Read Message History). The clip is kept and posted here as soon as an admin lets me."
            )
        view = None
    else:
        what = "sheet" if result.kind is WorkKind.SHEET else f"{result.duration} s shot"
        content = (
            f"This {what} of **{result.character.name}** with {result.provider_label} is estimated "
            f"at **{usd(result.estimate)}**. Confirm to queue it (this expires in 15 minutes)."
        )
        view = LikenessView(timeout=None)
        view.add_item(ConfirmShot("yes", result.id))
        view.add_item(ConfirmShot("no", result.id))
    if interaction.response.is_done():
        await interaction.edit_original_response(content=content, view=view)
    elif view is not None:
        await interaction.response.send_message(content, view=view, ephemeral=True)
    else:
        await interaction.response.send_message(content, ephemeral=True)


class ConfirmShot(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"likeness:confirm:(?P<answer>yes|no):(?P<id>\d+)"
):
    """Confirm / Cancel under a costly shot's estimate. Only its member can press (checked in the service), and
    the pending shot is taken once, so a double press queues one shot."""

    def __init__(self, answer: str, pending_id: int) -> None:
        yes = answer == "yes"
        super().__init__(
            discord.ui.Button(
                label="Confirm" if yes else "Cancel",
                style=discord.ButtonStyle.success if yes else discord.ButtonStyle.secondary,
                custom_id=f"likeness:confirm:{answer}:{pending_id}",
            )
        )
        self.answer = answer
        self.pending_id = pending_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ConfirmShot:
        return cls(match["answer"], int(match["id"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            animate = bot_of(interaction).services.animate
            if self.answer == "no":
                await animate.drop_pending(actor_of(interaction), self.pending_id)
                await interaction.response.edit_message(content="Canceled: nothing was queued.", view=None)
                return
            actor, place = actor_of(interaction), place_of(interaction)
            # the channel rule before the pending shot is taken: a refusal leaves it waiting
            await bot_of(interaction).services.server_settings.check_place(actor.guild_id, place)
            job = await animate.confirm(actor, place, self.pending_id)
            await bot_of(interaction).delivery.show_status(job, Progress())
            await interaction.response.edit_message(content=queued_text(job), view=None)
        except Exception as exc:
            await report_error(interaction, exc)


SHOT_MODAL = re.compile(r"likeness:shot:(?P<kind>edit|next):(?P<id>\d+)")
SHOT_FIELD = "action"


def shot_modal(job: Job, *, same_shot: bool) -> discord.ui.Modal:
    """Edit prompt / Next shot: a form for the words of the new take. Its custom id carries the job, and its submit
    is handled by `submit_shot_modal` from the raw interaction, so a form opened before a restart still works."""
    kind = "edit" if same_shot else "next"
    modal = discord.ui.Modal(
        title=f"{'Edit the prompt of' if same_shot else 'Next shot of'} {job.character_name}"[:45],
        custom_id=f"likeness:shot:{kind}:{job.id}",
    )
    modal.add_item(
        discord.ui.TextInput(
            label="What happens in the shot",
            custom_id=SHOT_FIELD,
            style=discord.TextStyle.paragraph,
            default=job.action if same_shot else None,
            max_length=ACTION_MAX,
        )
    )
    return modal


async def submit_shot_modal(interaction: discord.Interaction[Any], match: re.Match[str]) -> None:
    action = modal_field(interaction, SHOT_FIELD)
    if action is None:
        raise UserFacingError("That form came back empty; press the button again.")
    result = await bot_of(interaction).services.animate.again(
        actor_of(interaction),
        place_of(interaction),
        int(match["id"]),
        action=action,
        same_shot=match["kind"] == "edit",
    )
    await answer_queued(interaction, result)


class JobButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"likeness:job:(?P<action>reroll|edit|next|delete):(?P<id>\d+)",
):
    """Re-roll, Edit prompt, Next shot and Delete under a result. The custom id carries the job id, so the
    buttons work after a restart; who may press is checked on every press."""

    def __init__(self, action: str, job_id: int) -> None:
        super().__init__(discord.ui.Button(custom_id=f"likeness:job:{action}:{job_id}"))
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> JobButton:
        return cls(match["action"], int(match["id"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            await self._act(interaction)
        except Exception as exc:
            await report_error(interaction, exc)

    async def _act(self, interaction: discord.Interaction[Any]) -> None:
        bot = bot_of(interaction)
        animate = bot.services.animate
        actor = actor_of(interaction)
        job = await animate.job_for(actor, self.job_id)
        if self.action == "delete":
            animate.ensure_owner_or(
                actor, job, can_moderate=interaction.permissions.manage_messages, what="delete this result"
            )
            if interaction.message is not None:
                await interaction.message.delete()
            await interaction.response.send_message(f"Deleted the result of shot #{job.id}.", ephemeral=True)
            return
        animate.ensure_owner_or(actor, job, can_moderate=actor.is_manager, what="start another take from it")
        await bot.services.server_settings.check_place(actor.guild_id, place_of(interaction))  # before any form
        if self.action in ("edit", "next"):
            modal = shot_modal(job, same_shot=self.action == "edit")
            await interaction.response.send_modal(modal)
            modal.stop()  # not kept in memory: the submit is handled from its custom id (see Animate.on_interaction)
            return
        await answer_queued(
            interaction, await animate.again(actor, place_of(interaction), job.id), "Re-rolling: queued"
        )


class UnsureButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"likeness:unsure:(?P<action>resend|release):(?P<id>\d+)"
):
    """Send again / Release for a shot the provider may have (JobState.UNSURE). The custom id carries the job id,
    so the buttons work after a restart; only a manager may press (checked by the service on every press), and the
    job leaves `unsure` once, so a double press decides once."""

    def __init__(self, action: str, job_id: int) -> None:
        super().__init__(discord.ui.Button(custom_id=f"likeness:unsure:{action}:{job_id}"))
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> UnsureButton:
        return cls(match["action"], int(match["id"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            bot = bot_of(interaction)
            send_again = self.action == "resend"
            job = await bot.services.animate.decide_unsure(actor_of(interaction), self.job_id, send_again=send_again)
            await bot.delivery.show_status(job, Progress())
            text = (
                f"Shot #{job.id} goes back to the queue and will be sent to {job.provider} once more."
                if send_again
                else f"Released shot #{job.id}: it is not sent again and nothing is charged for it."
            )
            await interaction.response.send_message(text, ephemeral=True)
        except Exception as exc:
            await report_error(interaction, exc)


class Animate(commands.Cog):
    def __init__(self, bot: LikenessBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(JobButton, ConfirmShot, UnsureButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(JobButton, ConfirmShot, UnsureButton)

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        """Edit prompt / Next shot forms, whenever they were opened (before a restart too)."""
        await handle_form(interaction, SHOT_MODAL, lambda match: submit_shot_modal(interaction, match))

    @app_commands.command(name="animate", description="Queue an animated shot of a character")
    @app_commands.describe(
        character="The character in the shot (its bound views and elements are used)",
        prompt="What happens, e.g. 'turns to the camera and smiles'",
        duration="Clip length in seconds (depends on the provider)",
        camera="Camera move",
        aspect="Frame shape (depends on the provider)",
        negative="Extra things to avoid, added to the server's negative presets",
        provider="Render provider (default: the server's)",
        mode="Quality mode, where the provider has them (e.g. Kling std / pro)",
        model="The provider's model (default: the bot's choice)",
        quality="Draft (cheaper, to try ideas) or final (best), where the provider has both",
    )
    @app_commands.choices(camera=CAMERA_CHOICES, quality=QUALITY_CHOICES)
    @app_commands.autocomplete(duration=duration_autocomplete)
    @app_commands.autocomplete(provider=provider_autocomplete, aspect=aspect_autocomplete)
    @app_commands.autocomplete(mode=mode_autocomplete, model=model_autocomplete)
    @app_commands.guild_only()
    async def animate(
        self,
        interaction: discord.Interaction[Any],
        character: CharacterArg,
        prompt: app_commands.Range[str, 1, ACTION_MAX],
        duration: app_commands.Range[int, 1, 60] | None = None,
        camera: app_commands.Choice[str] | None = None,
        aspect: str | None = None,
        negative: app_commands.Range[str, 1, 500] | None = None,
        provider: str | None = None,
        mode: str | None = None,
        model: str | None = None,
        quality: app_commands.Choice[str] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        shot = Shot(
            action=prompt,
            duration=duration,
            camera=camera.value if camera else "push_in",
            aspect_ratio=aspect,
            negative=negative,
            provider=provider,
            mode=mode,
            model=model,
            quality=Quality(quality.value) if quality else None,
        )
        result = await self.bot.services.animate.queue(actor_of(interaction), place_of(interaction), character, shot)
        await answer_queued(interaction, result)

    queue = app_commands.Group(name="queue", description="The render queue", guild_only=True)

    @queue.command(name="show", description="Your shots and this server's queue")
    async def queue_show(self, interaction: discord.Interaction[Any]) -> None:
        actor = actor_of(interaction)
        jobs = await self.bot.storage.jobs.in_states(
            [JobState.QUEUED, *[s for s in JobState if s.active], JobState.UNSURE], guild_id=actor.guild_id
        )
        places = await self.bot.worker.positions()
        embed = discord.Embed(title="Render queue", colour=discord.Colour(0x5B8DEF))
        if not jobs:
            embed.description = "Nothing is waiting or rendering. Start a shot with `/animate`."

        names = await self.bot.library.job_names(actor, jobs)  # private characters stay unnamed, still counted

        def line(job: Job) -> str:
            where = f"position {places[job.id]}" if job.id in places else job.state.label.lower()
            name = names[job.id]
            return f"#{job.id} {f'**{name}**' if name else HIDDEN_CHARACTER} · {where} · <@{job.user_id}>"

        mine = [line(j) for j in jobs if j.user_id == actor.user_id]
        everyone = [line(j) for j in jobs]
        if mine:
            embed.add_field(name="Your shots", value="\n".join(mine)[:1024], inline=False)
        if everyone:
            embed.add_field(name="This server", value="\n".join(everyone)[:1024], inline=False)
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @queue.command(name="cancel", description="Cancel a shot (yours, or any with Manage Server)")
    @app_commands.describe(job="The shot's number (#), as shown on its status message")
    @app_commands.autocomplete(job=my_jobs_autocomplete)
    async def queue_cancel(self, interaction: discord.Interaction[Any], job: int) -> None:
        canceled = await self.bot.services.animate.cancel(actor_of(interaction), job)
        if canceled.state is JobState.CANCELED:
            await self.bot.delivery.show_status(canceled, Progress())
            text = f"Canceled shot #{canceled.id}."
        else:
            text = f"Canceling shot #{canceled.id}: it is being stopped at the provider."
        await interaction.response.send_message(text, ephemeral=True)


async def setup(bot: LikenessBot) -> None:
    await bot.add_cog(Animate(bot))
