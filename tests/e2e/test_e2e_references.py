"""Reference views, elements, Element Binding and /sheet, as members use them through the fake Discord."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from bot.domain import View
from tests.support import imaging_corpus as corpus
from tests.support.bot_runner import BotRunner, World
from tests.support.characters import add_view, new_character
from tests.support.fake_discord import FakeDiscord
from tests.support.figures import figure_png
from tests.support.replies import DAMAGED


def photo_png() -> bytes:
    """A real photo of a person on a busy background (ships with scikit-image)."""
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, "PNG")
    return buffer.getvalue()


def channel_posts(fake: FakeDiscord, world: World) -> list[Any]:
    return [m for m in fake.channel_messages(world.studio_a.channel_id) if not m.ephemeral]


async def test_view_add_posts_preview_and_bumps_version(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    await new_character(fake, world)
    h = await add_view(fake, world, "front", figure_png())
    assert h.ephemeral
    receipt = h.embeds[0]
    assert receipt["title"] == "Saved the front view of Ava"
    assert "plain background keyed out" in receipt["description"] and "v2" in receipt["description"]

    [preview_post] = [m for m in channel_posts(fake, world) if m.attachments]
    assert f"<@{world.alice.id}> added the front view to **Ava** (now v2)" in preview_post.content
    [(filename, data, _type)] = preview_post.attachments
    assert filename == "before-after.png"
    preview = Image.open(io.BytesIO(data))
    assert preview.width > preview.height  # before on the left, after on the right

    h = await fake.slash(world.studio_a, world.bob, "character show", {"character": "Ava"})
    await h.wait_settled()
    fields = {f["name"]: f["value"] for f in h.embeds[0]["fields"]}
    assert "✅ Front" in fields["Reference views (1/5)"]
    assert fields["Version"] == "v2"


async def test_replacing_a_view_keeps_history(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    await new_character(fake, world)
    await add_view(fake, world, "front", figure_png((40, 90, 200)))
    await add_view(fake, world, "front", figure_png((200, 40, 40)))
    assert runner.bot is not None
    storage = runner.bot.services.storage
    character = await storage.characters.get_by_name(world.studio_a.id, "Ava")
    assert character is not None and character.version == 3
    history = await storage.references.view_history(world.studio_a.id, character.id, View.FRONT)
    assert len(history) == 2
    current = await storage.references.current_views(world.studio_a.id, character.id)
    assert [v.id for v in current] == [history[0].id]
    assert history[0].original_blob != history[1].original_blob
    assert await storage.blobs.get(history[1].original_blob)  # the old image is still kept


async def test_busy_background_photo_is_cleaned_by_the_model(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    await new_character(fake, world)
    h = await add_view(fake, world, "face", photo_png())
    assert "background removed by the model" in h.embeds[0]["description"], h.content
    assert runner.bot is not None
    character = await runner.bot.services.storage.characters.get_by_name(world.studio_a.id, "Ava")
    assert character is not None
    [view] = await runner.bot.services.storage.references.current_views(world.studio_a.id, character.id)
    assert view.cleaned_blob is not None
    white = np.asarray(
        Image.open(io.BytesIO(await runner.bot.services.storage.blobs.get(view.cleaned_blob))).convert("RGB")
    )
    # the corners (background) became white; the middle (the astronaut) did not
    assert white[:8, :8].min() >= 250 and white[:8, -8:].min() >= 250
    h_, w_ = white.shape[:2]
    assert white[h_ // 3 : 2 * h_ // 3, w_ // 3 : 2 * w_ // 3].mean() < 200


async def test_bad_uploads_are_refused_and_store_nothing(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    await new_character(fake, world)
    assert runner.bot is not None
    blob_dir = runner.bot.settings.blob_dir

    h = await add_view(fake, world, "front", corpus.text_renamed_png(), filename="notes.png")
    assert h.ephemeral and h.content.startswith("This file isn't a PNG, JPEG, WebP, GIF or AVIF image")
    h = await add_view(fake, world, "front", corpus.truncated_jpeg(), filename="cut.jpg")
    assert h.ephemeral and h.content == DAMAGED
    h = await add_view(fake, world, "front", corpus.small_png(), filename="tiny.png")
    assert h.ephemeral and "100" in h.content and "300" in h.content

    # a declared size over the cap is refused before anything is downloaded
    cdn_before = len([r for r in fake.requests if "/attachments/" in r.path])
    attachment = fake.upload(figure_png(), "huge.png", "image/png")
    attachment["size"] = 50 * 1024 * 1024
    h = await fake.slash(
        world.studio_a, world.alice, "character view add", {"character": "Ava", "view": "front", "image": attachment}
    )
    await h.wait_settled()
    assert h.ephemeral and "20 MB" in h.content
    assert len([r for r in fake.requests if "/attachments/" in r.path]) == cdn_before

    character = await runner.bot.services.storage.characters.get_by_name(world.studio_a.id, "Ava")
    assert character is not None and character.version == 1
    assert not blob_dir.exists() or not any(p.is_file() for p in blob_dir.rglob("*"))
    assert [m for m in channel_posts(fake, world) if m.attachments] == []


async def test_elements_binding_and_removal(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    await new_character(fake, world)
    attachment = fake.upload(figure_png((150, 30, 30), (500, 500)), "jacket.png", "image/png")
    h = await fake.slash(
        world.studio_a,
        world.alice,
        "character element add",
        {"character": "Ava", "name": "jacket", "kind": "outfit", "image": attachment},
    )
    await h.wait_settled(timeout=30)
    assert h.embeds[0]["title"] == "Saved the outfit **jacket** of Ava"
    await fake.wait_until(lambda: bool(h.followups), 10, "the public before/after preview")

    choices = await fake.autocomplete(
        world.studio_a, world.alice, "character bind", {"character": "Ava", "element": "ja"}, focused="element"
    )
    assert [c["value"] for c in choices] == ["jacket"]

    h = await fake.slash(
        world.studio_a, world.alice, "character bind", {"character": "Ava", "element": "jacket", "state": "off"}
    )
    await h.wait_settled()
    assert h.content == "**jacket** is unbound from **Ava** (v3)."
    h = await fake.slash(
        world.studio_a, world.bob, "character bind", {"character": "Ava", "element": "jacket", "state": "on"}
    )
    await h.wait_settled()
    assert h.ephemeral and "belongs to" in h.content

    attachment = fake.upload(figure_png((10, 30, 30), (500, 500)), "jacket2.png", "image/png")
    h = await fake.slash(
        world.studio_a,
        world.alice,
        "character element add",
        {"character": "Ava", "name": "JACKET", "kind": "outfit", "image": attachment},
    )
    await h.wait_settled()
    assert "already has an element called **JACKET**" in h.content

    h = await fake.slash(world.studio_a, world.bob, "character show", {"character": "Ava"})
    await h.wait_settled()
    elements = {f["name"]: f["value"] for f in h.embeds[0]["fields"]}["Elements"]
    assert "**jacket** (outfit)" in elements

    h = await fake.slash(
        world.studio_a, world.alice, "character element remove", {"character": "Ava", "element": "jacket"}
    )
    await h.wait_settled()
    assert h.content == "Removed **jacket** from **Ava** (now v4)."


async def test_sheet_layout_and_reuse(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    await new_character(fake, world)
    await add_view(fake, world, "front", figure_png((40, 90, 200)))
    await add_view(fake, world, "side", figure_png((40, 160, 90)))

    h = await fake.slash(world.studio_a, world.bob, "sheet", {"character": "Ava"})
    await h.wait_settled(timeout=30)
    assert not h.ephemeral
    assert "**Ava** · character sheet v3" in h.content
    assert "three-quarter" in h.content.lower()  # the hint names the next view to add
    [(filename, data, _type)] = h.attachments
    assert filename == "ava-v3-sheet.png"
    sheet = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    assert sheet.shape == (1080, 1920, 3)
    assert (sheet[5, :] >= 250).all() and (sheet[:, 5] >= 250).all()  # flat white margins

    def slot_ink(index: int) -> float:
        """How much strong colour the index-th of the four view slots holds (front, 3/4, side, back)."""
        left, right = int(1920 * index / 4), int(1920 * (index + 1) / 4)
        band = sheet[300:950, left:right]
        return float(((band.max(axis=2) - band.min(axis=2)) > 60).mean())

    assert slot_ink(0) > 0.01 and slot_ink(2) > 0.01  # front and side hold the figures
    assert slot_ink(1) < 0.002 and slot_ink(3) < 0.002  # three-quarter and back are empty slots

    again = await fake.slash(world.studio_a, world.alice, "sheet", {"character": "Ava"})
    await again.wait_settled(timeout=30)
    assert again.attachments[0][1] == data  # same version: the stored sheet, not recomposed
    assert runner.bot is not None
    rows = await runner.bot.services.storage.db.fetchall("SELECT version FROM sheets")
    assert [r[0] for r in rows] == [3]


async def test_another_server_cannot_touch_the_references(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    await new_character(fake, world)
    await add_view(fake, world, "front", figure_png())
    attachment = fake.upload(figure_png(), "x.png", "image/png")
    h = await fake.slash(
        world.studio_b, world.zed, "character view add", {"character": "Ava", "view": "back", "image": attachment}
    )
    await h.wait_settled()
    assert h.ephemeral and "There is no character called **Ava**" in h.content
    h = await fake.slash(world.studio_b, world.zed, "sheet", {"character": "Ava"})
    await h.wait_settled()
    assert h.ephemeral and "There is no character called **Ava**" in h.content
    h = await fake.slash(world.studio_a, world.bob, "character view remove", {"character": "Ava", "view": "front"})
    await h.wait_settled()
    assert h.ephemeral and "belongs to" in h.content
    choices = await fake.autocomplete(
        world.studio_b, world.zed, "character element remove", {"character": "Ava", "element": ""}, focused="element"
    )
    assert choices == []
