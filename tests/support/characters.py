"""Characters made through the fake Discord, as Alice makes them in Studio A."""

from __future__ import annotations

from typing import Any

from tests.support.bot_runner import World
from tests.support.fake_discord import FakeDiscord
from tests.support.figures import figure_png

TRAITS = "28, athletic build, oval face, short silver hair, green bomber jacket"


async def new_character(fake: FakeDiscord, world: World, name: str = "Ava") -> None:
    h = await fake.slash(world.studio_a, world.alice, "character create", {"name": name, "description": TRAITS})
    await h.wait_settled()
    assert not h.ephemeral


async def add_view(
    fake: FakeDiscord, world: World, view: str, data: bytes, *, user: Any = None, filename: str = "ref.png"
) -> Any:
    attachment = fake.upload(data, filename, "image/png")
    h = await fake.slash(
        world.studio_a,
        user or world.alice,
        "character view add",
        {"character": "Ava", "view": view, "image": attachment},
    )
    await h.wait_settled(timeout=30)
    if h.embeds and str(h.embeds[0].get("title", "")).startswith("Saved"):
        await fake.wait_until(lambda: bool(h.followups), 10, "the public before/after preview")
    return h


async def ava_with_front_view(fake: FakeDiscord, world: World) -> None:
    h = await fake.slash(world.studio_a, world.alice, "character create", {"name": "Ava", "description": TRAITS})
    await h.wait_settled()
    attachment = fake.upload(figure_png(), "front.png", "image/png")
    h = await fake.slash(
        world.studio_a, world.alice, "character view add", {"character": "Ava", "view": "front", "image": attachment}
    )
    await h.wait_settled(timeout=30)
    assert h.embeds and h.embeds[0]["title"].startswith("Saved"), h.content


async def with_front_view(
    fake: FakeDiscord, world: World, name: str, colour: tuple[int, int, int], *, guild: Any = None, user: Any = None
) -> None:
    """A character of its own colour with a front view, made by Alice in Studio A (or `user` in `guild`)."""
    where, who = guild or world.studio_a, user or world.alice
    h = await fake.slash(where, who, "character create", {"name": name, "description": f"{name}, {TRAITS}"})
    await h.wait_settled()
    attachment = fake.upload(figure_png(colour), "front.png", "image/png")
    h = await fake.slash(where, who, "character view add", {"character": name, "view": "front", "image": attachment})
    await h.wait_settled(timeout=30)
    assert h.embeds and h.embeds[0]["title"].startswith("Saved"), h.content
