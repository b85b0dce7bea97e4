"""Slash command arguments shared by the cogs: the bot behind an interaction, the character transformer, and the
autocompletes (only what this member may see in this server is suggested)."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from bot.discord_io.client import LikenessBot
from bot.discord_io.errors import FriendlyError
from bot.discord_io.replies import actor_of
from bot.domain import Character, JobState
from bot.domain.errors import UserFacingError
from bot.providers.base import Capabilities


def bot_of(interaction: discord.Interaction[Any]) -> LikenessBot:
    client = interaction.client
    assert isinstance(client, LikenessBot)
    return client


class CharacterName(app_commands.Transformer):
    """A character of this server, picked by name, with autocomplete. Other servers' names never show."""

    async def autocomplete(  # type: ignore[override]
        self, interaction: discord.Interaction[Any], value: str
    ) -> list[app_commands.Choice[str]]:
        if interaction.guild_id is None:
            return []
        names = await bot_of(interaction).services.library.suggest(actor_of(interaction), value)
        return [app_commands.Choice(name=name, value=name) for name in names]

    async def transform(self, interaction: discord.Interaction[Any], value: str) -> Character:
        try:
            return await bot_of(interaction).services.library.get(actor_of(interaction), value)
        except UserFacingError as exc:
            raise FriendlyError(str(exc)) from exc


CharacterArg = app_commands.Transform[Character, CharacterName]


async def element_autocomplete(interaction: discord.Interaction[Any], value: str) -> list[app_commands.Choice[str]]:
    """Elements of the character chosen in the same command; nothing for a character the member cannot see."""
    typed_character = getattr(interaction.namespace, "character", None)
    if interaction.guild_id is None or not isinstance(typed_character, str):
        return []
    library, actor = bot_of(interaction).services.library, actor_of(interaction)
    try:
        details = await library.details(actor, await library.get(actor, typed_character))
    except UserFacingError:
        return []
    typed = value.casefold()
    names = [element.name for element in details.elements]
    return [app_commands.Choice(name=n, value=n) for n in names if typed in n.casefold()][:25]


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
    jobs = await bot_of(interaction).services.storage.jobs.in_states(
        [JobState.QUEUED, JobState.SUBMITTING, JobState.RUNNING], guild_id=interaction.guild_id
    )
    actor = actor_of(interaction)
    mine = [j for j in jobs if j.user_id == actor.user_id or actor.is_manager]
    return [
        app_commands.Choice(name=f"#{j.id} {j.character_name}: {j.action}"[:100], value=j.id)
        for j in mine
        if value in str(j.id) or value.lower() in j.action.lower()
    ][:25]
