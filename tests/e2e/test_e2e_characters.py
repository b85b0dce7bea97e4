"""A member's journeys through /character, with the real discord.py client against the fake Discord."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.infra.logs import log_context
from tests.support.bot_runner import BotRunner, World
from tests.support.fake_discord import FakeDiscord, FakeGuild, FakeUser

EPHEMERAL = 64
TRAITS = "28, athletic build, oval face, short silver hair, green bomber jacket"


async def create(
    fake: FakeDiscord, world: World, name: str, *, user: FakeUser | None = None, guild: FakeGuild | None = None
) -> None:
    h = await fake.slash(
        guild or world.studio_a, user or world.alice, "character create", {"name": name, "description": TRAITS}
    )
    await h.wait_settled()
    assert not h.ephemeral, h.content


async def test_create_show_list_edit_lock_delete(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    h = await fake.slash(world.studio_a, world.alice, "character create", {"name": "Ava", "description": TRAITS})
    await h.wait_settled()
    # vetted first (a refusal is the private first answer), then a public deferral while the write runs
    assert h.callback_type == 5 and not h.ephemeral and h.updates == 1
    assert "added **Ava** to the library" in h.content
    card = h.embeds[0]
    assert card["title"] == "Ava"
    assert card["description"] == TRAITS
    fields = {f["name"]: f["value"] for f in card["fields"]}
    assert fields["Owner"] == f"<@{world.alice.id}>"
    assert fields["Version"] == "v1"
    assert fields["Reference views (0/5)"].count("▫️") == 5

    h = await fake.slash(world.studio_a, world.bob, "character show", {"character": "ava"})
    await h.wait_settled()
    assert h.embeds[0]["title"] == "Ava" and not h.ephemeral

    h = await fake.slash(world.studio_a, world.bob, "character list", {})
    await h.wait_settled()
    assert h.ephemeral
    assert "**Ava** · v1" in h.embeds[0]["description"]
    assert h.embeds[0]["footer"]["text"] == "Page 1/1 · 1 character"

    h = await fake.slash(
        world.studio_a,
        world.alice,
        "character edit",
        {"character": "Ava", "new_name": "Ava Prime", "description": "older"},
    )
    await h.wait_settled()
    assert h.ephemeral and "**Ava Prime** was updated" in h.content
    assert {f["name"]: f["value"] for f in h.embeds[0]["fields"]}["Version"] == "v2"

    h = await fake.slash(world.studio_a, world.alice, "character lock", {"character": "Ava Prime"})
    await h.wait_settled()
    assert "locked" in h.content and h.ephemeral

    h = await fake.slash(world.studio_a, world.alice, "character delete", {"character": "Ava Prime"})
    await h.wait_settled()
    assert h.ephemeral and "cannot be undone" in h.content
    assert h.message is not None
    buttons = [c for row in h.components for c in row["components"]]
    delete_id = next(b["custom_id"] for b in buttons if b["label"] == "Delete for everyone")
    press = await fake.press(h.message, delete_id, world.alice)
    await press.wait_settled()
    assert "**Ava Prime** was deleted" in press.content
    assert press.components == []

    h = await fake.slash(world.studio_a, world.alice, "character show", {"character": "Ava Prime"})
    await h.wait_settled()
    assert h.ephemeral and "There is no character called **Ava Prime**" in h.content


async def test_duplicate_name_in_any_case_is_refused(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    await create(fake, world, "Ava")
    h = await fake.slash(world.studio_a, world.bob, "character create", {"name": "aVA", "description": "other"})
    await h.wait_settled()
    assert h.ephemeral and h.callback_type == 4  # refused before any deferral: the first answer is private
    assert h.content == "This server already has a character called **Ava**. Pick another name."
    assert runner.bot is not None
    assert await runner.bot.services.storage.characters.count(world.studio_a.id) == 1


async def test_the_same_name_twice_at_once_makes_one_character(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    """Whichever loses is refused privately: by the check from memory (its first answer), or, when both passed
    it before either wrote, by the database after its public deferral, which is then deleted."""
    options = {"name": "Ava", "description": "tall"}
    first, second = await asyncio.gather(
        fake.slash(world.studio_a, world.alice, "character create", options),
        fake.slash(world.studio_a, world.bob, "character create", options),
    )
    await asyncio.gather(first.wait_settled(), second.wait_settled())
    made, refused = sorted([first, second], key=lambda h: "added **Ava**" not in h.content)
    assert "added **Ava** to the library" in made.content and not made.ephemeral
    if refused.callback_type == 5:  # deferred publicly, refused by the database
        assert refused.original is not None and refused.original.deleted
        await fake.wait_until(lambda: bool(refused.followups), 15, "the refusal's follow-up")
        answer = refused.followups[-1]
    else:
        assert refused.callback_type == 4 and refused.original is not None
        answer = refused.original
    assert answer.flags & 64 and "already has a character called **Ava**" in answer.content
    assert runner.bot is not None
    assert await runner.bot.services.storage.characters.count(world.studio_a.id) == 1


async def test_invalid_name_gets_a_friendly_refusal(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    h = await fake.slash(world.studio_a, world.bob, "character create", {"name": "<@123>", "description": "x"})
    await h.wait_settled()
    assert h.ephemeral and "letters, digits" in h.content


async def test_non_owner_cannot_edit_or_delete_but_manage_server_can(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    await create(fake, world, "Ava")
    h = await fake.slash(world.studio_a, world.bob, "character edit", {"character": "Ava", "description": "hacked"})
    await h.wait_settled()
    assert h.ephemeral and f"belongs to <@{world.alice.id}>" in h.content
    h = await fake.slash(world.studio_a, world.bob, "character delete", {"character": "Ava"})
    await h.wait_settled()
    assert h.ephemeral and "belongs to" in h.content and h.components == []

    h = await fake.slash(world.studio_a, world.mo, "character edit", {"character": "Ava", "description": "moderated"})
    await h.wait_settled()
    assert "was updated" in h.content
    h = await fake.slash(world.studio_a, world.bob, "character show", {"character": "Ava"})
    await h.wait_settled()
    assert h.embeds[0]["description"] == "moderated"

    h = await fake.slash(world.studio_a, world.mo, "character delete", {"character": "Ava"})
    await h.wait_settled()
    assert h.message is not None
    delete_id = next(c["custom_id"] for row in h.components for c in row["components"] if c["style"] == 4)
    # the confirmation is checked again on press: Bob pressing it (forged) is refused
    forged = await fake.press(h.message, delete_id, world.bob)
    await forged.wait_settled()
    assert forged.ephemeral and "belongs to" in forged.content
    press = await fake.press(h.message, delete_id, world.mo)
    await press.wait_settled()
    assert "was deleted" in press.content


async def test_locked_character_only_owner_changes_it(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    await create(fake, world, "Ava")
    h = await fake.slash(world.studio_a, world.bob, "character lock", {"character": "Ava"})
    await h.wait_settled()
    assert h.ephemeral and "Only the owner" in h.content
    h = await fake.slash(world.studio_a, world.alice, "character lock", {"character": "Ava", "locked": True})
    await h.wait_settled()
    h = await fake.slash(world.studio_a, world.mo, "character edit", {"character": "Ava", "description": "nope"})
    await h.wait_settled()
    assert "is locked: only its owner can change it. Unlock it first" in h.content
    h = await fake.slash(world.studio_a, world.mo, "character lock", {"character": "Ava", "locked": False})
    await h.wait_settled()
    assert "unlocked" in h.content


async def test_two_servers_with_the_same_name_stay_apart(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    await create(fake, world, "Ava")
    h = await fake.slash(world.studio_b, world.zed, "character create", {"name": "Ava", "description": "from B"})
    await h.wait_settled()
    assert not h.ephemeral
    h = await fake.slash(world.studio_b, world.bob, "character show", {"character": "Ava"})
    await h.wait_settled()
    assert h.embeds[0]["description"] == "from B"
    # Zed (owner in B, Manage Server there) cannot touch Studio A's Ava by name: it is B's Ava he edits.
    h = await fake.slash(world.studio_b, world.zed, "character edit", {"character": "Ava", "description": "B2"})
    await h.wait_settled()
    h = await fake.slash(world.studio_a, world.alice, "character show", {"character": "Ava"})
    await h.wait_settled()
    assert h.embeds[0]["description"] == TRAITS


async def test_a_delete_button_cannot_reach_another_server(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    await create(fake, world, "Ava")
    h = await fake.slash(world.studio_a, world.alice, "character delete", {"character": "Ava"})
    await h.wait_settled()
    assert h.message is not None
    delete_id = next(c["custom_id"] for row in h.components for c in row["components"] if c["style"] == 4)
    # Zed, who manages Studio B, replays the custom_id from his own server: the id names nothing there.
    forged = await fake.press(h.message, delete_id, world.zed, guild=world.studio_b)
    await forged.wait_settled()
    assert forged.ephemeral and "no longer exists in this server" in forged.content
    assert runner.bot is not None
    assert await runner.bot.services.storage.characters.count(world.studio_a.id) == 1


async def test_autocomplete_offers_only_this_servers_names(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    for name in ("Ava", "Avalon", "Bea"):
        await create(fake, world, name)
    await create(fake, world, "Avery", user=world.zed, guild=world.studio_b)
    choices = await fake.autocomplete(
        world.studio_a, world.bob, "character show", {"character": "av"}, focused="character"
    )
    assert [c["value"] for c in choices] == ["Ava", "Avalon"]
    choices = await fake.autocomplete(
        world.studio_b, world.bob, "character show", {"character": "av"}, focused="character"
    )
    assert [c["value"] for c in choices] == ["Avery"]


async def test_long_list_pages_with_buttons_that_survive_a_restart(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    assert runner.bot is not None
    for index in range(23):
        await runner.bot.services.storage.characters.create(
            world.studio_a.id, f"Char {index:02d}", "traits", world.alice.id
        )
    h = await fake.slash(world.studio_a, world.bob, "character list", {})
    await h.wait_settled()
    assert h.embeds[0]["footer"]["text"] == "Page 1/3 · 23 characters"
    assert h.message is not None
    next_id = next(c["custom_id"] for row in h.components for c in row["components"] if "Next" in c["label"])

    await runner.restart()
    press = await fake.press(h.message, next_id, world.bob)
    await press.wait_settled()
    assert press.callback_type == 7
    assert press.embeds[0]["footer"]["text"] == "Page 2/3 · 23 characters"
    assert "**Char 10**" in press.embeds[0]["description"]


async def test_restart_keeps_the_library(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    await create(fake, world, "Ava")
    await runner.restart()
    h = await fake.slash(world.studio_a, world.bob, "character show", {"character": "Ava"})
    await h.wait_settled()
    assert h.embeds[0]["title"] == "Ava"


async def test_rate_limited_reply_is_retried(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    fake.rate_limit("POST", r"/channels/\d+/messages|/interactions/\d+/[^/]+/callback", times=1, retry_after=0.1)
    h = await fake.slash(world.studio_a, world.alice, "character create", {"name": "Ava", "description": TRAITS})
    await h.wait_settled()
    assert len(fake.rate_limited) == 1
    assert "added **Ava**" in h.content


async def test_interaction_answered_too_late_does_not_break_the_bot(
    fake: FakeDiscord, world: World, runner: BotRunner, caplog: pytest.LogCaptureFixture
) -> None:
    fake.interaction_deadline = 0.0
    with caplog.at_level(logging.WARNING):
        h = await fake.slash(world.studio_a, world.alice, "character list", {})
        await h.wait_response()
    assert h.callback_status == 404
    await fake.wait_until(
        lambda: any("expired before it was answered" in r.getMessage() for r in caplog.records), 5, "the warning"
    )
    assert not any(r.levelname == "ERROR" for r in caplog.records)
    fake.interaction_deadline = 3.0
    h = await fake.slash(world.studio_a, world.alice, "character list", {})
    await h.wait_settled()
    assert "The library is empty" in h.embeds[0]["description"]


@pytest.mark.parametrize(
    ("broken_method", "command", "options"),
    [
        ("page", "character list", {}),  # a bug inside a command
        ("get", "character show", {"character": "Ava"}),  # a bug while resolving an option: not the member's fault
    ],
)
async def test_unexpected_error_shows_an_error_id_and_logs_it(
    fake: FakeDiscord,
    world: World,
    runner: BotRunner,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    broken_method: str,
    command: str,
    options: dict[str, str],
) -> None:
    assert runner.bot is not None

    context: dict[str, object] = {}

    async def broken(*args: object, **kwargs: object) -> None:
        context.update(log_context.get())  # what every log line of this command says it is about
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(runner.bot.services.library, broken_method, broken)
    with caplog.at_level(logging.ERROR):
        h = await fake.slash(world.studio_a, world.alice, command, options)
        await h.wait_settled()
    assert h.ephemeral and "error id" in h.content and "couldn't understand" not in h.content
    error_id = h.content.split("`")[1]
    assert any(
        error_id in r.getMessage() and r.exc_info and "disk on fire" in str(r.exc_info[1]) for r in caplog.records
    )
    assert "disk on fire" not in h.content
    assert context["command"] == command and context["guild_id"] == world.studio_a.id
    assert context["user_id"] == world.alice.id and context["interaction_id"] == h.id
    exposition = runner.bot.services.metrics.render({}, None)
    errors = next(f for f in text_string_to_metric_families(exposition) if f.name == "likeness_errors")
    assert [(s.labels, s.value) for s in errors.samples if s.name == "likeness_errors_total"] == [
        ({"where": "command"}, 1.0)
    ]
