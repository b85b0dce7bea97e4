"""Sharing characters: visibility (server / private / roles) and portable cards (export, import), end to end."""

from __future__ import annotations

import io
import zipfile
from typing import Any

from bot.domain import Character, Visibility
from bot.library.card_format import CARD_FILE
from tests.support.bot_runner import BotRunner, World
from tests.support.characters import TRAITS, ava_with_front_view
from tests.support.fake_discord import FakeDiscord, FakeGuild, FakeRole, FakeUser
from tests.support.figures import figure_png
from tests.support.scripted_provider import Backend
from tests.support.sharing import export, import_card, run
from tests.support.shots import queued_id, scripted, shot

NOT_FOUND = "There is no character called **{}** in this server. `/character list` shows them all."


async def create(fake: FakeDiscord, world: World, name: str = "Ava", *, guild: FakeGuild | None = None) -> None:
    owner = world.zed if guild is world.studio_b else world.alice
    h = await run(fake, guild or world.studio_a, owner, "character create", {"name": name, "description": TRAITS})
    assert not h.ephemeral, h.content


async def set_visibility(
    fake: FakeDiscord, world: World, who: str, *roles: FakeRole, user: FakeUser | None = None, name: str = "Ava"
) -> Any:
    options: dict[str, Any] = {"character": name, "who": who}
    options.update({key: role for key, role in zip(("role", "role2", "role3"), roles, strict=False)})
    h = await run(fake, world.studio_a, user or world.alice, "character visibility", options)
    assert h.ephemeral
    return h


async def character(runner: BotRunner, guild: FakeGuild, name: str) -> Character:
    assert runner.bot is not None
    found = await runner.bot.services.storage.characters.get_by_name(guild.id, name)
    assert found is not None
    return found


async def sees(fake: FakeDiscord, world: World, user: FakeUser, name: str = "Ava") -> bool:
    """Whether `user` finds the character by every route: show, list and autocomplete (all must agree)."""
    show = await run(fake, world.studio_a, user, "character show", {"character": name})
    listing = await run(fake, world.studio_a, user, "character list", {})
    choices = await fake.autocomplete(
        world.studio_a, user, "character show", {"character": name[:2]}, focused="character"
    )
    found = [
        not show.ephemeral and show.embeds[0]["title"] == name,
        f"**{name}**" in listing.embeds[0]["description"],
        name in [c["value"] for c in choices],
    ]
    assert len(set(found)) == 1, found
    if not found[0]:
        assert show.ephemeral and show.content == NOT_FOUND.format(name)
    return found[0]


async def add_reference(fake: FakeDiscord, world: World, command: str, options: dict[str, Any], image: bytes) -> None:
    attachment = fake.upload(image, "ref.png", "image/png")
    h = await run(fake, world.studio_a, world.alice, command, {"character": "Ava", **options, "image": attachment}, 30)
    assert h.embeds and h.embeds[0]["title"].startswith("Saved"), h.content
    await fake.wait_until(lambda: bool(h.followups), 10, "the public before/after preview")


def card_files(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


# ---------------------------------------------------------------------------------------------------- visibility


async def test_private_character_is_invisible_to_members(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    await create(fake, world)
    h = await set_visibility(fake, world, "private")
    assert h.content.startswith("**Ava** (v2) is visible to: 🔐 Private: only")

    assert not await sees(fake, world, world.bob)
    assert await sees(fake, world, world.alice)
    assert await sees(fake, world, world.mo)  # Manage Server sees everything, to moderate it

    h = await run(fake, world.studio_a, world.alice, "character show", {"character": "Ava"})
    fields = {f["name"]: f["value"] for f in h.embeds[0]["fields"]}
    assert fields["Visible to"].startswith("🔐 Private") and fields["Version"] == "v2"
    h = await run(fake, world.studio_a, world.mo, "character list", {})
    assert "**Ava** · v2" in h.embeds[0]["description"] and "🔐 private" in h.embeds[0]["description"]

    # for Bob it reads exactly like a character that does not exist, whatever the command
    h = await run(fake, world.studio_a, world.bob, "animate", {"character": "Ava", "prompt": "waves hello"})
    assert h.ephemeral and h.content == NOT_FOUND.format("Ava")
    h = await run(fake, world.studio_a, world.bob, "animate", {"character": "Nobody", "prompt": "waves hello"})
    assert h.content == NOT_FOUND.format("Nobody")
    for command, options in [
        ("sheet", {"character": "Ava"}),
        ("character visibility", {"character": "Ava", "who": "server"}),
        ("character edit", {"character": "Ava", "description": "nope"}),
    ]:
        h = await run(fake, world.studio_a, world.bob, command, options)
        assert h.ephemeral and h.content == NOT_FOUND.format("Ava"), (command, h.content)
    choices = await fake.autocomplete(
        world.studio_a, world.bob, "character bind", {"character": "Ava", "element": ""}, focused="element"
    )
    assert choices == []

    # a moderator opens it up again
    h = await set_visibility(fake, world, "server", user=world.mo)
    assert "🌐 Everyone in this server" in h.content and "(v3)" in h.content
    assert await sees(fake, world, world.bob)


async def test_the_queue_does_not_name_characters_a_member_cannot_see(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    backend = Backend()
    backend.hold_render.clear()  # the shot stays in the queue while members look at it
    scripted(runner, backend)
    await ava_with_front_view(fake, world)
    await set_visibility(fake, world, "private")
    job_id = queued_id(await shot(fake, world, "waves"))

    h = await run(fake, world.studio_a, world.bob, "queue show", {})
    listing = str(h.embeds)
    assert h.ephemeral and "Ava" not in listing, listing
    assert f"#{job_id} a private character" in listing  # still counted: the queue is as long as it is
    for user in (world.alice, world.mo):  # its owner, and Manage Server, who moderates it
        h = await run(fake, world.studio_a, user, "queue show", {})
        assert f"#{job_id} **Ava**" in str(h.embeds)


async def test_roles_visibility(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    artists = fake.add_role(world.studio_a, "Artists")
    writers = fake.add_role(world.studio_a, "Writers")
    carol, dan = fake.add_user("carol"), fake.add_user("dan")
    fake.add_member(world.studio_a, carol, roles=[writers])
    fake.add_member(world.studio_a, dan)
    await create(fake, world)

    h = await set_visibility(fake, world, "roles")
    assert "Pick at least one role" in h.content
    assert (await character(runner, world.studio_a, "Ava")).version == 1  # a refusal changes nothing

    h = await set_visibility(fake, world, "roles", artists, writers)
    assert f"Members with <@&{artists.id}>, <@&{writers.id}>" in h.content
    ava = await character(runner, world.studio_a, "Ava")
    assert ava.visibility is Visibility.ROLES and set(ava.visible_role_ids) == {artists.id, writers.id}

    assert await sees(fake, world, carol)  # holds Writers
    assert not await sees(fake, world, world.bob)
    assert not await sees(fake, world, dan)
    fake.add_member(world.studio_a, dan, roles=[artists])  # given the role: sees it from now on
    assert await sees(fake, world, dan)

    # only the owner or Manage Server may change who sees it; a member with the role may not
    h = await set_visibility(fake, world, "server", user=carol)
    assert "belongs to" in h.content


async def test_restart_keeps_visibility(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    artists = fake.add_role(world.studio_a, "Artists")
    carol = fake.add_user("carol")
    fake.add_member(world.studio_a, carol, roles=[artists])
    await create(fake, world, "Ava")
    await create(fake, world, "Bea")
    await set_visibility(fake, world, "private", name="Ava")
    await set_visibility(fake, world, "roles", artists, name="Bea")

    await runner.restart()
    assert not await sees(fake, world, world.bob, "Ava")
    assert await sees(fake, world, world.mo, "Ava")
    assert await sees(fake, world, carol, "Bea")
    assert not await sees(fake, world, carol, "Ava")
    assert not await sees(fake, world, world.bob, "Bea")


# ---------------------------------------------------------------------------------------------------- cards


async def ava_with_references(fake: FakeDiscord, world: World) -> None:
    await create(fake, world)
    await add_reference(fake, world, "character view add", {"view": "front"}, figure_png((40, 90, 200)))
    await add_reference(fake, world, "character view add", {"view": "side"}, figure_png((40, 90, 200), (500, 800)))
    jacket = figure_png((150, 30, 30), (500, 500))
    await add_reference(fake, world, "character element add", {"name": "jacket", "kind": "outfit"}, jacket)
    hat = figure_png((10, 130, 30), (400, 400))
    await add_reference(fake, world, "character element add", {"name": "hat", "kind": "accessory"}, hat)
    h = await run(
        fake, world.studio_a, world.alice, "character bind", {"character": "Ava", "element": "hat", "state": "off"}
    )
    assert "unbound" in h.content


async def test_export_import_round_trip_is_byte_identical(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    await ava_with_references(fake, world)
    await set_visibility(fake, world, "private")  # the owner exports her own private character

    h = await export(fake, world.studio_a, world.alice)
    assert h.ephemeral, h.content
    [(filename, data, _type)] = h.attachments
    assert filename == "Ava.likeness.zip"

    assert runner.bot is not None
    storage = runner.bot.services.storage
    source = await character(runner, world.studio_a, "Ava")
    source_views = await storage.references.current_views(world.studio_a.id, source.id)
    source_elements = await storage.references.elements(world.studio_a.id, source.id)
    files = card_files(data)
    digests = {d for r in [*source_views, *source_elements] for d in (r.original_blob, r.cleaned_blob, r.cutout_blob)}
    assert {name.split("/")[1].split(".")[0] for name in files if name != CARD_FILE} == digests
    for name, content in files.items():
        if name != CARD_FILE:  # every image in the zip is the stored blob, byte for byte
            assert content == await storage.blobs.get(name.split("/")[1].split(".")[0])

    h = await import_card(fake, world.studio_b, world.zed, data)
    assert h.ephemeral and h.content.startswith("📥 Imported **Ava**: 2 views, 2 elements."), h.content
    [announcement] = h.followups
    assert not announcement.ephemeral and "imported **Ava** into the library" in announcement.content

    copy = await character(runner, world.studio_b, "Ava")
    assert (copy.owner_id, copy.visibility, copy.description, copy.version) == (
        world.zed.id,
        Visibility.SERVER,
        TRAITS,
        1,
    )
    copy_views = await storage.references.current_views(world.studio_b.id, copy.id)
    copy_elements = await storage.references.elements(world.studio_b.id, copy.id)
    assert {v.view: (v.original_blob, v.cleaned_blob, v.cutout_blob) for v in copy_views} == {
        v.view: (v.original_blob, v.cleaned_blob, v.cutout_blob) for v in source_views
    }
    assert [(e.name, e.kind, e.bound, e.original_blob, e.cleaned_blob, e.cutout_blob) for e in copy_elements] == [
        (e.name, e.kind, e.bound, e.original_blob, e.cleaned_blob, e.cutout_blob) for e in source_elements
    ]
    assert [(e.name, e.bound) for e in copy_elements] == [("hat", False), ("jacket", True)]
    for view in copy_views:  # the copy's blobs are the card's files, byte for byte
        assert await storage.blobs.get(view.original_blob) == files[next(n for n in files if view.original_blob in n)]

    # Bob, a member of Studio B, sees and uses the copy; exporting it again gives the very same file
    h = await run(fake, world.studio_b, world.bob, "character show", {"character": "Ava"})
    assert h.embeds[0]["title"] == "Ava"
    again = await export(fake, world.studio_b, world.bob)
    assert again.attachments[0].data == data


async def test_member_cannot_export_a_private_character(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    await create(fake, world)
    await set_visibility(fake, world, "private")
    h = await export(fake, world.studio_a, world.bob)
    assert h.ephemeral and h.content == NOT_FOUND.format("Ava") and h.attachments == []
    h = await export(fake, world.studio_a, world.mo)
    assert h.attachments and h.attachments[0].filename == "Ava.likeness.zip"


async def test_import_name_clash_suggests_the_name_option(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    await create(fake, world)
    data = (await export(fake, world.studio_a, world.alice)).attachments[0].data
    await create(fake, world, "ava", guild=world.studio_b)

    h = await import_card(fake, world.studio_b, world.zed, data)
    assert h.ephemeral and "already has a character called **Ava**" in h.content and "`name:`" in h.content
    assert runner.bot is not None
    assert await runner.bot.services.storage.characters.count(world.studio_b.id) == 1

    h = await import_card(fake, world.studio_b, world.zed, data, name="Ava Two")
    assert h.content.startswith("📥 Imported **Ava Two**"), h.content
    h = await import_card(fake, world.studio_b, world.zed, data, name="@everyone")
    assert "letters, digits" in h.content
    assert await runner.bot.services.storage.characters.count(world.studio_b.id) == 2


def hostile_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(CARD_FILE, b'{"format": "likeness-character"}')
        archive.writestr("../../outside.png", figure_png())
    return buffer.getvalue()


async def test_hostile_cards_are_refused_and_create_nothing(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    assert runner.bot is not None
    blob_dir = runner.bot.settings.blob_dir
    h = await import_card(fake, world.studio_b, world.zed, hostile_zip())
    assert h.ephemeral and "unsafe path (`../../outside.png`)" in h.content

    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(CARD_FILE, b" " * (16 * 1024 * 1024))
    h = await import_card(fake, world.studio_b, world.zed, bomb.getvalue())
    assert h.ephemeral and "zip bomb" in h.content

    h = await import_card(fake, world.studio_b, world.zed, figure_png(), filename="ava.png")
    assert h.ephemeral and "isn't a Likeness character card" in h.content
    h = await import_card(fake, world.studio_b, world.zed, figure_png(), filename="renamed.zip")
    assert h.ephemeral and "isn't a Likeness character card" in h.content

    # a declared size over the cap is refused before anything is downloaded
    downloads = len([r for r in fake.requests if "/attachments/" in r.path])
    h = await import_card(fake, world.studio_b, world.zed, hostile_zip(), size=81 * 1024 * 1024)
    assert h.ephemeral and "over the 80 MB limit for character cards" in h.content
    assert len([r for r in fake.requests if "/attachments/" in r.path]) == downloads

    assert await runner.bot.services.storage.characters.count(world.studio_b.id) == 0
    assert not blob_dir.exists() or not any(p.is_file() for p in blob_dir.rglob("*"))
    assert [m for m in fake.channel_messages(world.studio_b.channel_id) if not m.ephemeral] == []


async def test_import_goes_through_the_screening_hook(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    await create(fake, world, "Grumpy")
    data = (await export(fake, world.studio_a, world.alice, "Grumpy")).attachments[0].data

    blocked = "This server's block list does not allow the name you wrote. Change the wording and try again."
    h = await run(
        fake, world.studio_b, world.zed, "settings blocklist", {"action": "add", "kind": "word", "value": "grumpy"}
    )
    assert "`grumpy`" in h.content
    h = await import_card(fake, world.studio_b, world.zed, data, filename="Grumpy.likeness.zip")
    assert h.ephemeral and h.content == blocked
    h = await run(fake, world.studio_b, world.zed, "character create", {"name": "Grumpy", "description": TRAITS})
    assert h.ephemeral and h.content == blocked
    assert runner.bot is not None
    assert await runner.bot.services.storage.characters.count(world.studio_b.id) == 0
    h = await import_card(fake, world.studio_b, world.zed, data, filename="Grumpy.likeness.zip", name="Sunny")
    assert h.content.startswith("📥 Imported **Sunny**")


async def test_a_shot_cannot_be_taken_again_of_a_character_no_longer_shared(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    from tests.support.characters import ava_with_front_view
    from tests.support.shots import animate, result_of
    from tests.support.waiting import until

    await ava_with_front_view(fake, world)
    job_id = await animate(fake, world, "waves", user=world.bob)
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "bob's result")
    [result] = result_of(fake, world, job_id)
    await set_visibility(fake, world, "private")

    press = await fake.press(result, f"likeness:job:reroll:{job_id}", world.bob)
    await press.wait_settled()
    assert (
        press.ephemeral and press.content == "**Ava** is no longer shared with you, so this shot can't be taken again."
    )
    press = await fake.press(result, f"likeness:job:reroll:{job_id}", world.alice)  # its owner still can
    await press.wait_settled()
    assert press.content.startswith("Re-rolling: queued shot #"), press.content
