"""Memory stays bounded whatever members upload: pictures are kept at most 2048 px, a few image jobs run at once
in the whole bot, and each member has one upload in flight. Through the fake Discord, as members use it."""

from __future__ import annotations

import asyncio
import io
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from PIL import Image, ImageDraw

import bot.library.sheets.compose
from bot.domain import ReferenceView, View
from bot.imaging.cleanup import CleanupResult
from bot.imaging.scale import MAX_SIDE
from bot.imaging.sheet import slot_sizes
from bot.imaging.upload_gate import ONE_AT_A_TIME
from bot.library.card_format import CARD_FILE, build_card
from tests.support.bot_runner import BotRunner, World
from tests.support.cards import element, sha, zip_of
from tests.support.characters import TRAITS
from tests.support.fake_discord import FakeDiscord, FakeGuild, FakeUser
from tests.support.figures import figure_png
from tests.support.sharing import import_card

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def big_flat_png(size: tuple[int, int], colour: tuple[int, int, int] = (40, 90, 200), mode: str = "RGB") -> bytes:
    """A flat-background figure as a large picture that compresses to a small file."""
    image = Image.new(mode, size, (255, 255, 255, 0) if mode == "RGBA" else (255, 255, 255))
    w, h = size
    ImageDraw.Draw(image).rectangle((w * 0.3, h * 0.1, w * 0.7, h * 0.9), fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


async def create(fake: FakeDiscord, guild: FakeGuild, user: FakeUser, name: str) -> None:
    h = await fake.slash(guild, user, "character create", {"name": name, "description": TRAITS})
    await h.wait_settled()
    assert not h.ephemeral, h.content


async def start_upload(fake: FakeDiscord, world: World, user: FakeUser, name: str, view: str, data: bytes) -> Any:
    attachment = fake.upload(data, f"{view}.png", "image/png")
    return await fake.slash(
        world.studio_a, user, "character view add", {"character": name, "view": view, "image": attachment}
    )


def image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


class GatedCleanup:
    """Stands in for the remover's cleanup: counts who is inside, holds them until `release` is set."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.inside = 0
        self.most_inside = 0
        self.entered = 0
        self.release = asyncio.Event()

    async def __call__(self, image: Image.Image) -> CleanupResult:
        self.inside += 1
        self.entered += 1
        self.most_inside = max(self.most_inside, self.inside)
        try:
            await self.release.wait()
            return await self.real(image)
        finally:
            self.inside -= 1


def gate_cleanup(runner: BotRunner, monkeypatch: pytest.MonkeyPatch) -> GatedCleanup:
    assert runner.bot is not None
    remover = runner.bot.services.remover
    gated = GatedCleanup(remover.cleanup)
    monkeypatch.setattr(remover, "cleanup", gated)
    return gated


class Downloads:
    """Counts the attachments the bot starts downloading (uploads and card imports)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import bot.library.cards
        import bot.library.references

        self.count = 0
        real = bot.library.references.download

        async def counted(*args: Any) -> bytes:
            self.count += 1
            return await real(*args)

        monkeypatch.setattr(bot.library.references, "download", counted)
        monkeypatch.setattr(bot.library.cards, "download", counted)


# ---------------------------------------------------------------------------------------------------- scaled down


async def test_a_small_file_declaring_a_huge_picture_is_kept_at_2048_px(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    data = big_flat_png((7000, 5000))
    assert len(data) < 1024 * 1024  # tiny on the wire, 35 megapixels once decoded
    await create(fake, world.studio_a, world.alice, "Ava")
    h = await start_upload(fake, world, world.alice, "Ava", "front", data)
    await h.wait_settled(timeout=30)
    assert h.embeds and h.embeds[0]["title"] == "Saved the front view of Ava", h.content
    notes = {f["name"]: f["value"] for f in h.embeds[0]["fields"]}["What I did"]
    assert "scaled down from 7000×5000 to 2048×1463 pixels" in notes

    assert runner.bot is not None
    storage = runner.bot.services.storage
    character = await storage.characters.get_by_name(world.studio_a.id, "Ava")
    assert character is not None
    [view] = await storage.references.current_views(world.studio_a.id, character.id)
    assert image_size(await storage.blobs.get(view.original_blob)) == (2048, 1463)
    for digest in (view.cleaned_blob, view.cutout_blob):
        assert digest is not None
        assert max(image_size(await storage.blobs.get(digest))) <= MAX_SIDE


async def test_a_card_of_big_images_is_stored_scaled_down_and_sheets_load_thumbnails(
    fake: FakeDiscord, world: World, runner: BotRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    front = big_flat_png((2400, 3200), mode="RGBA")
    props = [big_flat_png((3000, 3000), colour, mode="RGBA") for colour in ((200, 30, 30), (30, 160, 30))]
    blobs = {sha(data): data for data in [front, *props]}
    views = [
        ReferenceView(
            id=0,
            character_id=0,
            view=View.FRONT,
            original_blob=sha(front),
            cleaned_blob=None,
            cutout_blob=sha(front),
            uploaded_by=1,
            created_at=NOW,
        )
    ]
    card = build_card("Ava", TRAITS, views, [element(f"prop {i}", sha(p)) for i, p in enumerate(props)], blobs)

    h = await import_card(fake, world.studio_b, world.zed, card)
    assert h.content.startswith("📥 Imported **Ava**: 1 views, 2 elements."), h.content
    assert runner.bot is not None
    storage = runner.bot.services.storage
    character = await storage.characters.get_by_name(world.studio_b.id, "Ava")
    assert character is not None
    [view] = await storage.references.current_views(world.studio_b.id, character.id)
    elements = await storage.references.elements(world.studio_b.id, character.id)
    assert image_size(await storage.blobs.get(view.original_blob)) == (1536, 2048)
    for stored in elements:
        assert image_size(await storage.blobs.get(stored.original_blob)) == (2048, 2048)
        with Image.open(io.BytesIO(await storage.blobs.get(stored.original_blob))) as kept:
            assert kept.mode == "RGBA" and kept.getchannel("A").getpixel((0, 0)) == 0  # still a cut-out

    drawn: list[tuple[str, tuple[int, int]]] = []
    real_compose = bot.library.sheets.compose.compose_sheet

    def spy(name: str, traits: str, views: Any, elements: Any, *args: Any) -> Image.Image:
        drawn.extend((v.value, image.size) for v, image in views.items() if image is not None)
        drawn.extend((name, image.size) for name, _kind, image in elements if image is not None)
        return real_compose(name, traits, views, elements, *args)

    monkeypatch.setattr(bot.library.sheets.compose, "compose_sheet", spy)
    h = await fake.slash(world.studio_b, world.zed, "sheet", {"character": "Ava"})
    await h.wait_settled(timeout=30)
    await fake.wait_until(lambda: bool(h.followups) or bool(h.attachments), 10, "the sheet")
    view_slot, tile = slot_sizes()
    assert sorted(name for name, _ in drawn) == ["front", "prop 0", "prop 1"]
    for name, (width, height) in drawn:
        box = view_slot if name == "front" else tile
        assert width <= box[0] and height <= box[1], (name, width, height, box)


# ---------------------------------------------------------------------------------------------------- bounded


async def test_a_second_upload_while_the_first_is_in_flight_is_refused(
    fake: FakeDiscord, world: World, runner: BotRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create(fake, world.studio_a, world.bob, "Ava")
    gated, downloads = gate_cleanup(runner, monkeypatch), Downloads(monkeypatch)
    first = await start_upload(fake, world, world.bob, "Ava", "front", figure_png())
    await fake.wait_until(lambda: gated.entered == 1, 10, "the first upload being cleaned")

    second = await start_upload(fake, world, world.bob, "Ava", "side", figure_png((200, 40, 40)))
    await second.wait_settled()
    assert second.ephemeral and second.content == ONE_AT_A_TIME
    card = fake.upload(zip_of({CARD_FILE: b"{}"}), "Bea.likeness.zip", "application/zip")
    third = await fake.slash(world.studio_b, world.bob, "character import", {"card": card})
    await third.wait_settled()
    assert third.ephemeral and third.content == ONE_AT_A_TIME  # in another server too: one member, one upload
    assert downloads.count == 1 and gated.entered == 1  # the refused ones downloaded nothing

    gated.release.set()
    await first.wait_settled(timeout=30)
    assert first.embeds and first.embeds[0]["title"] == "Saved the front view of Ava", first.content
    assert runner.bot is not None
    character = await runner.bot.services.storage.characters.get_by_name(world.studio_a.id, "Ava")
    assert character is not None and character.version == 2  # only the first upload changed anything
    [view] = await runner.bot.services.storage.references.current_views(world.studio_a.id, character.id)
    assert view.view is View.FRONT

    # once the first is done, the next one is welcome
    again = await start_upload(fake, world, world.bob, "Ava", "side", figure_png((200, 40, 40)))
    await again.wait_settled(timeout=30)
    assert again.embeds and again.embeds[0]["title"] == "Saved the side view of Ava", again.content


async def test_uploads_of_many_members_share_a_bounded_number_of_slots(
    fake: FakeDiscord, world: World, runner: BotRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert runner.bot is not None
    members = [world.alice, world.bob, world.mo, fake.add_user("cy")]
    fake.add_member(world.studio_a, members[3])
    names = ["Ava", "Bea", "Cy", "Di"]
    for user, name in zip(members, names, strict=True):
        await create(fake, world.studio_a, user, name)
    gate = runner.bot.services.gate
    assert gate.slots == runner.settings.cleanup_workers == 2
    gated, downloads = gate_cleanup(runner, monkeypatch), Downloads(monkeypatch)

    uploads = [
        await start_upload(fake, world, user, name, "front", figure_png((40 * i, 90, 200)))
        for i, (user, name) in enumerate(zip(members, names, strict=True))
    ]
    await fake.wait_until(lambda: gated.entered == 2 and gate.waiting == 2, 10, "two uploads in, two waiting")
    assert gated.most_inside == 2 and gate.busy == 2
    assert downloads.count == 2  # the waiting ones have not even downloaded yet

    gated.release.set()
    for h in uploads:
        await h.wait_settled(timeout=30)
        assert h.embeds and h.embeds[0]["title"].startswith("Saved the front view of"), h.content
    assert gated.entered == 4 and gated.most_inside == 2 and gate.busy == gate.waiting == 0


# ---------------------------------------------------------------------------------------------------- bad cards


async def test_a_card_with_a_5000_digit_number_gets_a_clear_answer_and_no_traceback(
    fake: FakeDiscord, world: World, runner: BotRunner, caplog: pytest.LogCaptureFixture
) -> None:
    document = b'{"format": "likeness-character", "format_version": ' + b"9" * 5000 + b', "name": "Ava"}'
    h = await import_card(fake, world.studio_b, world.zed, zip_of({CARD_FILE: document}))
    assert h.ephemeral and "holds the number `999999999999…(5,000 characters)`" in h.content, h.content
    assert "Something went wrong" not in h.content
    nan = b'{"format": "likeness-character", "format_version": NaN, "name": "Ava"}'
    h = await import_card(fake, world.studio_b, world.zed, zip_of({CARD_FILE: nan}))
    assert h.ephemeral and "holds `NaN`, which isn't a number" in h.content, h.content
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []
    assert runner.bot is not None
    assert await runner.bot.services.storage.characters.count(world.studio_b.id) == 0
