"""/settings: server settings for admins (hidden from others by default, and checked on every use: Discord lets
an admin open the command to everyone in the server's integration settings, and then only the bot's check holds)."""

from __future__ import annotations

import re
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_io.arguments import bot_of, model_autocomplete, provider_autocomplete
from bot.discord_io.client import LikenessBot
from bot.discord_io.components import PROVIDER_KEY_FORM, provider_key_modal
from bot.discord_io.errors import FriendlyError
from bot.discord_io.replies import actor_of, modal_field
from bot.domain import GuildSettings, ServerRules
from bot.domain.errors import UserFacingError
from bot.generation.prompts import NEGATIVE_PRESETS
from bot.governance.budget import BudgetSummary
from bot.governance.server_settings import (
    COOLDOWN_MAX,
    QUEUED_MAX,
    RUNNING_MAX,
    describe_negative,
    ensure_settings_rights,
    money,
)
from bot.providers.accounts import KEY_SPECS, spec_of, still_rendering_note

LIST_ACTIONS = [
    app_commands.Choice(name="Add", value="add"),
    app_commands.Choice(name="Remove", value="remove"),
    app_commands.Choice(name="Clear", value="clear"),
]
PROVIDER_KEY_CHOICES = [app_commands.Choice(name=spec.label, value=spec.provider) for spec in KEY_SPECS.values()]


def check_settings_rights(interaction: discord.Interaction[Any]) -> None:
    """Refuse a member without Manage Server, whatever Discord let through (raises a FriendlyError)."""
    try:
        ensure_settings_rights(actor_of(interaction))
    except UserFacingError as exc:
        raise FriendlyError(str(exc)) from exc


async def settings_provider_autocomplete(
    interaction: discord.Interaction[Any], value: str
) -> list[app_commands.Choice[str]]:
    """Suggestions are part of the settings too (a server's own keys show in them): none for other members."""
    return await provider_autocomplete(interaction, value) if actor_of(interaction).manages_server else []


async def settings_model_autocomplete(
    interaction: discord.Interaction[Any], value: str
) -> list[app_commands.Choice[str]]:
    return await model_autocomplete(interaction, value) if actor_of(interaction).manages_server else []


OPENS_A_FORM = frozenset({"settings key set"})  # a form must be the first response: no deferral


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)  # hidden by default; Discord's admins can open it to anyone
class Settings(commands.GroupCog, group_name="settings", group_description="Server settings (Manage Server)"):
    def __init__(self, bot: LikenessBot) -> None:
        self.bot = bot
        super().__init__()

    async def cog_load(self) -> None:
        self.bot.forms.add(PROVIDER_KEY_FORM.pattern, submit_provider_key)  # a key form, opened whenever

    async def cog_unload(self) -> None:
        self.bot.forms.remove(PROVIDER_KEY_FORM.pattern)

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        """Every /settings command, key sub-commands included, checks Manage Server when it runs."""
        check_settings_rights(interaction)
        if interaction.command is not None and interaction.command.qualified_name not in OPENS_A_FORM:
            # settings are read and written in a few database trips: the answer fills in this private deferral
            await interaction.response.defer(ephemeral=True, thinking=True)
        return True

    @app_commands.command(name="show", description="Show this server's settings")
    async def show(self, interaction: discord.Interaction[Any]) -> None:
        actor = actor_of(interaction)
        settings = await self.bot.services.server_settings.view(actor)
        summary = await self.bot.services.budget.summary(actor)
        keys = await self.bot.services.provider_keys.status(actor.guild_id)
        await interaction.edit_original_response(
            embed=settings_embed(settings, summary, self.bot.services.providers.default, [k.label for k in keys])
        )

    @app_commands.command(name="provider", description="Choose the provider and video model new shots use")
    @app_commands.describe(
        provider="A provider this bot has, or 'default' for the bot's default",
        model="The provider's video model (leave empty for the provider's default)",
    )
    @app_commands.autocomplete(provider=settings_provider_autocomplete, model=settings_model_autocomplete)
    async def provider(self, interaction: discord.Interaction[Any], provider: str, model: str | None = None) -> None:
        updated = await self.bot.services.server_settings.set_provider(actor_of(interaction), provider, model)
        chosen = updated.provider or f"{self.bot.services.providers.default} (the bot's default)"
        await interaction.edit_original_response(
            content=f"New shots use **{chosen}**, model {updated.video_model or 'the provider default'}."
        )

    @app_commands.command(name="budget", description="Money caps (USD): the server per month, each member per day")
    @app_commands.describe(
        monthly="Whole server, per calendar month (UTC), e.g. 50; 'none' for no cap",
        daily="Each member, per UTC day, e.g. 2; 'none' for no limit",
        confirm_over="Shots estimated at this or more ask their member to confirm, e.g. 1; 'none' never asks",
    )
    async def budget(
        self,
        interaction: discord.Interaction[Any],
        monthly: app_commands.Range[str, 1, 20] | None = None,
        daily: app_commands.Range[str, 1, 20] | None = None,
        confirm_over: app_commands.Range[str, 1, 20] | None = None,
    ) -> None:
        updated = await self.bot.services.server_settings.set_budget(
            actor_of(interaction), monthly=monthly, daily=daily, confirm_over=confirm_over
        )
        rules = updated.rules
        await interaction.edit_original_response(
            content=f"Budget: server {money(rules.monthly_cap_usd)} a month; each member {money(rules.daily_cap_usd)} a day; "
            f"confirmation from {money(rules.confirm_over_usd) if rules.confirm_over_usd is not None else 'never'}."
        )

    @app_commands.command(name="limits", description="Cooldown, queue limits and the default quality for members")
    @app_commands.describe(
        cooldown="Seconds a member waits between shots (0: no cooldown)",
        max_queued="Shots one member may have waiting or rendering",
        max_running="Shots one member may have rendering at once",
        quality="The quality shots use unless the member picks one, where the provider has both",
    )
    @app_commands.choices(
        quality=[
            app_commands.Choice(name="Draft (cheaper)", value="draft"),
            app_commands.Choice(name="Final (best)", value="final"),
            app_commands.Choice(name="The provider's default", value="provider"),
        ]
    )
    async def limits(
        self,
        interaction: discord.Interaction[Any],
        cooldown: app_commands.Range[int, 0, COOLDOWN_MAX] | None = None,
        max_queued: app_commands.Range[int, 1, QUEUED_MAX] | None = None,
        max_running: app_commands.Range[int, 1, RUNNING_MAX] | None = None,
        quality: app_commands.Choice[str] | None = None,
    ) -> None:
        updated = await self.bot.services.server_settings.set_limits(
            actor_of(interaction),
            cooldown=cooldown,
            max_queued=max_queued,
            max_running=max_running,
            quality=quality.value if quality else None,
        )
        await interaction.edit_original_response(content=f"Limits: {describe_limits(updated.rules, self.bot)}.")

    @app_commands.command(name="channels", description="Where shots and sheets may be made (an empty list: anywhere)")
    @app_commands.describe(action="Add or remove a channel, or clear the list", channel="The channel")
    @app_commands.choices(action=LIST_ACTIONS)
    async def channels(
        self,
        interaction: discord.Interaction[Any],
        action: app_commands.Choice[str],
        channel: discord.TextChannel | None = None,
    ) -> None:
        updated = await self.bot.services.server_settings.set_channel(
            actor_of(interaction), action.value, channel.id if channel else None
        )
        await interaction.edit_original_response(
            content=f"Shots and sheets can be made {describe_channels(updated.rules)}."
        )

    @app_commands.command(name="managers", description="Roles that moderate Likeness like Manage Server does")
    @app_commands.describe(action="Add or remove a role, or clear the list", role="The role")
    @app_commands.choices(action=LIST_ACTIONS)
    async def managers(
        self, interaction: discord.Interaction[Any], action: app_commands.Choice[str], role: discord.Role | None = None
    ) -> None:
        updated = await self.bot.services.server_settings.set_manager_role(
            actor_of(interaction), action.value, role.id if role else None
        )
        await interaction.edit_original_response(content=f"Manager roles: {describe_roles(updated.rules)}.")

    @app_commands.command(name="blocklist", description="Words and patterns refused in prompts, names and descriptions")
    @app_commands.describe(
        action="Add or remove an entry, clear a list, or show both lists",
        kind="A word or phrase (whole words, any case), or a regular expression",
        value="The word, phrase or pattern",
    )
    @app_commands.choices(
        action=[*LIST_ACTIONS, app_commands.Choice(name="Show", value="show")],
        kind=[
            app_commands.Choice(name="Word or phrase", value="word"),
            app_commands.Choice(name="Regular expression", value="pattern"),
        ],
    )
    async def blocklist(
        self,
        interaction: discord.Interaction[Any],
        action: app_commands.Choice[str],
        kind: app_commands.Choice[str] | None = None,
        value: app_commands.Range[str, 1, 200] | None = None,
    ) -> None:
        service = self.bot.services.server_settings
        actor = actor_of(interaction)
        if action.value == "show":
            rules = (await service.view(actor)).rules
        else:
            rules = (await service.set_blocked(actor, action.value, kind.value if kind else "word", value)).rules
        await interaction.edit_original_response(content=describe_blocklist(rules))

    @app_commands.command(name="audit", description="Recent refusals and settings changes in this server")
    @app_commands.describe(count="How many entries to show (newest first)")
    async def audit(self, interaction: discord.Interaction[Any], count: app_commands.Range[int, 1, 25] = 15) -> None:
        entries = await self.bot.services.server_settings.audit(actor_of(interaction), count)
        lines = [
            f"<t:{int(e.created_at)}:f> <@{e.user_id}> **{e.action}** `{code_safe(e.detail)[:240]}`" for e in entries
        ]
        embed = discord.Embed(title="Audit log", colour=discord.Colour(0x5B8DEF))
        embed.description = "\n".join(lines)[:4000] or "Nothing yet: refusals and settings changes show here."
        await interaction.edit_original_response(embed=embed)

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
        await interaction.edit_original_response(
            content=f"Negative presets for new shots: {describe_negative(updated)}."
        )

    key = app_commands.Group(name="key", description="This server's own provider keys (stored encrypted)")

    @key.command(name="set", description="Give this server its own key for a provider (entered privately)")
    @app_commands.describe(provider="The provider whose key this server brings; its shots then use this key")
    @app_commands.choices(provider=PROVIDER_KEY_CHOICES)
    async def key_set(self, interaction: discord.Interaction[Any], provider: app_commands.Choice[str]) -> None:
        keys = self.bot.services.provider_keys
        spec = keys.check_can_set(actor_of(interaction), provider.value)  # before anyone types a key in vain
        modal = provider_key_modal(spec)
        await interaction.response.send_modal(modal)
        modal.stop()  # not kept in memory: the submit is handled from its custom id (bot.forms)

    @key.command(name="remove", description="Forget this server's own key for a provider")
    @app_commands.describe(provider="The provider whose server key is removed; its shots use the bot's key again")
    @app_commands.choices(provider=PROVIDER_KEY_CHOICES)
    async def key_remove(self, interaction: discord.Interaction[Any], provider: app_commands.Choice[str]) -> None:
        removed = await self.bot.services.provider_keys.remove(actor_of(interaction), provider.value)
        fallback = (
            "its shots use the bot's key again"
            if provider.value in self.bot.services.providers.names()
            else "it is not available here until a key is set again"
        )
        note = still_rendering_note(removed.in_use, "this")
        await interaction.edit_original_response(
            content=f"Removed the server's {removed.status.label} key; {fallback}.{note}"
        )

    @key.command(name="show", description="Which providers this server has its own key for (never the keys)")
    async def key_show(self, interaction: discord.Interaction[Any]) -> None:
        statuses = await self.bot.services.provider_keys.status(actor_of(interaction).guild_id)
        lines = [f"**{s.label}**: set by <@{s.set_by}> on <t:{int(s.set_at)}:D>" for s in statuses]
        await interaction.edit_original_response(
            content="\n".join(lines) or "This server uses the bot's provider keys (it has none of its own)."
        )


async def submit_provider_key(interaction: discord.Interaction[Any], match: re.Match[str]) -> None:
    """Hand the typed key to the service (which checks Manage Server again); it is not kept here."""
    check_settings_rights(interaction)  # a form is no command: the cog's check does not run for it
    provider = match["provider"]
    spec = spec_of(provider)
    await interaction.response.defer(ephemeral=True, thinking=True)  # the provider may be asked to check it
    fields = {field.name: modal_field(interaction, field.name) or "" for field in spec.fields}
    saved = await bot_of(interaction).services.provider_keys.set(actor_of(interaction), provider, fields)
    note = "" if saved.verified is not False else f" ({spec.label} could not be reached to check it now.)"
    note += still_rendering_note(saved.previous_in_use, "the previous")
    await interaction.followup.send(
        f"Saved the server's {spec.label} key; it will not be shown again.{note}", ephemeral=True
    )


def code_safe(text: str) -> str:
    """Text that can sit inside `inline code` (no backticks to break out of it)."""
    return text.replace("`", "'")


def describe_limits(rules: ServerRules, bot: LikenessBot) -> str:
    queued = rules.max_queued or bot.settings.max_queued_per_user
    running = rules.max_running or bot.settings.per_user_running
    cooldown = f"{rules.cooldown_seconds} s cooldown" if rules.cooldown_seconds else "no cooldown"
    quality = rules.quality.value if rules.quality else "the provider's default"
    return f"{cooldown}; {queued} shots waiting and {running} rendering per member; quality {quality}"


def describe_channels(rules: ServerRules) -> str:
    return "only in " + ", ".join(f"<#{c}>" for c in rules.allowed_channels) if rules.allowed_channels else "anywhere"


def describe_roles(rules: ServerRules) -> str:
    return ", ".join(f"<@&{r}>" for r in rules.manager_roles) or "none (Manage Server only)"


def describe_blocklist(rules: ServerRules) -> str:
    words = ", ".join(f"`{w}`" for w in rules.blocked_words) or "none"
    patterns = ", ".join(f"`{p}`" for p in rules.blocked_patterns) or "none"
    return f"**Blocked words:** {words}\n**Blocked patterns:** {patterns}"[:1900]


def settings_embed(settings: GuildSettings, summary: BudgetSummary, default: str, keys: list[str]) -> discord.Embed:
    rules = settings.rules
    embed = discord.Embed(title="Server settings", colour=discord.Colour(0x5B8DEF))
    embed.add_field(name="Provider", value=f"{settings.provider or f'{default} (default)'}")
    embed.add_field(name="Video model", value=settings.video_model or "the provider's default")
    embed.add_field(name="Server keys", value=", ".join(keys) or "none (the bot's keys)")
    embed.add_field(
        name="Budget",
        value=f"Server: {summary.server.committed} of {money(rules.monthly_cap_usd)} this month\n"
        f"Each member: {money(rules.daily_cap_usd)} a day\n"
        f"Confirm from: {money(rules.confirm_over_usd) if rules.confirm_over_usd is not None else 'never'}",
        inline=False,
    )
    quality = rules.quality.value if rules.quality else "the provider's default"
    embed.add_field(
        name="Limits",
        value=f"Cooldown: {rules.cooldown_seconds} s\nWaiting per member: {rules.max_queued or 'bot default'}\n"
        f"Rendering per member: {rules.max_running or 'bot default'}\nQuality: {quality}",
        inline=False,
    )
    embed.add_field(name="Channels", value=describe_channels(rules).capitalize(), inline=False)
    embed.add_field(name="Manager roles", value=describe_roles(rules), inline=False)
    embed.add_field(
        name="Block list",
        value=f"{len(rules.blocked_words)} words, {len(rules.blocked_patterns)} patterns "
        "(`/settings blocklist action:Show`)",
        inline=False,
    )
    embed.add_field(name="Negative presets", value=describe_negative(settings), inline=False)
    return embed


async def setup(bot: LikenessBot) -> None:
    await bot.add_cog(Settings(bot))
