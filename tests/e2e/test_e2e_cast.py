"""Several characters in one shot, as members type it: `/animate character:Ava with:Kai`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.providers.kling import KlingProvider
from tests.support.bot_runner import BotRunner, World
from tests.support.characters import with_front_view
from tests.support.fake_discord import FakeDiscord
from tests.support.fake_providers.kling import FakeKling
from tests.support.figures import BLUE, RED
from tests.support.kling_keys import running_kling, use_kling


@pytest.fixture
async def kling() -> AsyncIterator[FakeKling]:
    async with running_kling() as fake:
        yield fake


async def refused(fake: FakeDiscord, world: World, runner: BotRunner, options: dict[str, object]) -> str:
    h = await fake.slash(world.studio_a, world.alice, "animate", {"character": "Ava", "prompt": "x", **options})
    await h.wait_settled()
    assert h.ephemeral, h.content
    assert runner.bot is not None
    assert await runner.bot.services.storage.jobs.recent_in_guild(world.studio_a.id) == []  # nothing queued
    return h.content


async def test_a_cast_larger_than_the_model_takes_is_refused_with_the_models_that_take_it(
    kling: FakeKling, fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    use_kling(runner, kling)  # kling-v1-6: one character per shot
    await with_front_view(fake, world, "Ava", RED)
    await with_front_view(fake, world, "Kai", BLUE)
    said = await refused(fake, world, runner, {"provider": "kling", "with": "Kai"})
    assert said.startswith("**Kling** `kling-v1-6` takes one character in one shot, not 2."), said
    assert "kling-v3-omni" in said and kling.create_attempts == 0


async def test_the_same_character_twice_and_another_servers_character_are_refused(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    await with_front_view(fake, world, "Ava", RED)
    await with_front_view(fake, world, "Zia", BLUE, guild=world.studio_b, user=world.zed)
    said = await refused(fake, world, runner, {"with": "Ava"})
    assert "only once" in said
    said = await refused(fake, world, runner, {"with": "Zia"})  # Studio B's: as if it did not exist
    assert said.startswith("There is no character called **Zia** in this server."), said


async def test_two_characters_are_two_elements_of_one_kling_omni_shot(
    kling: FakeKling, fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    provider = use_kling(runner, kling, "kling-v3-omni")
    assert isinstance(provider, KlingProvider)
    await with_front_view(fake, world, "Ava", RED)
    await with_front_view(fake, world, "Kai", BLUE)
    h = await fake.slash(
        world.studio_a,
        world.alice,
        "animate",
        {"character": "Ava", "with": "Kai", "prompt": "Ava hands the lantern to Kai", "provider": "kling"},
    )
    await h.wait_settled()
    assert h.ephemeral and h.content.startswith("Queued shot #"), h.content
    job_id = int(h.content.split("#")[1].split(" ")[0])
    assert runner.bot is not None
    job = await runner.bot.services.storage.jobs.get(job_id)
    assert job is not None and len(job.params.cast) == 1
    assert sorted({image.subject for image in job.bound}) == [0, 1]
    assert "shows Ava:" in job.prompt and "shows Kai:" in job.prompt and "different people" in job.prompt
