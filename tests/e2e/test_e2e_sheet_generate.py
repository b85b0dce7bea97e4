"""/sheet generate: an image provider draws a multi-angle sheet; the member keeps all or some of its views."""

from __future__ import annotations

from typing import Any

import pytest

from bot.domain import JobState, Money
from bot.domain.errors import InvalidInputError
from tests.support.bot_runner import BotRunner, World
from tests.support.characters import ava_with_front_view
from tests.support.fake_discord import FakeDiscord
from tests.support.shots import fields, is_state
from tests.support.waiting import eventually, until


def sheet_results(fake: FakeDiscord, world: World, job_id: int) -> list[Any]:
    return [
        m
        for m in fake.channel_messages(world.studio_a.channel_id)
        if not m.deleted and f"likeness:sheetgen:retry:{job_id}" in str(m.components)
    ]


async def generate(fake: FakeDiscord, world: World) -> tuple[int, Any]:
    h = await fake.slash(
        world.studio_a, world.alice, "sheet", {"character": "Ava", "generate": True, "style": "clean line art"}
    )
    await h.wait_settled(timeout=30)
    assert h.ephemeral and h.content.startswith("Queued sheet #"), h.content
    job_id = int(h.content.split("#")[1].split(" ")[0])
    await until(fake, lambda: bool(sheet_results(fake, world, job_id)), "the generated sheet")
    [message] = sheet_results(fake, world, job_id)
    return job_id, message


async def test_generate_with_the_local_provider_and_keep_all(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    await ava_with_front_view(fake, world)
    job_id, message = await generate(fake, world)
    assert "Found: front, side, three-quarter." in message.content
    [(filename, data, _type)] = message.attachments
    assert filename == f"ava-sheet-{job_id}.png" and data.startswith(b"\x89PNG")
    assert runner.bot is not None
    job = await runner.bot.services.storage.jobs.get(job_id)
    assert job is not None and "side profile" in job.prompt and "clean line art" in job.prompt

    press = await fake.press(message, f"likeness:sheetgen:keep:{job_id}", world.bob)
    await press.wait_settled()
    assert press.ephemeral and "belongs to" in press.content  # Bob may not change Alice's character

    press = await fake.press(message, f"likeness:sheetgen:keep:{job_id}", world.alice)
    await press.wait_settled()
    assert "kept the front, side, three-quarter views for **Ava** (now v5)" in press.content
    h = await fake.slash(world.studio_a, world.bob, "character show", {"character": "Ava"})
    await h.wait_settled()
    assert "Reference views (3/5)" in fields(h)


async def test_keep_only_some_views_after_a_restart(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    await ava_with_front_view(fake, world)
    job_id, message = await generate(fake, world)
    await runner.restart()
    press = await fake.press(message, f"likeness:sheetgen:pick:{job_id}", world.alice, values=["side"])
    await press.wait_settled()
    assert "kept the side view for **Ava** (now v3)" in press.content
    assert runner.bot is not None
    character = await runner.bot.services.storage.characters.get_by_name(world.studio_a.id, "Ava")
    assert character is not None
    views = {
        v.view.value
        for v in await runner.bot.services.storage.references.current_views(world.studio_a.id, character.id)
    }
    assert views == {"front", "side"}


async def test_generate_through_fal_to_stored_views(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    from dataclasses import replace

    from bot.providers.fal import FalProvider
    from tests.support.fake_providers.fal import FakeFal

    fal = FakeFal(latency=0.001)
    fal.queue_polls, fal.progress_polls = 1, 1
    await fal.start()
    provider = FalProvider(key=fal.key, base_url=fal.url, timeout=15.0)
    provider.capabilities = replace(provider.capabilities, typical_seconds=0.1)
    try:
        assert runner.bot is not None
        runner.bot.services.providers.register(provider)
        runner.bot.services.generated_sheets.sheet_provider = "fal"
        await ava_with_front_view(fake, world)
        job_id, message = await generate(fake, world)
        job = await runner.bot.services.storage.jobs.get(job_id)
        assert job is not None and job.provider == "fal" and job.model == "fal-ai/bytedance/seedream/v4/edit"
        assert "Found: front, side, three-quarter." in message.content
        press = await fake.press(message, f"likeness:sheetgen:keep:{job_id}", world.alice)
        await press.wait_settled()
        assert "kept the front, side, three-quarter views for **Ava**" in press.content
        character = await runner.bot.services.storage.characters.get_by_name(world.studio_a.id, "Ava")
        assert character is not None
        current = await runner.bot.services.storage.references.current_views(world.studio_a.id, character.id)
        assert {v.view.value for v in current} == {"front", "side", "three_quarter"}
    finally:
        await provider.close()
        await fal.stop()


async def test_a_costly_sheet_waits_for_confirmation(
    fake: FakeDiscord, world: World, runner: BotRunner, monkeypatch: Any
) -> None:
    await ava_with_front_view(fake, world)
    assert runner.bot is not None
    local = runner.bot.services.providers.get("local")
    # priced like a paid image model
    monkeypatch.setattr(local, "estimate_cost", lambda _request: Money.from_usd("0.40"))
    h = await fake.slash(world.studio_a, world.alice, "settings budget", {"confirm_over": "0.25"})
    await h.wait_settled()

    h = await fake.slash(world.studio_a, world.alice, "sheet", {"character": "Ava", "generate": True})
    await h.wait_settled(timeout=30)
    assert h.ephemeral and h.content.startswith("This sheet of **Ava** with Local is estimated at **$0.40**"), h.content
    assert await runner.bot.services.storage.jobs.recent_in_guild(world.studio_a.id) == []
    confirm = h.components[0]["components"][0]["custom_id"]
    assert h.result is not None
    press = await fake.press(h.result, confirm, world.alice)
    await press.wait_settled()
    assert press.content.startswith("Queued sheet #") and "(about $0.40)" in press.content, press.content
    job_id = int(press.content.split("#")[1].split(" ")[0])
    await until(fake, lambda: bool(sheet_results(fake, world, job_id)), "the confirmed sheet")
    await eventually(lambda: is_state(runner, job_id, JobState.DONE), "settled")  # posted first, then settled
    ledger = await runner.bot.services.storage.ledger.entries(world.studio_a.id)
    # held at the estimate; charged what the provider reported billing (the local renderer reports $0)
    assert [(e.entry, e.amount.micros) for e in ledger] == [("reserve", 400_000), ("release", -400_000), ("charge", 0)]


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (InvalidInputError("Ava's views could not be drawn."), "Ava's views could not be drawn."),
        (RuntimeError("disk on fire"), "Something went wrong on my side"),
    ],
)
async def test_a_sheet_that_fails_after_its_public_reply_tells_only_its_member(
    fake: FakeDiscord,
    world: World,
    runner: BotRunner,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    shown: str,
) -> None:
    """/sheet answers publicly ("thinking..."): an error after that is the member's alone, not the channel's."""
    await ava_with_front_view(fake, world)
    assert runner.bot is not None

    async def failing(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(runner.bot.services.sheets, "sheet", failing)
    h = await fake.slash(world.studio_a, world.alice, "sheet", {"character": "Ava"})
    await h.wait_settled(timeout=30)
    await until(fake, lambda: any(shown in m.content for m in h.followups), "the error")
    assert h.callback_type == 5 and not h.ephemeral  # the public deferral
    [told] = [m for m in h.followups if shown in m.content]
    assert told.ephemeral
    public = [
        m
        for m in fake.channel_messages(world.studio_a.channel_id, include_ephemeral=False)
        if m.interaction_id == h.id and not m.deleted
    ]
    assert public == [], [m.content for m in public]
