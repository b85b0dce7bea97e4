"""Interaction acknowledgement latency under load, Likeness beside a bare discord.py bot.

200 slash commands from 20 servers are sent at once through the fake Discord; for each, the time from
INTERACTION_CREATE sent to the bot's first callback received. The bare bot only answers "ok", so the
difference is what Likeness itself adds (database, rules, embeds). Last line: one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import discord
from discord.ext import commands

from bot.app import LikenessBot, sync_commands
from bot.config import Settings
from tests.fake_discord import FakeDiscord, FakeGuild, FakeUser

GUILDS = 20
COMMANDS = 200


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return ordered[index]


def figures(latencies: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in latencies]
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2),
    }


class BareBot(commands.AutoShardedBot):
    def __init__(self) -> None:
        super().__init__(command_prefix="!", intents=discord.Intents.none(), guild_ready_timeout=0.05)

        @self.tree.command(name="ping", description="answers ok")
        async def ping(interaction: discord.Interaction[Any]) -> None:  # pyright: ignore[reportUnusedFunction]
            await interaction.response.send_message("ok")


async def run_bot(
    fake: FakeDiscord, bot: commands.AutoShardedBot, sync: Callable[[], Awaitable[Any]]
) -> asyncio.Task[None]:
    await bot.login(fake.token)
    await sync()
    task = asyncio.create_task(bot.connect(reconnect=False))
    await asyncio.wait_for(bot.wait_until_ready(), timeout=30)
    return task


async def measure(
    fake: FakeDiscord,
    guilds: list[FakeGuild],
    users: list[FakeUser],
    command: str,
    options: Callable[[int], dict[str, Any]],
) -> list[float]:
    async def one(index: int) -> float:
        guild = guilds[index % len(guilds)]
        user = users[index % len(users)]
        handle = await fake.slash(guild, user, command, options(index))
        await handle.wait_response(timeout=30)
        return handle.ack_latency

    return list(await asyncio.gather(*(one(i) for i in range(COMMANDS))))


async def main() -> dict[str, Any]:
    fake = FakeDiscord(validate=True)
    await fake.start()
    results: dict[str, Any] = {"commands": COMMANDS, "guilds": GUILDS}
    try:
        with fake.patch_discord_py(), tempfile.TemporaryDirectory() as tmp:
            users = [fake.add_user(f"member{i}") for i in range(GUILDS)]
            guilds = [fake.add_guild(f"Server {i}", owner=users[i]) for i in range(GUILDS)]
            for guild in guilds:
                for user in users:
                    if user.id != guild.owner_id:
                        fake.add_member(guild, user)

            bare = BareBot()
            task = await run_bot(fake, bare, bare.tree.sync)
            await measure(fake, guilds, users, "ping", lambda i: {})  # warm-up
            results["bare"] = figures(await measure(fake, guilds, users, "ping", lambda i: {}))
            await bare.close()
            await task

            bot = LikenessBot(Settings(data_dir=Path(tmp), guild_ready_timeout=0.05))
            task = await run_bot(fake, bot, lambda: sync_commands(bot))
            # a realistic mix: creating characters (writes), then showing and listing them (reads)
            creates = await measure(
                fake,
                guilds,
                users,
                "character create",
                lambda i: {"name": f"Char {i}", "description": "tall, red hair"},
            )
            shows = await measure(fake, guilds, users, "character show", lambda i: {"character": f"Char {i}"})
            results["likeness_create"] = figures(creates)
            results["likeness_show"] = figures(shows)
            results["likeness"] = figures(creates + shows)
            await bot.close()
            await task
    finally:
        await fake.stop()
    results["validation_errors"] = len(fake.validation_errors)
    results["p99_ratio_vs_bare"] = round(results["likeness"]["p99_ms"] / results["bare"]["p99_ms"], 2)
    results["target_met"] = results["likeness"]["p99_ms"] < 300 and results["p99_ratio_vs_bare"] < 2
    return results


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
