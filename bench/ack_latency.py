"""Interaction acknowledgement latency under load, Likeness beside a bare discord.py bot.

200 slash commands from 20 servers are sent at once through the fake Discord, which runs in its own
process (bench/fake_driver.py) as Discord runs on its own machines; for each command, the time from
INTERACTION_CREATE sent to the bot's first callback received (and, beside it, to the final answer). The bare bot only answers "ok", so the
difference is what Likeness itself adds (database, rules, embeds). Likeness runs /character create, show and list,
200 of each; the bare bot three bursts of its one command, and each side's p99 is over its 600 commands.
That is one round; the figures are the median of five independent rounds (LIKENESS_BENCH_ROUNDS).
Last line: one JSON object.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord
import yarl
from discord.ext import commands

from bot.discord_io.client import LikenessBot, sync_commands
from bot.infra.config import Settings
from tests.support.fake_discord.server import DiscordPyPatch

GUILDS = 20
COMMANDS = 200
TARGET_RATIO = 1.3  # issue 13: Likeness's p99 at most 1.3 times the bare bot's
ROUNDS = int(os.environ.get("LIKENESS_BENCH_ROUNDS", "5"))  # an odd number: the median is one round's
BURSTS = 3  # Likeness's measured bursts (create, show, list); the bare bot runs as many


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def figures(latencies: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in latencies]
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2),
    }


@dataclass(frozen=True)
class Burst:
    """Seconds per command: to the first callback (the acknowledgement), and to the final answer (a deferral's
    edit included); a burst is over when every command is answered."""

    acks: list[float]
    answered: list[float]


class BareBot(commands.AutoShardedBot):
    def __init__(self) -> None:
        super().__init__(command_prefix="!", intents=discord.Intents.none(), guild_ready_timeout=0.05)

        @self.tree.command(name="ping", description="answers ok")
        async def ping(interaction: discord.Interaction[Any]) -> None:  # pyright: ignore[reportUnusedFunction]
            await interaction.response.send_message("ok")


class Driver:
    """The fake Discord's process: send it a command to fire, read back the latencies."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls) -> tuple[Driver, dict[str, Any]]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.fake_driver", str(GUILDS), stdin=-1, stdout=-1
        )
        driver = cls(process)
        return driver, await driver.read()

    async def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        return json.loads(await self.process.stdout.readline())

    async def send(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(message) + "\n").encode())
        await self.process.stdin.drain()
        return await self.read()

    async def fire(self, command: str, options: Callable[[int], dict[str, Any]]) -> Burst:
        reply = await self.send({"run": command, "options": [options(i) for i in range(COMMANDS)]})
        return Burst(reply["latencies"], reply["answered"])


async def with_bot(
    bot: commands.AutoShardedBot, token: str, sync: Callable[[], Awaitable[Any]], body: Callable[[], Awaitable[None]]
) -> None:
    await bot.login(token)
    await sync()
    task = asyncio.create_task(bot.connect(reconnect=False))
    await asyncio.wait_for(bot.wait_until_ready(), timeout=30)
    try:
        await body()
    finally:
        await bot.close()
        await task


async def one_round() -> dict[str, Any]:
    """Both bots, one after the other, against a fresh fake Discord (in its own process) and a fresh database."""
    driver, fake = await Driver.start()
    results: dict[str, Any] = {
        "commands": COMMANDS,
        "guilds": GUILDS,
        "fake_in_own_process": True,
        "fake_validates": fake["validation"],  # "after" each burst (see bench/fake_driver.py), "inline" or "none"
    }
    with DiscordPyPatch(fake["api_base"], yarl.URL(fake["ws_url"])), tempfile.TemporaryDirectory() as tmp:
        bare = BareBot()

        async def bare_run() -> None:
            await driver.fire("ping", lambda i: {})  # warm-up
            # A bare bot's own process holds discord.py alone; this one also holds every module this bench imported
            # (Likeness's), which a full collection would scan in the middle of a burst (measured: one ping burst
            # in four at 85 ms instead of 45). Freezing what is there now leaves the bare bot a lean process's heap.
            gc.collect()
            gc.freeze()
            # as many bursts as Likeness runs below, pooled the same way: a p99 over three bursts is near the
            # worst burst's tail, so one burst against three would compare a typical tail with a worst one
            acks = [ack for _ in range(BURSTS) for ack in (await driver.fire("ping", lambda i: {})).acks]
            results["bare"] = figures(acks)

        await with_bot(bare, fake["token"], bare.tree.sync, bare_run)
        gc.unfreeze()  # Likeness starts from the heap it would have in its own process (it freezes once ready)

        bot = LikenessBot(Settings(data_dir=Path(tmp), guild_ready_timeout=0.05))

        async def likeness_run() -> None:
            await bot.started.wait()  # its first ready's start (the worker, one full garbage collection) is over
            await driver.fire("character list", lambda i: {})  # warm-up, as for the bare bot
            # a realistic mix: creating characters (writes), then showing them and listing them (reads)
            creates = await driver.fire("character create", lambda i: {"name": f"Char {i}", "description": "tall"})
            shows = await driver.fire("character show", lambda i: {"character": f"Char {i}"})
            lists = await driver.fire("character list", lambda i: {})
            results["likeness_create"] = figures(creates.acks)
            results["likeness_show"] = figures(shows.acks)
            results["likeness_list"] = figures(lists.acks)
            results["likeness"] = figures(creates.acks + shows.acks + lists.acks)
            # what the member waits for the answer itself (/character create defers, then writes)
            results["likeness_answered_p99_ms"] = {
                name: figures(burst.answered)["p99_ms"]
                for name, burst in (("create", creates), ("show", shows), ("list", lists))
            }

        await with_bot(bot, fake["token"], lambda: sync_commands(bot), likeness_run)
    results["validation_errors"] = (await driver.send({"quit": True}))["validation_errors"]
    await driver.process.wait()
    # The ratio, not a time: both bots run on the same machine in the same round, whatever else loads it.
    results["p99_ratio_vs_bare"] = round(results["likeness"]["p99_ms"] / results["bare"]["p99_ms"], 2)
    return results


async def main() -> dict[str, Any]:
    """ROUNDS independent rounds; the figures are the median round's, beside every round's ratio. One round's p99
    is its slowest few commands, so a neighbour's burst of CPU on a shared machine moves one round's ratio by
    +-0.2 (measured: 0.83-1.56 over ten single rounds); the median of independent rounds is what the code does."""
    rounds = [await one_round() for _ in range(ROUNDS)]
    ratios = [r["p99_ratio_vs_bare"] for r in rounds]
    median = sorted(rounds, key=lambda r: r["p99_ratio_vs_bare"])[len(rounds) // 2]
    return {
        **median,
        "rounds": ROUNDS,
        "p99_ratio_per_round": ratios,
        "p99_ratio_vs_bare": median["p99_ratio_vs_bare"],
        "validation_errors": sum(r["validation_errors"] for r in rounds),
        "target_met": median["p99_ratio_vs_bare"] <= TARGET_RATIO,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
