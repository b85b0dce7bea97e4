"""/settings: server settings for admins (hidden from others by default, and checked on every use)."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import LikenessBot
from bot.discord_io.replies import actor_of
from bot.prompts import NEGATIVE_PRESETS
from bot.server_settings import describe_negative


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
@app_commands.checks.has_permissions(manage_guild=True)
class Settings(commands.GroupCog, group_name="settings", group_description="Server settings (Manage Server)"):
    def __init__(self, bot: LikenessBot) -> None:
        self.bot = bot
        super().__init__()

    @app_commands.command(name="show", description="Show this server's settings")
    async def show(self, interaction: discord.Interaction[Any]) -> None:
        settings = await self.bot.services.server_settings.get(actor_of(interaction).guild_id)
        embed = discord.Embed(title="Server settings", colour=discord.Colour(0x5B8DEF))
        embed.add_field(name="Provider", value=settings.provider or f"{self.bot.settings.default_provider} (default)")
        embed.add_field(name="Negative presets", value=describe_negative(settings), inline=False)
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @app_commands.command(name="negative", description="Choose the negative prompt presets every shot uses")
    @app_commands.describe(
        presets="Comma-separated: " + ", ".join(NEGATIVE_PRESETS) + "; or 'default' or 'none'",
        extra="Extra terms to avoid in every shot, comma-separated (optional)",
    )
    async def negative(
        self,
        interaction: discord.Interaction[Any],
        presets: app_commands.Range[str, 1, 200],
        extra: app_commands.Range[str, 1, 300] | None = None,
    ) -> None:
        updated = await self.bot.services.server_settings.set_negative(actor_of(interaction), presets, extra)
        await interaction.response.send_message(
            f"Negative presets for new shots: {describe_negative(updated)}.", ephemeral=True
        )


async def setup(bot: LikenessBot) -> None:
    await bot.add_cog(Settings(bot))
