"""Answering an interaction whether or not it was already answered, and who is asking."""

from __future__ import annotations

import logging
from typing import Any

import discord

from bot.domain import Actor
from bot.governance.limits import Place

log = logging.getLogger(__name__)


ACTOR = "likeness_actor"  # where an interaction keeps its actor (in `interaction.extras`), worked out once


def actor_of(interaction: discord.Interaction[Any]) -> Actor:
    """The member behind an interaction: Manage Server from Discord's computed permissions, and moderator
    rights from it or from the server's manager roles (/settings managers). Worked out once per interaction
    (its transformers, checks and command all ask)."""
    actor = interaction.extras.get(ACTOR)
    if actor is None:
        actor = interaction.extras[ACTOR] = _actor(interaction)
    return actor


def _actor(interaction: discord.Interaction[Any]) -> Actor:
    if interaction.guild_id is None:
        raise discord.app_commands.NoPrivateMessage()
    permissions = interaction.permissions
    user = interaction.user
    role_ids = frozenset(role.id for role in user.roles) if isinstance(user, discord.Member) else frozenset()
    manages_server = permissions.manage_guild or permissions.administrator
    services = getattr(interaction.client, "services", None)
    manager_roles = services.server_settings.cached_rules(interaction.guild_id).manager_roles if services else []
    return Actor(
        guild_id=interaction.guild_id,
        user_id=user.id,
        is_manager=manages_server or bool(role_ids & set(manager_roles)),
        role_ids=role_ids,
        manages_server=manages_server,
    )


async def reply_ephemeral(interaction: discord.Interaction[Any], content: str) -> None:
    """An ephemeral message, seen by the member alone: the first response if none was sent yet, else a follow-up
    (after a public "thinking" deferral, a new one: see `clear_public_thinking`)."""
    try:
        if interaction.response.is_done():
            await clear_public_thinking(interaction)
            await interaction.followup.send(content, ephemeral=True)
        else:
            await interaction.response.send_message(content, ephemeral=True)
    except discord.NotFound:
        # 10062: the interaction expired before we could answer; nothing more can be shown.
        log.warning("interaction %s expired before the reply could be sent", interaction.id)


async def clear_public_thinking(interaction: discord.Interaction[Any]) -> None:
    """Delete a public "thinking" message that nothing filled in yet.

    On Discord the first follow-up after a deferral fills in the deferred message and keeps its flags, whatever the
    follow-up asks: after a public deferral an "ephemeral" follow-up is seen by the whole channel. Once the deferred
    message is deleted, a follow-up is a new message with its own flags."""
    if interaction.response.type is not discord.InteractionResponseType.deferred_channel_message:
        return
    try:
        original = await interaction.original_response()
        if original.flags.loading and not original.flags.ephemeral:
            await interaction.delete_original_response()
    except discord.NotFound:
        pass  # deleted already (by the member, or by an earlier error): the follow-up is a new message


def place_of(interaction: discord.Interaction[Any]) -> Place:
    """The channel of a generation command: a thread counts as its parent, and age restriction is resolved."""
    channel = interaction.channel
    assert interaction.channel_id is not None
    parent_id = channel.parent_id if isinstance(channel, discord.Thread) else None
    nsfw = channel.is_nsfw() if isinstance(channel, discord.TextChannel | discord.Thread) else False
    return Place(channel_id=interaction.channel_id, parent_id=parent_id, nsfw=nsfw)


def modal_field(interaction: discord.Interaction[Any], custom_id: str) -> str | None:
    """A submitted form's field, read from the raw interaction: forms whose submit is handled from their custom id
    (not from a Modal kept in memory) still work after a restart, and cannot arrive before the Modal is stored."""
    data: Any = interaction.data or {}
    for row in data.get("components", []):
        for child in row.get("components", []):
            if child.get("custom_id") == custom_id:
                return child.get("value")
    return None
