"""The command tree's error handler: known errors become friendly ephemeral replies, the rest an error id."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import discord
from discord import app_commands

from bot.discord_io.replies import reply_ephemeral
from bot.domain.errors import UserFacingError
from bot.infra.logs import set_logging_context

log = logging.getLogger(__name__)

UNKNOWN_INTERACTION = 10062

SYNC_HINT = "This command is out of date here; a server admin can refresh commands with `likeness sync`."


class FriendlyError(app_commands.AppCommandError):
    """An AppCommandError whose message is for the member (raised by transformers and checks)."""


def describe_permissions(names: list[str]) -> str:
    return ", ".join(name.replace("_", " ").replace("guild", "server").title() for name in names)


def friendly_message(error: BaseException) -> str | None:
    """The member-facing message for a known error, or None for a bug."""
    if isinstance(error, app_commands.CommandInvokeError | app_commands.TransformerError):
        cause = error.__cause__ if isinstance(error, app_commands.TransformerError) else error.original
        if isinstance(cause, UserFacingError | FriendlyError):
            return str(cause)
        if isinstance(error, app_commands.TransformerError) and cause is None:
            return f"I couldn't understand **{error.value}** for that option."
        return None
    if isinstance(error, UserFacingError | FriendlyError):
        return str(error)
    if isinstance(error, app_commands.NoPrivateMessage):
        return "This command works in a server, not in direct messages."
    if isinstance(error, app_commands.MissingPermissions):
        return f"You need the {describe_permissions(error.missing_permissions)} permission for this."
    if isinstance(error, app_commands.BotMissingPermissions):
        return f"I need the {describe_permissions(error.missing_permissions)} permission here for this."
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"Slow down a little: try again in {error.retry_after:.0f} s."
    if isinstance(error, app_commands.CommandNotFound | app_commands.CommandSignatureMismatch):
        return SYNC_HINT
    if isinstance(error, app_commands.CheckFailure):
        return "You can't use this command here."
    return None


def what_was_used(interaction: discord.Interaction[Any]) -> str:
    """The command, button or form behind an interaction, for logs: its name or custom id, never what was typed
    (a form's fields can hold a provider key)."""
    if interaction.command is not None:
        return interaction.command.qualified_name
    data: Any = interaction.data or {}
    return str(data.get("custom_id") or data.get("name") or interaction.type.name)


async def report_error(interaction: discord.Interaction[Any], error: BaseException) -> None:
    """Tell the member what went wrong; log bugs with an id the member can give to an admin."""
    original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
    if isinstance(error, app_commands.TransformerError) and error.__cause__ is not None:
        original = error.__cause__
    if isinstance(original, discord.NotFound) and original.code == UNKNOWN_INTERACTION:
        # Answered after Discord's 3 s window: the member sees "did not respond"; nothing can be sent now.
        log.warning("interaction %s expired before it was answered (%s)", interaction.id, interaction.command)
        return
    message = friendly_message(error)
    if message is None:
        error_id = secrets.token_hex(4)
        services = getattr(interaction.client, "services", None)  # None before setup (or outside LikenessBot)
        if services is not None:
            services.metrics.error("command")
        log.error(
            "error %s in %s (guild %s, user %s)",
            error_id,
            what_was_used(interaction),
            interaction.guild_id,
            interaction.user.id,
            exc_info=original,
        )
        message = (
            "Something went wrong on my side and nothing was changed. If it keeps happening, give a server "
            f"admin this error id: `{error_id}`."
        )
    await reply_ephemeral(interaction, message)


FormHandler = Callable[[discord.Interaction[Any], re.Match[str]], Awaitable[None]]


class FormRoutes:
    """Form (modal) submits routed by their custom id, as discord.py routes DynamicItems for buttons.

    Forms are handled from their custom id, not from a Modal kept in memory: discord.py keeps a Modal only once
    Discord has answered the callback that opened it, and not across a restart, so a fast or late submit would
    otherwise go unanswered. One table for the bot, looked up as the interaction arrives, rather than an
    `on_interaction` listener per cog: each listener costs every interaction (every command) a task."""

    def __init__(self) -> None:
        self._routes: dict[re.Pattern[str], FormHandler] = {}
        self._running: set[asyncio.Task[None]] = set()  # strong references until each is done

    def add(self, custom_id: re.Pattern[str], handler: FormHandler) -> None:
        self._routes[custom_id] = handler

    def remove(self, custom_id: re.Pattern[str]) -> None:
        self._routes.pop(custom_id, None)

    def route(self, interaction: discord.Interaction[Any]) -> None:
        """Start the handler of a form submit whose custom id matches; anything else costs a type check."""
        if interaction.type is not discord.InteractionType.modal_submit:
            return
        custom_id = str((interaction.data or {}).get("custom_id", ""))
        for pattern, handler in self._routes.items():
            match = pattern.fullmatch(custom_id)
            if match is not None:
                task = asyncio.create_task(self._run(handler, interaction, match), name=f"likeness-form-{custom_id}")
                self._running.add(task)
                task.add_done_callback(self._running.discard)
                return

    @staticmethod
    async def _run(handler: FormHandler, interaction: discord.Interaction[Any], match: re.Match[str]) -> None:
        try:
            await handler(interaction, match)
        except Exception as exc:  # reported like a command's error
            await report_error(interaction, exc)


RESTARTING = "Likeness is restarting; try again in a minute. Nothing was changed."


def _command_name(interaction: discord.Interaction[Any]) -> str | None:
    """ "character show", read from the payload: `interaction.command` would walk the tree for it, and the tree
    walks it again right after this check (the check runs first, on every command and autocomplete keystroke)."""
    data: Any = interaction.data
    if not isinstance(data, dict) or "name" not in data:
        return None
    parts = [str(data["name"])]  # pyright: ignore[reportUnknownArgumentType]
    options: Any = data.get("options")  # pyright: ignore[reportUnknownMemberType]
    while options and isinstance(options[0], dict) and options[0].get("type") in (1, 2):  # a (sub)command group
        parts.append(str(options[0]["name"]))  # pyright: ignore[reportUnknownArgumentType]
        options = options[0].get("options")  # pyright: ignore[reportUnknownMemberType]
    return " ".join(parts)


class LikenessTree(app_commands.CommandTree[Any]):
    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        """Every command: its log lines say where and what; while the bot is stopping, new work is refused."""
        set_logging_context(
            interaction_id=interaction.id,
            guild_id=interaction.guild_id,
            user_id=interaction.user.id,
            command=_command_name(interaction),
        )
        if getattr(interaction.client, "draining", False):
            raise FriendlyError(RESTARTING)
        return True

    async def on_error(self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError) -> None:
        await report_error(interaction, error)


class LikenessView(discord.ui.View):
    """A view whose callback errors get the same treatment as command errors."""

    async def on_error(
        self, interaction: discord.Interaction[Any], error: Exception, item: discord.ui.Item[Any]
    ) -> None:
        await report_error(interaction, error)
