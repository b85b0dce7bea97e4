"""Shots through the fake Discord: queueing them (`/animate`), finding their status and result messages, and
reading their state and money from the bot's storage."""

from __future__ import annotations

from typing import Any

from bot.domain import JobState, Money
from tests.support.bot_runner import BotRunner, World
from tests.support.fake_discord import FakeDiscord
from tests.support.scripted_provider import Backend, ScriptedProvider


async def animate(fake: FakeDiscord, world: World, prompt: str, user: Any = None, **options: Any) -> int:
    h = await fake.slash(
        world.studio_a, user or world.alice, "animate", {"character": "Ava", "prompt": prompt, **options}
    )
    await h.wait_settled(timeout=30)
    assert h.ephemeral and h.content.startswith("Queued shot #"), h.content
    return int(h.content.split("#")[1].split(" ")[0])


def results(fake: FakeDiscord, world: World) -> list[Any]:
    return [
        m
        for m in fake.channel_messages(world.studio_a.channel_id)
        if not m.deleted and m.attachments and any("likeness:job:reroll" in str(row) for row in m.components)
    ]


def result_of(fake: FakeDiscord, world: World, job_id: int) -> list[Any]:
    return [m for m in results(fake, world) if f"likeness:job:reroll:{job_id}" in str(m.components)]


def status_of(fake: FakeDiscord, world: World, job_id: int) -> Any:
    [message] = [
        m
        for m in fake.channel_messages(world.studio_a.channel_id)
        if m.embeds and m.embeds[0].get("footer", {}).get("text", "").startswith(f"Job #{job_id} ")
    ]
    return message


def fields(message: Any) -> dict[str, str]:
    return {f["name"]: f["value"] for f in message.embeds[0].get("fields", [])}


async def job_state(runner: BotRunner, job_id: int) -> JobState:
    assert runner.bot is not None
    job = await runner.bot.services.storage.jobs.get(job_id)
    assert job is not None
    return job.state


async def is_state(runner: BotRunner, job_id: int, state: JobState) -> bool:
    return await job_state(runner, job_id) is state


async def run(fake: FakeDiscord, world: World, user: Any, command: str, options: dict[str, Any] | None = None) -> Any:
    h = await fake.slash(world.studio_a, user, command, options or {})
    await h.wait_settled(timeout=30)
    return h


def scripted(runner: BotRunner, backend: Backend, **kwargs: Any) -> ScriptedProvider:
    provider = ScriptedProvider(backend, **kwargs)
    runner.providers.append(provider)  # registered again after restarts
    assert runner.bot is not None
    runner.bot.services.providers.register(provider)
    return provider


async def shot(fake: FakeDiscord, world: World, prompt: str, user: Any = None, **options: Any) -> Any:
    return await run(
        fake,
        world,
        user or world.alice,
        "animate",
        {"character": "Ava", "prompt": prompt, "provider": "scripted", **options},
    )


def queued_id(h: Any) -> int:
    assert h.content.startswith("Queued shot #"), h.content  # an ephemeral reply, or an edit of one
    return int(h.content.split("#")[1].split(" ")[0])


async def ledger(runner: BotRunner, world: World) -> list[tuple[int, str, int]]:
    assert runner.bot is not None
    entries = await runner.bot.services.storage.ledger.entries(world.studio_a.id)
    return [(e.job_id, e.entry, e.amount.micros) for e in entries]


async def job_total(runner: BotRunner, world: World, job_id: int) -> int:
    return sum(micros for job, _, micros in await ledger(runner, world) if job == job_id)


async def held(runner: BotRunner, world: World, job_id: int) -> int:
    assert runner.bot is not None
    return (
        (await runner.bot.services.storage.ledger.job_totals(world.studio_a.id, [job_id]))
        .get(job_id, Money.ZERO)
        .micros
    )
