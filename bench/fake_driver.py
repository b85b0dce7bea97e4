"""The fake Discord and its members, in a process of their own, for benchmarks.

Real Discord runs on other machines: sharing the bot's event loop (and GIL) with the fake would bill
the fake's work (routing, OpenAPI validation) to the bot. The parent talks to this process over
stdin/stdout, one JSON object per line:
  started -> {"api_base", "ws_url", "token", "validation"}
  {"run": command, "options": [per-command options], "guilds": N} -> {"latencies": [...], "answered": [...]}
    (seconds from INTERACTION_CREATE to the first callback, and to the final answer)
  {"quit": true} -> {"validation_errors": N}

Every body the bot sends is checked against Discord's OpenAPI spec after each burst, not on arrival: on arrival,
each callback would wait for the validation of those that came before it in the fake's one event loop, so the
fake's own work would be timed as the bot's latency, the more so the larger the bot's messages (embeds).
LIKENESS_BENCH_VALIDATE=inline checks on arrival (as the tests do), 0 not at all.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
from typing import Any

from tests.support.fake_discord import FakeDiscord, FakeGuild, FakeUser

VALIDATION = {"inline": "inline", "0": "none"}.get(os.environ.get("LIKENESS_BENCH_VALIDATE", ""), "after")


async def drive(
    fake: FakeDiscord, guilds: list[FakeGuild], users: list[FakeUser], request: dict[str, Any]
) -> dict[str, list[float]]:
    await fake.wait_for_ready(timeout=30)
    await fake.wait_for_commands(request["run"].split()[0], timeout=30)

    async def one(index: int, options: dict[str, Any]) -> tuple[float, float]:
        """The command's acknowledgement latency, and its time to the final answer (a deferral's edit): the
        burst ends when every command is answered, so no leftover work runs into the next burst."""
        handle = await fake.slash(guilds[index % len(guilds)], users[index % len(users)], request["run"], options)
        await handle.wait_response(timeout=30)
        await handle.wait_settled(timeout=30)
        return handle.ack_latency, asyncio.get_running_loop().time() - handle.started_at

    first = len(fake.requests)
    # The fake stands for Discord's own machines: a pause of its garbage collector (it keeps every request it
    # saw, so its full collections grow) would be timed as the bot's latency. It collects between bursts.
    gc.disable()
    try:
        timings = list(await asyncio.gather(*(one(i, o) for i, o in enumerate(request["options"]))))
    finally:
        gc.enable()
    if VALIDATION == "after":
        fake.validation_errors.extend(fake.validate_recorded(fake.requests[first:]))
    return {"latencies": [ack for ack, _ in timings], "answered": [done for _, done in timings]}


async def main(guild_count: int) -> None:
    fake = FakeDiscord(validate=VALIDATION == "inline")
    await fake.start()
    users = [fake.add_user(f"member{i}") for i in range(guild_count)]
    guilds = [fake.add_guild(f"Server {i}", owner=users[i]) for i in range(guild_count)]
    for guild in guilds:
        for user in users:
            if user.id != guild.owner_id:
                fake.add_member(guild, user)
    started = {"api_base": fake.api_base, "ws_url": str(fake.ws_url), "token": fake.token, "validation": VALIDATION}
    print(json.dumps(started), flush=True)
    loop = asyncio.get_running_loop()
    try:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            request = json.loads(line)
            if request.get("quit"):
                break
            print(json.dumps(await drive(fake, guilds, users, request)), flush=True)
    finally:
        print(json.dumps({"validation_errors": len(fake.validation_errors)}), flush=True)
        await fake.stop()


if __name__ == "__main__":
    if os.environ.get("LIKENESS_BENCH_PROFILE"):
        import cProfile

        cProfile.run("asyncio.run(main(20))", os.environ["LIKENESS_BENCH_PROFILE"])
    else:
        asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
