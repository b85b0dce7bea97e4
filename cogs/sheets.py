"""/sheet: the character sheet of a character's current version."""

from __future__ import annotations

import io
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import LikenessBot
from bot.discord_io.replies import actor_of
from cogs.characters import CharacterArg


class Sheets(commands.Cog):
    def __init__(self, bot: LikenessBot) -> None:
        self.bot = bot

    @app_commands.command(name="sheet", description="Post the character sheet: every view, the face and elements")
    @app_commands.describe(character="The character whose sheet to post")
    @app_commands.guild_only()
    async def sheet(self, interaction: discord.Interaction[Any], character: CharacterArg) -> None:
        await interaction.response.defer(thinking=True)
        result = await self.bot.services.sheets.sheet(actor_of(interaction), character)
        lines = [f"📋 **{character.name}** · character sheet v{character.version}"]
        if result.hint:
            lines.append(result.hint)
        slug = "".join(ch if ch.isalnum() else "-" for ch in character.name.lower()).strip("-") or "character"
        await interaction.followup.send(
            "\n".join(lines),
            file=discord.File(io.BytesIO(result.png), filename=f"{slug}-v{character.version}-sheet.png"),
        )


async def setup(bot: LikenessBot) -> None:
    await bot.add_cog(Sheets(bot))
