"""The lineup image (`/sheet lineup`): characters side by side at one scale, each named, on white."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bot.imaging.sheet import LINEUP_MAX_WIDTH, lineup
from tests.support.figures import BLUE, GREEN, RED, figure


def mask(image: Image.Image, colour: tuple[int, int, int]) -> np.ndarray:
    pixels = np.asarray(image.convert("RGB")).astype(int)
    return np.abs(pixels - np.array(colour)).max(axis=2) < 30


def extent(image: Image.Image, colour: tuple[int, int, int]) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the pixels of `colour`."""
    ys, xs = np.nonzero(mask(image, colour))
    assert len(xs), f"no {colour} pixels"
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def test_two_characters_side_by_side_on_white_each_named() -> None:
    sheet = lineup([("Aurora", figure(RED)), ("Bram", figure(BLUE))])
    assert sheet.mode == "RGB" and sheet.height == 1080 and 1920 <= sheet.width <= LINEUP_MAX_WIDTH
    assert sheet.getpixel((5, 5)) == (255, 255, 255)
    red, blue = extent(sheet, RED), extent(sheet, BLUE)
    assert red[2] < blue[0], "in the given order, left to right"
    assert red[3] - red[1] == blue[3] - blue[1], "equal cut-outs come out at equal height"
    # Each name is drawn in ink under its own figure: compared with the same lineup without names.
    unnamed = lineup([("", figure(RED)), ("", figure(BLUE))])
    drawn = np.asarray(unnamed.convert("L")) < 250
    feet = int(np.nonzero(drawn.any(axis=1))[0].max())
    assert feet > red[3], "the legs are under the body"
    ink = np.asarray(sheet.convert("L")) < 120
    assert ink[: feet + 1].sum() == (np.asarray(unnamed.convert("L"))[: feet + 1] < 120).sum()
    for left, _top, right, _bottom in (red, blue):
        assert ink[feet + 1 :, left:right].sum() > 100


def test_one_scale_for_everyone_the_tallest_fits() -> None:
    cast = [("", figure(RED, height=600)), ("", figure(GREEN, height=300)), ("", figure(BLUE, height=450))]
    sheet = lineup(cast)
    red, green, blue = (extent(sheet, colour) for colour in (RED, GREEN, BLUE))
    assert red[1] > 0 and red[3] < sheet.height
    # the bodies are equally wide on the cut-outs, so they are drawn equally wide at one scale
    assert abs((red[2] - red[0]) - (green[2] - green[0])) <= 2
    assert abs((red[2] - red[0]) - (blue[2] - blue[0])) <= 2
    # feet on one floor, and drawn heights in proportion to the cut-outs' (600 : 300 : 450 px plus the head)
    drawn = np.asarray(sheet.convert("L")) < 250
    spans = []
    for left, _top, right, _bottom in (red, green, blue):
        rows = np.nonzero(drawn[:, left:right].any(axis=1))[0]
        spans.append((int(rows.min()), int(rows.max())))
    assert len({bottom for _top, bottom in spans}) == 1
    heights = [bottom - top + 1 for top, bottom in spans]
    assert heights[0] > 700, "the tallest fills the figure area"
    assert heights[1] / heights[0] == pytest.approx(300 / 600, abs=0.01)
    assert heights[2] / heights[0] == pytest.approx(450 / 600, abs=0.01)


def test_transparent_margins_do_not_count_as_height() -> None:
    plain = figure(RED)
    padded = Image.new("RGBA", (plain.width + 400, plain.height + 500), (0, 0, 0, 0))
    padded.paste(figure(BLUE), (200, 100))
    sheet = lineup([("A", plain), ("B", padded)])
    red, blue = extent(sheet, RED), extent(sheet, BLUE)
    assert red[3] - red[1] == blue[3] - blue[1] and red[3] == blue[3]


def test_six_wide_characters_stay_within_the_width_bound() -> None:
    wide = [(f"Character {index}", figure(RED, width=700, height=800)) for index in range(6)]
    sheet = lineup(wide)
    assert sheet.width <= LINEUP_MAX_WIDTH
    alone = extent(lineup(wide[:1]), RED)
    red = extent(sheet, RED)
    assert red[3] - red[1] < 0.85 * (alone[3] - alone[1]), "shrunk as a whole to fit the width"
    columns: np.ndarray = np.asarray(mask(sheet, RED).any(axis=0))
    starts = int(np.count_nonzero(columns[1:] & ~columns[:-1])) + int(columns[0])
    assert starts == 6, "all six drawn, none overlapping"


def test_opaque_and_greyscale_images_are_accepted() -> None:
    flat = Image.new("RGB", (200, 400), BLUE)
    sheet = lineup([("Flat", flat), ("Grey", Image.new("L", (200, 400), 40))])
    assert extent(sheet, BLUE)[3] - extent(sheet, BLUE)[1] > 700


@pytest.mark.parametrize("count", [0, 7])
def test_refuses_an_empty_or_too_large_cast(count: int) -> None:
    with pytest.raises(ValueError, match=r"at least one|at most 6"):
        lineup([(f"C{index}", figure(RED)) for index in range(count)])
