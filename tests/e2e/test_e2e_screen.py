"""The screen sees what the provider receives, as members and admins meet it: evasive prompts, descriptions and
element names (typed, stored or imported), look-alike names, and an admin's catastrophic pattern."""

from __future__ import annotations

from typing import Any

from tests.support.bot_runner import BotRunner, World
from tests.support.characters import ava_with_front_view
from tests.support.evasions import EVASIONS
from tests.support.fake_discord import FakeDiscord
from tests.support.figures import figure_png
from tests.support.scripted_provider import Backend
from tests.support.sharing import export, import_card
from tests.support.shots import ledger, queued_id, run, scripted, shot

BLOCKED = "This server's block list does not allow the {} you wrote. Change the wording and try again."
NSFW = "That {} looks NSFW. NSFW shots are allowed only in age-restricted channels."


async def block(fake: FakeDiscord, world: World, kind: str, value: str) -> Any:
    return await run(fake, world, world.mo, "settings blocklist", {"action": "add", "kind": kind, "value": value})


async def nothing_queued_or_held(runner: BotRunner, world: World) -> None:
    assert runner.bot is not None
    storage = runner.bot.services.storage
    assert await storage.jobs.recent_in_guild(world.studio_a.id) == []
    assert await ledger(runner, world) == []
    pending = await storage.db.fetchone("SELECT COUNT(*) FROM pending_shots")
    assert pending is not None and pending[0] == 0


async def add_element(fake: FakeDiscord, world: World, name: str, channel: int | None = None) -> Any:
    attachment = fake.upload(figure_png((150, 30, 30), (500, 500)), "cape.png", "image/png")
    options = {"character": "Ava", "name": name, "kind": "outfit", "image": attachment}
    h = await fake.slash(world.studio_a, world.alice, "character element add", options, channel)
    await h.wait_settled(timeout=30)
    return h


async def test_an_evasive_prompt_is_refused_and_nothing_is_queued_or_held(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    scripted(runner, Backend())
    await ava_with_front_view(fake, world)
    await run(fake, world, world.mo, "settings budget", {"confirm_over": "0.25"})  # a clean shot would be held
    await block(fake, world, "word", "gore")
    for name, evade in EVASIONS.items():
        h = await shot(fake, world, f"walks through the {evade('gore')} at dawn")
        assert h.ephemeral and h.content == BLOCKED.format("prompt"), name
        h = await shot(fake, world, f"poses {evade('nude')} on the beach")
        assert h.ephemeral and h.content == NSFW.format("prompt"), name
        h = await shot(fake, world, "waves", negative=f"blur, {evade('gore')}")
        assert h.ephemeral and h.content == BLOCKED.format("negative prompt"), name
    await nothing_queued_or_held(runner, world)

    h = await shot(fake, world, "walks through the garden at dawn")  # the same shot, clean, is held to confirm
    assert h.ephemeral and "is estimated at **$0.50**" in h.content, h.content


async def test_descriptions_and_element_names_go_through_the_screen(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    scripted(runner, Backend())
    await ava_with_front_view(fake, world)
    await block(fake, world, "word", "gore")
    lounge = fake.add_channel(world.studio_a, "after-dark", nsfw=True)

    # written outside an age-restricted channel, a description or an element name meets the NSFW gate too
    h = await run(fake, world, world.alice, "character create", {"name": "Rex", "description": "wears l\u0456ngerie"})
    assert h.ephemeral and h.content == NSFW.format("description")
    h = await add_element(fake, world, "g\u043ere cape")  # a Cyrillic o
    assert h.ephemeral and h.content == BLOCKED.format("element name")
    h = await add_element(fake, world, "nude cape")
    assert h.ephemeral and h.content == NSFW.format("element name")
    assert runner.bot is not None
    ava = await runner.bot.services.storage.characters.get_by_name(world.studio_a.id, "Ava")
    assert ava is not None and await runner.bot.services.storage.references.elements(world.studio_a.id, ava.id) == []
    assert await runner.bot.services.storage.characters.count(world.studio_a.id) == 1

    # in an age-restricted channel they are fine, but a shot elsewhere reads them: it is refused there
    h = await fake.slash(
        world.studio_a, world.alice, "character edit", {"character": "Ava", "description": "wears lingerie"}, lounge
    )
    await h.wait_settled()
    assert h.content.startswith("✏️ **Ava** was updated."), h.content
    h = await shot(fake, world, "waves")
    assert h.ephemeral
    assert h.content == "The description of **Ava** looks NSFW. NSFW shots are allowed only in age-restricted channels."
    h = await run(fake, world, world.alice, "sheet", {"character": "Ava", "generate": True})
    assert h.ephemeral
    assert h.content == "The description of **Ava** looks NSFW. NSFW shots are allowed only in age-restricted channels."
    options = {"character": "Ava", "prompt": "waves", "provider": "scripted"}
    h = await fake.slash(world.studio_a, world.alice, "animate", options, lounge)
    await h.wait_settled(timeout=30)
    queued_id(h)

    # an element name the block list came to refuse later stops every shot that binds it
    await run(fake, world, world.alice, "character edit", {"character": "Ava", "description": "tall, red hair"})
    h = await add_element(fake, world, "cape")
    assert h.embeds and h.embeds[0]["title"].startswith("Saved"), h.content
    queued_id(await shot(fake, world, "waves again"))
    await block(fake, world, "word", "CAPE")
    h = await shot(fake, world, "waves once more")
    assert h.ephemeral
    assert (
        h.content == "This server's block list does not allow the element **cape** of **Ava**. Change it and try again."
    )
    h = await run(fake, world, world.mo, "settings audit", {"count": 3})
    assert "**refused.word** `the element **cape** of **Ava** matched 'CAPE': cape`" in h.embeds[0]["description"]


async def test_an_imported_card_is_screened(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    await ava_with_front_view(fake, world)
    h = await add_element(fake, world, "cape")
    assert h.embeds and h.embeds[0]["title"].startswith("Saved"), h.content
    data = (await export(fake, world.studio_a, world.alice)).attachments[0].data
    h = await fake.slash(
        world.studio_b, world.zed, "settings blocklist", {"action": "add", "kind": "word", "value": "cape"}
    )
    await h.wait_settled()
    h = await import_card(fake, world.studio_b, world.zed, data)
    assert h.ephemeral and h.content == BLOCKED.format("element name **cape**")
    assert runner.bot is not None
    assert await runner.bot.services.storage.characters.count(world.studio_b.id) == 0


async def test_a_look_alike_name_is_taken(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    h = await run(fake, world, world.alice, "character create", {"name": "Ava", "description": "tall"})
    assert not h.ephemeral, h.content
    h = await run(fake, world, world.bob, "character create", {"name": "\u0410va", "description": "short"})  # Cyrillic
    assert h.ephemeral
    assert h.content == (
        "This server already has a character called **Ava**, which looks the same as **\u0410va**. Pick another name."
    )
    h = await run(fake, world, world.bob, "character create", {"name": "Bea", "description": "short"})
    assert not h.ephemeral, h.content
    h = await run(fake, world, world.bob, "character edit", {"character": "Bea", "new_name": "\u0391VA"})  # Greek
    assert h.ephemeral and "already has a character called **Ava**, which looks the same" in h.content
    assert runner.bot is not None
    names = [c.name for c in await runner.bot.services.storage.characters.all(world.studio_a.id)]
    assert names == ["Ava", "Bea"]


async def test_a_catastrophic_admin_pattern_cannot_stall_anything(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    scripted(runner, Backend())
    await ava_with_front_view(fake, world)
    h = await block(fake, world, "pattern", "(x|xx)+y")
    assert "`(x|xx)+y`" in h.content, h.content  # RE2 runs it in linear time: nothing to refuse
    h = await block(fake, world, "pattern", "(?<!blood)bath")
    assert h.content.startswith("That pattern uses something this bot's patterns cannot do ("), h.content
    assert "lookarounds" in h.content

    queued_id(await shot(fake, world, "x" * 500))  # screened against the pattern, and passed
    h = await shot(fake, world, "x" * 499 + "y")
    assert h.ephemeral and h.content == BLOCKED.format("prompt")
    h = await run(fake, world, world.alice, "character create", {"name": "Rex", "description": "x" * 999 + "y"})
    assert h.ephemeral and h.content == BLOCKED.format("description")


async def test_the_bots_own_wording_is_not_refused(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    """Every compiled prompt says "camera", "face" and "view": blocking them refuses the member's words only."""
    scripted(runner, Backend())
    await ava_with_front_view(fake, world)
    await block(fake, world, "word", "camera")
    await block(fake, world, "pattern", r"same\s+face")
    queued_id(await shot(fake, world, "waves"))
    h = await shot(fake, world, "looks into the camera")
    assert h.ephemeral and h.content == BLOCKED.format("prompt")
    h = await shot(fake, world, "keeps the same face")
    assert h.ephemeral and h.content == BLOCKED.format("prompt")
