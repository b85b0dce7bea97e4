"""Answering an interaction whether or not it was already answered, and who is asking."""

from __future__ import annotations

import logging
from typing import Any

import discord

from bot.library import Actor

log = logging.getLogger(__name__)


def actor_of(interaction: discord.Interaction[Any]) -> Actor:
    """The member behind an interaction, with Manage Server resolved from Discord's computed permissions."""
    if interaction.guild_id is None:
        raise discord.app_commands.NoPrivateMessage()
    permissions = interaction.permissions
    user = interaction.user
    return Actor(
        guild_id=interaction.guild_id,
        user_id=user.id,
        is_manager=permissions.manage_guild or permissions.administrator,
        role_ids=frozenset(role.id for role in user.roles) if isinstance(user, discord.Member) else frozenset(),
    )


async def reply_ephemeral(interaction: discord.Interaction[Any], content: str) -> None:
    """An ephemeral message: the first response if none was sent yet, else a follow-up."""
    try:
        if interaction.response.is_done():
            await interaction.followup.send(content, ephemeral=True)
        else:
            await interaction.response.send_message(content, ephemeral=True)
    except discord.NotFound:
        # 10062: the interaction expired before we could answer; nothing more can be shown.
        log.warning("interaction %s expired before the reply could be sent", interaction.id)
