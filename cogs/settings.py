"""/settings: server settings for admins (hidden from others by default, and checked on every use)."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import LikenessBot
from bot.discord_io.errors import report_error
from bot.discord_io.replies import actor_of
from bot.prompts import NEGATIVE_PRESETS
from bot.provider_keys import KEY_SPECS, KeySpec, ProviderKeys
from bot.server_settings import describe_negative

PROVIDER_KEY_CHOICES = [app_commands.Choice(name=spec.label, value=spec.provider) for spec in KEY_SPECS.values()]


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

    key = app_commands.Group(name="key", description="This server's own provider keys (stored encrypted)")

    @key.command(name="set", description="Give this server its own key for a provider (entered privately)")
    @app_commands.describe(provider="The provider whose key this server brings; its shots then use this key")
    @app_commands.choices(provider=PROVIDER_KEY_CHOICES)
    @app_commands.checks.has_permissions(manage_guild=True)
    async def key_set(self, interaction: discord.Interaction[Any], provider: app_commands.Choice[str]) -> None:
        keys = self.bot.services.provider_keys
        spec = keys.check_can_set(actor_of(interaction), provider.value)  # before anyone types a key in vain
        await interaction.response.send_modal(ProviderKeyModal(keys, spec))

    @key.command(name="remove", description="Forget this server's own key for a provider")
    @app_commands.describe(provider="The provider whose server key is removed; its shots use the bot's key again")
    @app_commands.choices(provider=PROVIDER_KEY_CHOICES)
    @app_commands.checks.has_permissions(manage_guild=True)
    async def key_remove(self, interaction: discord.Interaction[Any], provider: app_commands.Choice[str]) -> None:
        removed = await self.bot.services.provider_keys.remove(actor_of(interaction), provider.value)
        fallback = (
            "its shots use the bot's key again"
            if provider.value in self.bot.services.providers.names()
            else "it is not available here until a key is set again"
        )
        await interaction.response.send_message(
            f"Removed the server's {removed.label} key; {fallback}.", ephemeral=True
        )

    @key.command(name="show", description="Which providers this server has its own key for (never the keys)")
    @app_commands.checks.has_permissions(manage_guild=True)
    async def key_show(self, interaction: discord.Interaction[Any]) -> None:
        statuses = await self.bot.services.provider_keys.status(actor_of(interaction).guild_id)
        lines = [f"**{s.label}**: set by <@{s.set_by}> on <t:{int(s.set_at)}:D>" for s in statuses]
        await interaction.response.send_message(
            "\n".join(lines) or "This server uses the bot's provider keys (it has none of its own).", ephemeral=True
        )


class ProviderKeyModal(discord.ui.Modal):
    """The fields of a provider's key: required, never prefilled, handed to the service and not kept here."""

    def __init__(self, keys: ProviderKeys, spec: KeySpec) -> None:
        super().__init__(
            title=f"This server's {spec.label} key"[:45], custom_id=f"likeness:provider-key:{spec.provider}"
        )
        self.keys = keys
        self.spec = spec
        self.inputs: list[discord.ui.TextInput[ProviderKeyModal]] = []
        for field in spec.fields:
            text: discord.ui.TextInput[ProviderKeyModal] = discord.ui.TextInput(
                label=field.label, custom_id=field.name, placeholder=field.placeholder, max_length=field.max_length
            )
            self.inputs.append(text)
            self.add_item(text)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)  # the provider may be asked to check it
        fields = {text.custom_id: text.value for text in self.inputs}
        saved = await self.keys.set(actor_of(interaction), self.spec.provider, fields)
        note = "" if saved.verified is not False else f" ({self.spec.label} could not be reached to check it now.)"
        await interaction.followup.send(
            f"Saved the server's {self.spec.label} key; it will not be shown again.{note}", ephemeral=True
        )

    async def on_error(self, interaction: discord.Interaction[Any], error: Exception) -> None:
        await report_error(interaction, error)


async def setup(bot: LikenessBot) -> None:
    await bot.add_cog(Settings(bot))
