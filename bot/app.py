"""The Discord client: wires storage and services in `setup_hook`, loads the cogs, syncs on request only."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import discord
from discord import app_commands
from discord.ext import commands

from bot.config import Settings
from bot.discord_io.delivery import DiscordDelivery
from bot.discord_io.errors import LikenessTree
from bot.jobs.worker import Worker, WorkerConfig
from bot.library import Library
from bot.services import Services
from storage import Storage

log = logging.getLogger(__name__)

EXTENSIONS: tuple[str, ...] = ("cogs.characters", "cogs.sheets", "cogs.animate", "cogs.settings", "cogs.budget")


class LikenessBot(commands.AutoShardedBot):
    services: Services
    worker: Worker
    delivery: DiscordDelivery

    def __init__(self, settings: Settings, *, extensions: Sequence[str] = EXTENSIONS) -> None:
        intents = discord.Intents.none()
        intents.guilds = True  # slash commands need nothing more: no message content, no member list
        super().__init__(
            command_prefix=commands.when_mentioned,
            help_command=None,
            intents=intents,
            tree_cls=LikenessTree,
            allowed_mentions=discord.AllowedMentions.none(),
            guild_ready_timeout=settings.guild_ready_timeout,
            shard_count=settings.shard_count,
            chunk_guilds_at_startup=False,
            max_messages=None,
        )
        self.settings = settings
        self.extensions_to_load = tuple(extensions)
        self.failed_extensions: dict[str, BaseException] = {}

    async def setup_hook(self) -> None:
        self.services = await Services.build(self.settings)
        self.delivery = DiscordDelivery(
            self, self.services.storage.jobs, min_edit_interval=self.settings.status_edit_interval
        )
        self.worker = Worker(
            self.services.storage.jobs,
            self.services.storage.blobs,
            self.services.providers,
            self.delivery,
            WorkerConfig(
                per_user=self.settings.per_user_running, position_interval=max(self.settings.status_edit_interval, 0.05)
            ),
        )
        self.services.animate.set_wake(self.worker.wake)
        await self.services.server_settings.warm()
        self.worker.per_user_by_guild = self.services.server_settings.running_caps
        self._worker_started = False
        # Load the background model in the background: the first upload should not wait for it.
        self._warm_up = asyncio.create_task(self.services.remover.warm_up(), name="likeness-model-warm-up")
        for extension in self.extensions_to_load:
            try:
                await self.load_extension(extension)
            except Exception as exc:  # one broken cog must not take the others down
                self.failed_extensions[extension] = exc
                log.exception("could not load %s", extension)

    async def close(self) -> None:
        warm_up = getattr(self, "_warm_up", None)
        if warm_up is not None:
            warm_up.cancel()
        worker = getattr(self, "worker", None)
        if worker is not None:
            await worker.stop()  # jobs stay in the database and resume at the next start
            await self.delivery.flush_all()
        await super().close()
        services = getattr(self, "services", None)
        if services is not None:
            await services.close()

    @property
    def storage(self) -> Storage:
        return self.services.storage

    @property
    def library(self) -> Library:
        return self.services.library

    async def on_ready(self) -> None:
        log.info("ready as %s in %d servers", self.user, len(self.guilds))
        if not self._worker_started:  # on_ready fires again after reconnects
            self._worker_started = True
            settled = await self.services.budget.reconcile()
            if settled:
                log.info("settled the money of %d finished jobs", settled)
            await self.worker.start()


async def sync_commands(bot: LikenessBot, guild_id: int | None = None) -> list[app_commands.AppCommand]:
    """Register the slash commands with Discord: in one server (instant) or globally."""
    if guild_id is None:
        return await bot.tree.sync()
    guild = discord.Object(id=guild_id)
    bot.tree.copy_global_to(guild=guild)
    return await bot.tree.sync(guild=guild)


async def clear_guild_commands(bot: LikenessBot, guild_id: int) -> None:
    """Remove server-specific commands (after testing with --guild), leaving the global ones."""
    guild = discord.Object(id=guild_id)
    bot.tree.clear_commands(guild=guild)
    await bot.tree.sync(guild=guild)


async def run_bot(settings: Settings, token: str) -> None:
    async with LikenessBot(settings) as bot:
        await bot.start(token)


async def sync_from_cli(settings: Settings, token: str, guild_id: int | None, clear: bool) -> str:
    """`likeness sync`: log in over HTTP only (no gateway), load the cogs, and sync."""
    async with LikenessBot(settings) as bot:
        await bot.login(token)
        if clear and guild_id is not None:
            await clear_guild_commands(bot, guild_id)
            return f"Removed the server-specific commands from server {guild_id}."
        synced = await sync_commands(bot, guild_id)
        where = f"server {guild_id} (available at once)" if guild_id else "every server (may take up to an hour)"
        names = ", ".join(sorted(f"/{command.name}" for command in synced))
        return f"Synced {len(synced)} commands to {where}: {names}"
