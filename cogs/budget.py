"""/budget: what the server and the member spent, what is left, and the month as CSV for admins."""

from __future__ import annotations

import io
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_io.client import LikenessBot
from bot.discord_io.replies import actor_of
from bot.domain import Money
from bot.governance.budget import BudgetSummary
from storage.ledger import Totals


def _line(spend: Totals, cap: Money | None, period: str) -> str:
    held = f" (+{spend.held} held by shots in progress)" if spend.held else ""
    if cap is None:
        return f"{spend.charged} spent {period}{held}; no limit"
    return f"{spend.charged} spent {period}{held}; {max(Money.ZERO, cap - spend.committed)} left of {cap}"


def budget_embed(summary: BudgetSummary) -> discord.Embed:
    embed = discord.Embed(title="Budget", colour=discord.Colour(0x5B8DEF))
    embed.add_field(name="This server", value=_line(summary.server, summary.monthly_cap, "this month"), inline=False)
    embed.add_field(name="You", value=_line(summary.member, summary.daily_cap, "today"), inline=False)
    lines = [
        f"#{job.id} **{job.character_name}** · {job.state.value} · {cost}" + (" held" if not job.state.finished else "")
        for job, cost in summary.recent
    ]
    embed.add_field(name="Your last shots", value="\n".join(lines)[:1024] or "None yet.", inline=False)
    embed.set_footer(text=f"Days and months are UTC · today is {summary.day}")
    return embed


class Budget(commands.GroupCog, group_name="budget", group_description="Spending and what is left"):
    def __init__(self, bot: LikenessBot) -> None:
        self.bot = bot
        super().__init__()

    @app_commands.command(name="show", description="The server's and your spending, what is left, your last shots")
    @app_commands.guild_only()
    async def show(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)  # the month's ledger sums: a few reads
        summary = await self.bot.services.budget.summary(actor_of(interaction))
        await interaction.edit_original_response(embed=budget_embed(summary))

    @app_commands.command(name="export", description="The month's shots and costs as a CSV file (Manage Server)")
    @app_commands.describe(month="The month as YYYY-MM (default: this month, UTC)")
    @app_commands.guild_only()
    async def export(
        self, interaction: discord.Interaction[Any], month: app_commands.Range[str, 7, 7] | None = None
    ) -> None:
        name, data = await self.bot.services.budget.month_csv(actor_of(interaction), month)
        await interaction.response.send_message(
            f"Spending for {name.removeprefix('likeness-spend-').removesuffix('.csv')}.",
            file=discord.File(io.BytesIO(data), filename=name),
            ephemeral=True,
        )


async def setup(bot: LikenessBot) -> None:
    await bot.add_cog(Budget(bot))
