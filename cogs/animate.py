"""/animate and /queue, and the buttons under results. Thin: parse, check, call bot.generation.orders, reply."""

from __future__ import annotations

import re
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_io.arguments import (
    CharacterArg,
    aspect_autocomplete,
    bot_of,
    duration_autocomplete,
    mode_autocomplete,
    model_autocomplete,
    my_jobs_autocomplete,
    provider_autocomplete,
    upload_of,
)
from bot.discord_io.client import LikenessBot
from bot.discord_io.components import JOB, SHOT_FIELD, SHOT_FORM, UNSURE, shot_modal
from bot.discord_io.errors import report_error
from bot.discord_io.queued import ConfirmShot, answer_queued
from bot.discord_io.replies import actor_of, modal_field, place_of
from bot.domain import Job, JobState, Quality
from bot.domain.errors import UserFacingError
from bot.generation.orders import ACTION_MAX, Shot
from bot.generation.prompts import CAMERA_MOVES
from bot.library.characters import HIDDEN_CHARACTER

QUALITY_CHOICES = [
    app_commands.Choice(name="Draft (the provider's cheaper mode)", value=Quality.DRAFT.value),
    app_commands.Choice(name="Final (the provider's best mode)", value=Quality.FINAL.value),
]
CAMERA_CHOICES = [app_commands.Choice(name=key.replace("_", " "), value=key) for key in CAMERA_MOVES]


async def submit_shot_modal(interaction: discord.Interaction[Any], match: re.Match[str]) -> None:
    action = modal_field(interaction, SHOT_FIELD)
    if action is None:
        raise UserFacingError("That form came back empty; press the button again.")
    await interaction.response.defer(ephemeral=True, thinking=True)  # queueing takes a few database trips
    result = await bot_of(interaction).services.animate.again(
        actor_of(interaction),
        place_of(interaction),
        int(match["id"]),
        action=action,
        same_shot=match["kind"] == "edit",
    )
    await answer_queued(interaction, result)


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=JOB.pattern):
    """Re-roll, Edit prompt, Next shot and Delete under a result. The custom id carries the job id, so the
    buttons work after a restart; who may press is checked on every press."""

    def __init__(self, action: str, job_id: int) -> None:
        super().__init__(discord.ui.Button(custom_id=JOB.build(action=action, id=job_id)))
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
            modal.stop()  # not kept in memory: the submit is handled from its custom id (bot.forms)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)  # queueing takes a few database trips
        await answer_queued(
            interaction, await animate.again(actor, place_of(interaction), job.id), "Re-rolling: queued"
        )


class UnsureButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=UNSURE.pattern):
    """Send again / Release for a shot the provider may have (JobState.UNSURE). The custom id carries the job id,
    so the buttons work after a restart; only a manager may press (checked by the service on every press), and the
    job leaves `unsure` once, so a double press decides once."""

    def __init__(self, action: str, job_id: int) -> None:
        super().__init__(discord.ui.Button(custom_id=UNSURE.build(action=action, id=job_id)))
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
            await interaction.response.defer(ephemeral=True, thinking=True)  # the decision is a transaction
            job = await bot.services.animate.decide_unsure(actor_of(interaction), self.job_id, send_again=send_again)
            text = (
                f"Shot #{job.id} goes back to the queue and will be sent to {job.provider} once more."
                if send_again
                else f"Released shot #{job.id}: it is not sent again and nothing is charged for it."
            )
            await interaction.edit_original_response(content=text)
        except Exception as exc:
            await report_error(interaction, exc)


class Animate(commands.Cog):
    def __init__(self, bot: LikenessBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(JobButton, ConfirmShot, UnsureButton)
        self.bot.forms.add(SHOT_FORM.pattern, submit_shot_modal)  # Edit prompt / Next shot, opened whenever

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(JobButton, ConfirmShot, UnsureButton)
        self.bot.forms.remove(SHOT_FORM.pattern)

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
        audio="Native sound and voices, on models that render audio (costs more there)",
        end_frame="An image the clip should end on (PNG, JPEG or WebP), on models that take an end frame",
        start_frame="An image the clip should begin on (PNG, JPEG or WebP), instead of the character's lead view",
        with_character="Another character in the same shot (on models that take several)",
        and_character="A third character in the same shot (on models that take several)",
    )
    @app_commands.rename(with_character="with", and_character="and")
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
        audio: bool = False,
        end_frame: discord.Attachment | None = None,
        start_frame: discord.Attachment | None = None,
        with_character: CharacterArg | None = None,
        and_character: CharacterArg | None = None,
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
            audio=audio,
            cast=tuple(other.id for other in (with_character, and_character) if other is not None),
        )
        result = await self.bot.services.animate.queue(
            actor_of(interaction),
            place_of(interaction),
            character,
            shot,
            end_frame=upload_of(end_frame) if end_frame is not None else None,
            start_frame=upload_of(start_frame) if start_frame is not None else None,
        )
        await answer_queued(interaction, result)

    queue = app_commands.Group(name="queue", description="The render queue", guild_only=True)

    @queue.command(name="show", description="Your shots and this server's queue")
    async def queue_show(self, interaction: discord.Interaction[Any]) -> None:
        actor = actor_of(interaction)
        view = await self.bot.services.animate.queue_view(actor)
        jobs = view.jobs
        embed = discord.Embed(title="Render queue", colour=discord.Colour(0x5B8DEF))
        if not jobs:
            embed.description = "Nothing is waiting or rendering. Start a shot with `/animate`."

        def line(job: Job) -> str:
            where = f"position {view.places[job.id]}" if job.id in view.places else job.state.label.lower()
            name = view.names[job.id]  # private characters stay unnamed, still counted
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
        await interaction.response.defer(ephemeral=True, thinking=True)  # a cancel is a transaction
        canceled = await self.bot.services.animate.cancel(actor_of(interaction), job)
        if canceled.state is JobState.CANCELED:
            text = f"Canceled shot #{canceled.id}."
        else:
            text = f"Canceling shot #{canceled.id}: it is being stopped at the provider."
        await interaction.edit_original_response(content=text)


async def setup(bot: LikenessBot) -> None:
    await bot.add_cog(Animate(bot))
