"""Composed character sheets: checked on the pixels, not just that they render."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

import bot.library.sheets.compose
from bot.domain import Actor, ElementKind, StoredImage, View
from bot.imaging.sheet import (
    compose_sheet,
    ellipsize,
    font,
    next_view_hint,
    sheet_png,
    slot_sizes,
    strip_room,
    wrap,
)
from bot.library.sheets.compose import SheetService
from storage import Storage
from storage.references import NewElement

RED, BLUE, GREEN, ORANGE = (220, 20, 30), (20, 40, 210), (20, 170, 60), (240, 140, 0)
# The four view slots and the strip, at 1920x1080 (see the layout in compose_sheet).
VIEW_SLOTS = [(40 + i * 465, 204, 40 + i * 465 + 445, 724) for i in range(4)]
FACE_SLOT = (40, 790, 40 + 210, 1000)


def strip_tile(index: int) -> tuple[int, int, int, int]:
    return (40 + index * 230, 790, 250 + index * 230, 1000)


def cutout(colour: tuple[int, int, int], size: tuple[int, int] = (300, 700)) -> Image.Image:
    """A figure on a transparent background, like cleanup's cut-outs."""
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((20, 20, size[0] - 20, size[1] - 1), fill=(*colour, 255))
    return image


def colour_count(sheet: Image.Image, box: tuple[int, int, int, int], colour: tuple[int, int, int]) -> int:
    pixels = np.asarray(sheet.crop(box)).astype(int)
    return int((np.abs(pixels - np.array(colour)).max(axis=2) <= 12).sum())


def ink_count(sheet: Image.Image, box: tuple[int, int, int, int]) -> int:
    return int((np.asarray(sheet.crop(box)) < 200).any(axis=2).sum())


def full_views() -> dict[View, Image.Image | None]:
    return {View.FRONT: cutout(RED), View.THREE_QUARTER: cutout(BLUE), View.SIDE: None, View.BACK: cutout(GREEN)}


def test_sheet_is_16_9_on_white() -> None:
    sheet = compose_sheet("Aurora", "tall, red coat", full_views(), [])
    assert sheet.size == (1920, 1080)
    assert sheet.mode == "RGB"
    pixels = np.asarray(sheet)
    assert (pixels[:, :20] == 255).all() and (pixels[-20:] == 255).all()  # white margins
    assert (pixels == 255).all(axis=2).mean() > 0.5  # mostly white


def test_views_in_order_and_missing_view_is_an_empty_labelled_slot() -> None:
    sheet = compose_sheet("Aurora", "tall", full_views(), [])
    front, three_quarter, side, back = VIEW_SLOTS
    assert colour_count(sheet, front, RED) > 50_000
    assert colour_count(sheet, three_quarter, BLUE) > 50_000
    assert colour_count(sheet, back, GREEN) > 50_000
    for colour in (RED, BLUE, GREEN):
        assert colour_count(sheet, side, colour) == 0
    # The empty slot: a light outline and a hint in its middle, white elsewhere.
    left, top, right, bottom = side
    pixels = np.asarray(sheet).astype(int)
    outline = pixels[top, left : right + 1]
    assert ((outline > 150) & (outline < 240)).all(axis=1).sum() > 100  # dashes of light grey
    assert ink_count(sheet, (left + 60, (top + bottom) // 2 - 40, right - 60, (top + bottom) // 2 + 40)) > 200
    assert ink_count(sheet, (left + 20, top + 20, right - 20, top + 150)) == 0
    # Labels sit under every slot, the empty one included.
    for slot in VIEW_SLOTS:
        assert ink_count(sheet, (slot[0], 730, slot[2], 770)) > 100


def test_cutout_alpha_is_composited_on_white() -> None:
    sheet = compose_sheet("Aurora", "", full_views(), [])
    left, top, right, _bottom = VIEW_SLOTS[0]
    # The cut-out's transparent top margin shows white, not black.
    assert (np.asarray(sheet.crop((left, top, right, top + 10))) == 255).all()


def test_views_stand_on_a_common_floor() -> None:
    views: dict[View, Image.Image | None] = {View.FRONT: cutout(RED, (300, 700)), View.BACK: cutout(GREEN, (500, 600))}
    sheet = np.asarray(compose_sheet("A", "", views, []))

    def lowest(colour: tuple[int, int, int], slot: tuple[int, int, int, int]) -> int:
        left, top, right, bottom = slot
        rows = np.flatnonzero(
            (np.abs(sheet[top:bottom, left:right].astype(int) - colour).max(axis=2) <= 12).any(axis=1)
        )
        return int(rows[-1])

    assert abs(lowest(RED, VIEW_SLOTS[0]) - lowest(GREEN, VIEW_SLOTS[3])) <= 1


def test_face_and_elements_fill_the_strip() -> None:
    views = full_views() | {View.FACE: cutout(ORANGE, (400, 400))}
    elements = [
        ("Red coat", ElementKind.OUTFIT, cutout(RED, (400, 500))),
        ("Sword", ElementKind.PROP, Image.new("RGB", (600, 200), BLUE)),
    ]
    sheet = compose_sheet("Aurora", "tall", views, elements)
    assert colour_count(sheet, FACE_SLOT, ORANGE) > 10_000
    assert colour_count(sheet, strip_tile(1), RED) > 10_000
    assert colour_count(sheet, strip_tile(2), BLUE) > 5_000
    assert ink_count(sheet, (strip_tile(1)[0], 1005, strip_tile(1)[2], 1040)) > 50  # "Red coat · outfit"
    assert ink_count(sheet, (1000, 790, 1880, 1060)) == 0  # nothing after the last element


def test_missing_face_is_an_empty_slot_too() -> None:
    sheet = compose_sheet("Aurora", "", full_views(), [])
    left, top, right, bottom = FACE_SLOT
    assert ink_count(sheet, (left + 10, (top + bottom) // 2 - 30, right - 10, (top + bottom) // 2 + 30)) > 100


def test_too_many_elements_end_with_a_count() -> None:
    elements = [(f"Thing {i}", ElementKind.OTHER, cutout(BLUE, (200, 200))) for i in range(12)]
    sheet = compose_sheet("Aurora", "", full_views(), elements)
    assert sheet.size == (1920, 1080)
    assert ink_count(sheet, strip_tile(7)) > 50  # the last tile: "+6 more"
    assert colour_count(sheet, strip_tile(7), BLUE) == 0
    assert colour_count(sheet, strip_tile(6), BLUE) > 5_000


def test_long_name_and_traits_never_overflow() -> None:
    name = "Captain " + "Aurora " * 40
    traits = "a very long description of hair, eyes and outfit " * 30
    sheet = compose_sheet(name, traits, full_views(), [])
    pixels = np.asarray(sheet)
    assert (pixels[:, 1890:] == 255).all()  # nothing reaches the right margin
    assert (pixels[180:200, 40:1880] >= 200).all()  # the traits stop above the views


def test_wrap_and_ellipsize() -> None:
    face = font(20)
    lines = wrap("one two three four five six seven eight nine ten " * 10, face, 200, max_lines=2)
    assert len(lines) == 2
    assert lines[-1].endswith("…")
    assert all(face.getlength(line) <= 200 for line in lines)
    assert wrap("Supercalifragilisticexpialidocious", face, 60, max_lines=5)[0] != "Supercalifragilisticexpialidocious"
    assert ellipsize("short", face, 500) == "short"
    assert face.getlength(ellipsize("x" * 200, face, 100)) <= 100


def test_next_view_hint() -> None:
    assert next_view_hint({}) == (
        "Next, add a front view with `/character view add` (front): it is the main reference every provider starts from."
    )
    views = full_views()
    assert next_view_hint(views) == (
        "Next, add a face close-up with `/character view add` (face): a close-up keeps the face consistent in close shots."
    )
    views[View.FACE] = cutout(ORANGE)
    hint = next_view_hint(views)
    assert hint is not None and hint.startswith("Next, add a side view")
    views[View.SIDE] = cutout(ORANGE)
    assert next_view_hint(views) is None
    # The bare set of views a character has works too.
    assert next_view_hint({View.FRONT, View.THREE_QUARTER}) == next_view_hint(full_views())
    assert next_view_hint(set(View)) is None


def test_sheet_png_round_trips() -> None:
    sheet = compose_sheet("Aurora", "tall", full_views(), [])
    data = sheet_png(sheet)
    assert data.startswith(b"\x89PNG")
    decoded = Image.open(io.BytesIO(data))
    assert decoded.size == (1920, 1080)
    assert np.array_equal(np.asarray(decoded.convert("RGB")), np.asarray(sheet))


def test_other_sizes_scale_the_layout() -> None:
    sheet = compose_sheet("Aurora", "tall", full_views(), [], size=(1280, 720))
    assert sheet.size == (1280, 720)
    assert colour_count(sheet, (27, 136, 27 + 296, 483), RED) > 20_000


# ---------------------------------------------------------------------------------------------------- loading bounded


def test_slot_sizes_and_strip_room_follow_the_layout() -> None:
    assert slot_sizes() == ((445 - 16, 520 - 8), (210 - 12, 210 - 12))
    assert [strip_room(n) for n in (0, 3, 7, 8, 12, 63)] == [0, 3, 7, 6, 6, 6]
    big = (3840, 2160)
    assert slot_sizes(big) == ((2 * 429, 2 * 512), (2 * 198, 2 * 198)) and strip_room(63, big) == 6


def test_elements_past_the_strip_need_no_image() -> None:
    elements = [(f"Thing {i}", ElementKind.OTHER, cutout(BLUE, (200, 200))) for i in range(12)]
    unloaded = [
        (name, kind, image if index < strip_room(12) else None) for index, (name, kind, image) in enumerate(elements)
    ]
    assert compose_sheet("A", "", full_views(), elements).tobytes() == (
        compose_sheet("A", "", full_views(), unloaded).tobytes()
    )


def png_of(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


async def test_sheet_service_loads_thumbnails_of_the_slots_and_skips_hidden_elements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = await Storage.open(tmp_path / "db.sqlite3", tmp_path / "blobs")
    try:
        big = await storage.blobs.put(png_of(cutout(RED, (3000, 4000))))
        prop = await storage.blobs.put(png_of(cutout(BLUE, (2500, 2500))))
        image = StoredImage(original=big, cleaned=big, cutout=big)
        character = await storage.references.create_character_with(
            7,
            "Ava",
            "traits",
            1,
            views=[(View.FRONT, image), (View.FACE, image)],
            elements=[
                NewElement(f"prop {i}", ElementKind.PROP, StoredImage(original=prop, cleaned=prop, cutout=prop))
                for i in range(20)
            ],
        )
        drawn: dict[str, Any] = {}
        real = bot.library.sheets.compose.compose_sheet

        def spy(name: str, traits: str, views: Any, elements: Any, *args: Any) -> Image.Image:
            drawn.update({view.value: image.size for view, image in views.items() if image is not None})
            drawn.update({name: image.size if image else None for name, _kind, image in elements})
            return real(name, traits, views, elements, *args)

        monkeypatch.setattr(bot.library.sheets.compose, "compose_sheet", spy)
        result = await SheetService(storage).sheet(Actor(7, 1), character)
        assert Image.open(io.BytesIO(result.png)).size == (1920, 1080)
    finally:
        await storage.close()
    tile = slot_sizes()[1]
    assert drawn["front"] == (384, 512) and drawn["face"] == (148, 198)  # fitted to their slots, not 3000x4000
    shown = [name for name in drawn if name.startswith("prop") and drawn[name] is not None]
    assert len(shown) == strip_room(20) == 6 and all(drawn[name] == tile for name in shown)
    assert len([name for name in drawn if name.startswith("prop")]) == 20  # the others still count in "+N more"


def test_a_big_generated_sheet_is_split_at_2048_px() -> None:
    from bot.library.sheets.split import split_sheet

    sheet = Image.new("RGB", (4800, 2700), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for index, colour in enumerate((RED, BLUE, GREEN)):
        left = 400 + index * 1500
        draw.rectangle((left, 150, left + 900, 2550), fill=colour)
    figures = split_sheet(png_of(sheet))
    assert [f.view.value for f in figures] == ["front", "side", "three_quarter"]
    for figure in figures:  # decoded at 2048 x 1152: each figure ~384 x 1024 with its margin, not 900 x 2400
        assert max(figure.cutout.size) <= 1100 and figure.box[2] <= 2048
