"""The Discord client: opens the runtime (bot.runtime) in `setup_hook` and closes it in `close`, loads the cogs,
syncs on request only."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import signal
from collections.abc import Sequence
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_io.delivery import DiscordDelivery
from bot.discord_io.errors import FormRoutes, LikenessTree
from bot.governance.server_settings import ServerSettings
from bot.infra.config import Settings
from bot.infra.shutdown import InFlight
from bot.runtime import Services
from storage.jobs import JobRepository

log = logging.getLogger(__name__)

EXTENSIONS: tuple[str, ...] = (
    "cogs.characters",
    "cogs.sheets",
    "cogs.animate",
    "cogs.settings",
    "cogs.budget",
    "cogs.info",
)


class LikenessBot(commands.AutoShardedBot):
    """The Discord front of the runtime (bot.runtime.Services): `setup_hook` opens it, `close` closes it."""

    services: Services

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
        self.inflight = InFlight()  # uploads in progress: a graceful stop lets them finish
        self.draining = False  # stopping: no new commands
        self.extensions_to_load = tuple(extensions)
        self.failed_extensions: dict[str, BaseException] = {}
        self._runtime = contextlib.AsyncExitStack()  # what setup_hook opens, closed by `close`
        self._worker_started = False
        self._starting: asyncio.Task[Any] | None = None  # the first ready's start of the worker, while it runs
        self.started = asyncio.Event()  # set once the first ready's start is over: jobs run, memory is settled
        self.forms = FormRoutes()  # form submits by custom id; the cogs add theirs when they load

    async def setup_hook(self) -> None:
        self.services = await self._runtime.enter_async_context(Services.open(self.settings, self))
        for extension in self.extensions_to_load:
            try:
                await self.load_extension(extension)
            except Exception as exc:  # one broken cog must not take the others down
                self.failed_extensions[extension] = exc
                log.exception("could not load %s", extension)

    def dispatch(self, event_name: str, /, *args: Any, **kwargs: Any) -> None:
        if event_name == "interaction":  # discord.py routes a modal only while it is kept in memory: see FormRoutes
            self.forms.route(args[0])
        super().dispatch(event_name, *args, **kwargs)

    # ------------------------------------------------------------------ what the runtime needs (bot.runtime.Front)

    def build_delivery(self, jobs: JobRepository, server_settings: ServerSettings) -> DiscordDelivery:
        return DiscordDelivery(
            self,
            jobs,
            min_edit_interval=self.settings.status_edit_interval,
            manager_roles=lambda guild_id: server_settings.cached_rules(guild_id).manager_roles,
        )

    async def render_metrics(self) -> str:
        queue = await self.services.storage.jobs.count_unfinished()
        return self.services.metrics.render(queue, self.gateway_latency())

    async def is_up(self) -> bool:
        """What `/healthz` reports: connected to Discord's gateway (ready) and not stopping."""
        return self.is_ready() and not self.is_closed() and not self.draining

    async def disconnect(self) -> None:
        """Leave Discord: the cogs, the gateway and the HTTP session (the runtime calls it in its order)."""
        await super().close()

    # ------------------------------------------------------------------ running

    def gateway_latency(self) -> float | None:
        """Seconds of the gateway heartbeat's round trip, or None before the first one (discord.py says NaN)."""
        latency = self.latency
        return latency if self.is_ready() and not math.isnan(latency) else None

    async def shutdown(self, grace: float) -> None:
        """A graceful stop (SIGTERM): refuse new commands, stop starting and driving jobs (each resumes from the
        database at the next start), let uploads in progress finish for up to `grace` seconds, then close."""
        self.draining = True
        log.info("stopping: no new commands; waiting up to %.0f s for %d uploads", grace, self.inflight.count)
        if self._worker_started:  # else no worker runs yet (maybe none is built yet: a stop while logging in)
            await self.services.worker.stop()
        if not await self.inflight.wait_idle(grace):
            log.warning("stopping with %d uploads still in progress (grace period over)", self.inflight.count)
        await self.close()

    async def close(self) -> None:
        starting = self._starting
        if starting is not None and starting is not asyncio.current_task():
            starting.cancel()  # a stop during the first ready: the next start settles and resumes everything
            with contextlib.suppress(asyncio.CancelledError):
                await starting
        await self._runtime.aclose()  # the runtime, newest part first; it leaves Discord on the way (disconnect)
        await super().close()  # when setup never ran (a refused login); nothing left to do otherwise

    async def on_ready(self) -> None:
        log.info("ready as %s in %d servers", self.user, len(self.guilds))
        if not self._worker_started:  # on_ready fires again after reconnects
            self._worker_started = True
            self._starting = asyncio.current_task()  # a stop meanwhile cancels it, before the database closes
            try:
                settled = await self.services.budget.reconcile()
                if settled:
                    log.info("settled the money of %d finished jobs", settled)
                await self.services.worker.start()
                self.services.janitor.start()
            finally:
                self._starting = None
            # Everything loaded so far (modules, cogs, caches) lives as long as the bot: move it out of the
            # garbage collector's reach, so a full collection during a burst of commands scans only new objects
            # (measured: median /character show under a 200-command burst 95 ms -> 55 ms).
            gc.collect()
            gc.freeze()
            # Collect the young generation every 20 000 new objects instead of 700: a command makes a few hundred
            # short-lived ones, nearly all freed by reference counting before a collection would see them, so a
            # burst of 200 commands costs one collection instead of ~33 (measured 15 ms -> 5 ms of a 200-command
            # /character list burst; a few MB more held at most between collections).
            gc.set_threshold(20_000, 20, 20)
            self.started.set()


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
        await serve(bot, token)


async def serve(bot: LikenessBot, token: str) -> None:
    """Run until closed; SIGTERM or SIGINT stops gracefully (see `LikenessBot.shutdown`)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        running = asyncio.create_task(bot.start(token), name="likeness-bot")
        stopping = asyncio.create_task(stop.wait(), name="likeness-stop-signal")
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stopping.done():
            await bot.shutdown(bot.settings.shutdown_grace)
        else:
            stopping.cancel()
        await running  # its error, if it failed
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


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
