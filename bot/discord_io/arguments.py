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
from bot.library.references import Upload
from bot.providers.base import Capabilities, ModelRow


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
    """The chosen model's lengths (the provider's default model until a model is chosen)."""
    row = await _chosen_row(interaction)
    durations = sorted(row.durations) if row else ()
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


async def _chosen_row(interaction: discord.Interaction[Any]) -> ModelRow | None:
    """The row of the model chosen so far in the command: the typed model, else the server's, else the
    provider's default."""
    caps = await _chosen_capabilities(interaction)
    if caps is None or interaction.guild_id is None:
        return None
    typed = getattr(interaction.namespace, "model", None)
    if isinstance(typed, str) and caps.find_row(typed) is not None:
        return caps.row(typed)
    server = await bot_of(interaction).services.storage.guilds.get(interaction.guild_id)
    chosen = getattr(interaction.namespace, "provider", None)
    if chosen in (None, server.provider) and caps.find_row(server.video_model) is not None:
        return caps.row(server.video_model or "")
    return caps.default_row


async def aspect_autocomplete(interaction: discord.Interaction[Any], value: str) -> list[app_commands.Choice[str]]:
    row = await _chosen_row(interaction)
    return [app_commands.Choice(name=a, value=a) for a in (row.aspect_ratios if row else ()) if value in a][:25]


async def mode_autocomplete(interaction: discord.Interaction[Any], value: str) -> list[app_commands.Choice[str]]:
    row = await _chosen_row(interaction)
    return [app_commands.Choice(name=m, value=m) for m in (row.modes if row else ()) if value in m][:25]


async def model_autocomplete(interaction: discord.Interaction[Any], value: str) -> list[app_commands.Choice[str]]:
    """The provider's clip models, each with what it takes ("kling-v3 · 3-15 s · audio")."""
    caps = await _chosen_capabilities(interaction)
    rows = [row for row in (caps.rows if caps else ()) if row.makes_clips and value.lower() in row.model.lower()]
    return [app_commands.Choice(name=_model_label(row)[:100], value=row.model) for row in rows][:25]


def _model_label(row: ModelRow) -> str:
    parts = [row.model, row.seconds_text()]
    if row.audio:
        parts.append("audio")
    if row.end_frame is not None:
        parts.append("end frame")
    if row.multi_shot is not None:
        parts.append(f"up to {row.multi_shot.max_shots} shots")
    return " · ".join(parts)


def upload_of(attachment: discord.Attachment) -> Upload:
    return Upload(attachment.url, attachment.filename, attachment.size, attachment.content_type)


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
