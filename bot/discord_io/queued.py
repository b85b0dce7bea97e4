"""The answer to a member who asked for a shot or a sheet: queued (its status goes to the channel), or an estimate
to confirm with the Confirm / Cancel buttons (whose presses are handled here too, by `ConfirmShot`)."""

from __future__ import annotations

import re
from typing import Any

import discord

from bot.discord_io.arguments import bot_of
from bot.discord_io.components import CONFIRM
from bot.discord_io.errors import LikenessView, report_error
from bot.discord_io.replies import actor_of, place_of
from bot.domain import Job, Money, WorkKind
from bot.generation.queueing import PendingShot
from bot.jobs.delivery import Progress


def queued_text(job: Job, what: str = "Queued") -> str:
    """'Queued shot #12 of **Ava** (about $0.50). Progress and the clip will be posted in this channel.'"""
    cost = f" (about {job.cost_estimate})" if job.cost_estimate > Money.ZERO else ""
    if job.kind is WorkKind.SHEET:
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
        await bot.services.delivery.show_status(result, Progress())
        notes = "".join(f"\n• {note}" for note in result.params.notes)
        content = f"{queued_text(result, what)}{notes}"
        shown = await bot.services.storage.jobs.get(result.id)
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
            f"at **{result.estimate}**. Confirm to queue it (this expires in 15 minutes)."
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


class ConfirmShot(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CONFIRM.pattern):
    """Confirm / Cancel under a costly shot's estimate. Only its member can press (checked in the service), and
    the pending shot is taken once, so a double press queues one shot."""

    def __init__(self, answer: str, pending_id: int) -> None:
        yes = answer == "yes"
        super().__init__(
            discord.ui.Button(
                label="Confirm" if yes else "Cancel",
                style=discord.ButtonStyle.success if yes else discord.ButtonStyle.secondary,
                custom_id=CONFIRM.build(answer=answer, id=pending_id),
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
            await bot_of(interaction).services.delivery.show_status(job, Progress())
            await interaction.response.edit_message(content=queued_text(job), view=None)
        except Exception as exc:
            await report_error(interaction, exc)
