"""/info: how this Likeness is doing (version, uptime, queue, providers, latency)."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_io.client import LikenessBot
from bot.infra.metrics import ProviderHealth


def ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def duration(seconds: float) -> str:
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if days else f"{hours} h {minutes} min" if hours else f"{minutes} min"


def provider_line(name: str, health: ProviderHealth | None, now: float) -> str:
    if health is None or (health.last_ok is None and health.last_error is None):
        return f"**{name}**: no calls yet"
    if not health.healthy and health.last_error is not None:
        return (
            f"**{name}**: ⚠️ {health.errors_in_a_row} failed calls in a row ({ago(now - health.last_error)}): "
            + (health.last_error_text[:120])
        )
    last = health.last_ok if health.last_ok is not None else health.last_error
    return f"**{name}**: ✅ answering (last {ago(now - (last or now))})"


class Info(commands.Cog):
    def __init__(self, bot: LikenessBot) -> None:
        self.bot = bot

    @app_commands.command(name="info", description="How the bot is doing: version, uptime, queue, providers, latency")
    async def info(self, interaction: discord.Interaction[Any]) -> None:
        bot = self.bot
        metrics = bot.services.metrics
        queue = await bot.services.storage.jobs.count_unfinished()
        waiting = queue.get("queued", 0)
        in_progress = sum(count for state, count in queue.items() if state != "queued")
        latency = bot.gateway_latency()
        now = metrics.clock()
        embed = discord.Embed(title="Likeness", colour=discord.Colour(0x5B8DEF))
        embed.add_field(name="Version", value=version("likeness"))
        embed.add_field(name="Up for", value=duration(metrics.uptime()))
        embed.add_field(name="Latency", value=f"{latency * 1000:.0f} ms" if latency is not None else "measuring")
        embed.add_field(name="Queue", value=f"{waiting} waiting, {in_progress} in progress (all servers)")
        embed.add_field(
            name="Providers",
            value="\n".join(provider_line(n, metrics.providers.get(n), now) for n in bot.services.providers.names()),
            inline=False,
        )
        embed.set_footer(text=f"In {len(bot.guilds)} servers")
        await interaction.response.send_message(embed=embed, ephemeral=True)


async def setup(bot: LikenessBot) -> None:
    await bot.add_cog(Info(bot))
