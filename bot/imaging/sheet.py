"""Composed character sheets: 16:9 on flat white, views in a fixed order, face and elements in a strip."""

from __future__ import annotations

import io
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from bot.domain import ElementKind, View

SHEET_VIEWS = (View.FRONT, View.THREE_QUARTER, View.SIDE, View.BACK)
EMPTY_SLOT_HINT = ("add with", "/character view add")

_WHITE = (255, 255, 255)
_INK = (28, 28, 32)
_MUTED = (110, 110, 118)
_OUTLINE = (196, 196, 202)
_RULE = (228, 228, 232)

_FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"), Path("/usr/share/fonts/TTF"))
_FONT_FILES = {False: ("DejaVuSans.ttf", "LiberationSans-Regular.ttf"), True: ("DejaVuSans-Bold.ttf",)}

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@lru_cache(maxsize=64)
def font(size: int, bold: bool = False) -> Font:
    """A TrueType font from the system when there is one, else Pillow's bundled scalable default."""
    for directory in _FONT_DIRS:
        for name in _FONT_FILES[bold] + _FONT_FILES[False]:
            path = directory / name
            if path.is_file():
                return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)


def _text_width(text: str, face: Font) -> float:
    return face.getlength(text)


def ellipsize(text: str, face: Font, max_width: float) -> str:
    if _text_width(text, face) <= max_width:
        return text
    while text and _text_width(text.rstrip() + "…", face) > max_width:
        text = text[:-1]
    return text.rstrip() + "…" if text else ""


def wrap(text: str, face: Font, max_width: float, max_lines: int) -> list[str]:
    """Greedy word wrap within `max_width`; words too long for a line are cut; the last line is ellipsized."""
    lines: list[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and _text_width(candidate, face) <= max_width:
            lines[-1] = candidate
            continue
        rest = word
        while _text_width(rest, face) > max_width and len(rest) > 1:
            cut = len(rest)
            while cut > 1 and _text_width(rest[:cut], face) > max_width:
                cut -= 1
            lines.append(rest[:cut])
            rest = rest[cut:]
        lines.append(rest)
    if len(lines) > max_lines:
        kept = lines[:max_lines]
        kept[-1] = ellipsize(kept[-1] + " " + lines[max_lines], face, max_width)
        if not kept[-1].endswith("…"):
            kept[-1] = ellipsize(kept[-1] + "…", face, max_width)
        return kept
    return lines


def _fit_size(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    scale = min(box[0] / size[0], box[1] / size[1])
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _paste_fitted(
    sheet: Image.Image, image: Image.Image, box: tuple[int, int, int, int], *, bottom: bool = False
) -> None:
    """Scale to fit the box and paste on white (alpha respected), centred; feet on the floor when `bottom`."""
    left, top, right, lower = box
    width, height = _fit_size(image.size, (right - left, lower - top))
    fitted = image.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=2.0)
    x = left + (right - left - width) // 2
    y = lower - height if bottom else top + (lower - top - height) // 2
    if fitted.mode == "RGBA":
        sheet.paste(fitted, (x, y), fitted)
    else:
        sheet.paste(fitted.convert("RGB"), (x, y))


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], dash: int, gap: int) -> None:
    left, top, right, bottom = box
    step = dash + gap
    for x in range(left, right, step):
        end = min(x + dash, right)
        draw.line([(x, top), (end, top)], fill=_OUTLINE, width=2)
        draw.line([(x, bottom), (end, bottom)], fill=_OUTLINE, width=2)
    for y in range(top, bottom, step):
        end = min(y + dash, bottom)
        draw.line([(left, y), (left, end)], fill=_OUTLINE, width=2)
        draw.line([(right, y), (right, end)], fill=_OUTLINE, width=2)


def _empty_slot(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], face: Font) -> None:
    _dashed_rectangle(draw, box, dash=14, gap=10)
    left, top, right, bottom = box
    centre_x, centre_y = (left + right) / 2, (top + bottom) / 2
    size = face.size if isinstance(face, ImageFont.FreeTypeFont) else 16
    for offset, line in zip((-0.7, 0.7), EMPTY_SLOT_HINT, strict=True):
        text = ellipsize(line, face, right - left - 16)
        draw.text((centre_x, centre_y + offset * size), text, fill=_MUTED, font=face, anchor="mm")


def _label(draw: ImageDraw.ImageDraw, text: str, *, centre_x: float, top: int, width: int, face: Font) -> None:
    draw.text((centre_x, top), ellipsize(text, face, width - 8), fill=_INK, font=face, anchor="ma")


SHEET_SIZE = (1920, 1080)


@dataclass(frozen=True)
class _Layout:
    """Where things go on a sheet of a given size, designed at 1920x1080 (`u` scales a 1080p length): the one
    place `compose_sheet` draws by and `slot_sizes` / `strip_room` read, so loading never drifts from drawing."""

    u: Callable[[float], int]
    margin: int
    gap: int
    inner: int  # the width between the margins
    views_top: int
    views_bottom: int
    slot_width: int  # each of the four body views
    strip_top: int
    strip_bottom: int
    tile: int  # a strip tile's side (the face, each element, "+N more")
    per_row: int  # strip tiles that fit

    @property
    def view_image(self) -> tuple[int, int]:
        """The largest a body view is drawn: its slot less the padding."""
        return self.slot_width - 2 * self.u(8), self.views_bottom - self.views_top - self.u(8)

    @property
    def tile_image(self) -> tuple[int, int]:
        side = self.tile - 2 * self.u(6)
        return side, side


@lru_cache(maxsize=8)
def _layout(size: tuple[int, int]) -> _Layout:
    width, height = size
    unit = min(width / 1920, height / 1080)

    def u(value: float) -> int:
        return round(value * unit)

    margin, gap = u(40), u(20)
    inner = width - 2 * margin
    strip_top, strip_bottom = u(790), height - u(80)
    tile = strip_bottom - strip_top
    return _Layout(
        u=u,
        margin=margin,
        gap=gap,
        inner=inner,
        views_top=u(204),
        views_bottom=u(724),
        slot_width=(inner - 3 * gap) // 4,
        strip_top=strip_top,
        strip_bottom=strip_bottom,
        tile=tile,
        per_row=max(1, (inner + gap) // (tile + gap)),
    )


def slot_sizes(size: tuple[int, int] = SHEET_SIZE) -> tuple[tuple[int, int], tuple[int, int]]:
    """The largest an image is drawn on a sheet: (a body view's slot, a strip tile), so images can be loaded
    as thumbnails of that size instead of whole."""
    layout = _layout(size)
    return layout.view_image, layout.tile_image


def strip_room(element_count: int, size: tuple[int, int] = SHEET_SIZE) -> int:
    """How many elements the strip shows (after the face), the rest being counted in its "+N more" tile."""
    per_row = _layout(size).per_row
    return element_count if 1 + element_count <= per_row else max(0, per_row - 2)


def compose_sheet(
    name: str,
    traits: str,
    views: Mapping[View, Image.Image | None],
    elements: Sequence[tuple[str, ElementKind, Image.Image | None]],
    size: tuple[int, int] = SHEET_SIZE,
) -> Image.Image:
    """The character sheet: name and traits on top, the four body views, then the face and elements strip.

    Only the first `strip_room(len(elements))` element images are drawn: the others may be None (not loaded)."""
    width = size[0]
    layout = _layout(size)
    u, margin, gap, inner = layout.u, layout.margin, layout.gap, layout.inner

    sheet = Image.new("RGB", size, _WHITE)
    draw = ImageDraw.Draw(sheet)

    # Header: the name large, the traits wrapped (then ellipsized) below it.
    name_font, traits_font = font(u(60), bold=True), font(u(26))
    draw.text((margin, u(26)), ellipsize(name, name_font, inner), fill=_INK, font=name_font)
    for index, line in enumerate(wrap(traits, traits_font, inner, max_lines=2)):
        draw.text((margin, u(104) + index * u(34)), line, fill=_MUTED, font=traits_font)
    draw.line([(margin, u(184)), (width - margin, u(184))], fill=_RULE, width=max(1, u(2)))

    # The four body views, same slot size, feet on a common floor.
    label_font, hint_font = font(u(26), bold=True), font(u(22))
    views_top, views_bottom, slot_width = layout.views_top, layout.views_bottom, layout.slot_width
    for index, view in enumerate(SHEET_VIEWS):
        left = margin + index * (slot_width + gap)
        box = (left, views_top, left + slot_width, views_bottom)
        image = views.get(view)
        if image is None:
            _empty_slot(draw, box, hint_font)
        else:
            _paste_fitted(
                sheet, image, (left + u(8), views_top + u(8), left + slot_width - u(8), views_bottom), bottom=True
            )
        _label(
            draw,
            view.label,
            centre_x=left + slot_width / 2,
            top=views_bottom + u(10),
            width=slot_width,
            face=label_font,
        )

    # The strip: the face close-up first, then the elements (as many as fit, then "+N more").
    strip_top, strip_bottom, tile, per_row = layout.strip_top, layout.strip_bottom, layout.tile, layout.per_row
    small_font, strip_hint_font = font(u(20)), font(u(17))
    tiles: list[tuple[str, Image.Image | None]] = [(View.FACE.label, views.get(View.FACE))]
    tiles += [(f"{element_name} · {kind.value}", image) for element_name, kind, image in elements]
    hidden = max(0, len(tiles) - per_row)
    for index, (caption, image) in enumerate(tiles[:per_row]):
        left = margin + index * (tile + gap)
        box = (left, strip_top, left + tile, strip_bottom)
        if index == per_row - 1 and hidden:
            _dashed_rectangle(draw, box, dash=10, gap=8)
            more = f"+{hidden + 1} more"
            draw.text(
                (left + tile / 2, (strip_top + strip_bottom) / 2), more, fill=_MUTED, font=label_font, anchor="mm"
            )
            continue
        if image is None:
            _empty_slot(draw, box, strip_hint_font)
        else:
            _paste_fitted(sheet, image, (left + u(6), strip_top + u(6), left + tile - u(6), strip_bottom - u(6)))
        _label(draw, caption, centre_x=left + tile / 2, top=strip_bottom + u(10), width=tile + gap, face=small_font)
    return sheet


LINEUP_MAX = 6  # characters on one lineup
LINEUP_MAX_WIDTH = 4096
_LINEUP_HEIGHT = 1080  # the image's height; its width grows with the cast (at least 16:9, at most the maximum)
_LINEUP_MIN_WIDTH = 1920


def _trimmed(image: Image.Image) -> Image.Image:
    """The cut-out as RGBA without its transparent margins (a wholly transparent or opaque one stays whole)."""
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    box = rgba.getchannel("A").getbbox()
    return rgba.crop(box) if box else rgba


def lineup(characters: Sequence[tuple[str, Image.Image]]) -> Image.Image:
    """Several characters side by side on white, feet on one floor, each with its name under it.

    One scale for everyone: the same pixel height per character height (each cut-out's height, after trimming
    its transparent margins, is taken as its character's height; the caller sizes them), the tallest filling the
    figure area. The image is 1080 px high and as wide as the row needs, at least 1920 and at most 4096 px (a row
    too wide is scaled down as a whole). Refuses an empty list and more than six characters (ValueError).
    """
    if not characters:
        raise ValueError("a lineup needs at least one character")
    if len(characters) > LINEUP_MAX:
        raise ValueError(f"a lineup holds at most {LINEUP_MAX} characters, not {len(characters)}")
    figures = [_trimmed(image) for _name, image in characters]
    margin, gap, top = 60, 48, 60
    floor = _LINEUP_HEIGHT - 150  # the names go under it
    min_slot = 240  # room for a name under a narrow figure
    scale = (floor - top) / max(figure.height for figure in figures)

    def slots(at: float) -> list[int]:
        return [max(min_slot, round(figure.width * at)) for figure in figures]

    def row_width(at: float) -> int:
        return sum(slots(at)) + gap * (len(figures) - 1)

    room = LINEUP_MAX_WIDTH - 2 * margin
    if row_width(scale) > room:  # too wide: shrink every figure alike (the name slots keep their minimum)
        fixed = gap * (len(figures) - 1) + sum(min_slot for figure in figures if figure.width * scale <= min_slot)
        scalable = sum(figure.width for figure in figures if figure.width * scale > min_slot)
        scale = min(scale, (room - fixed) / scalable) if scalable else scale
        while row_width(scale) > room:  # rounding and figures newly under the minimum
            scale *= 0.99
    width = min(LINEUP_MAX_WIDTH, max(_LINEUP_MIN_WIDTH, row_width(scale) + 2 * margin))
    sheet = Image.new("RGB", (width, _LINEUP_HEIGHT), _WHITE)
    draw = ImageDraw.Draw(sheet)
    name_font = font(40, bold=True)
    x = (width - row_width(scale)) / 2
    for (name, _image), figure, slot in zip(characters, figures, slots(scale), strict=True):
        size = (max(1, round(figure.width * scale)), max(1, round(figure.height * scale)))
        scaled = figure.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
        sheet.paste(scaled, (round(x + (slot - size[0]) / 2), floor - size[1]), scaled)
        _label(draw, name, centre_x=x + slot / 2, top=floor + 30, width=slot + gap, face=name_font)
        x += slot + gap
    return sheet


_NEXT_VIEW = (
    (View.FRONT, "it is the main reference every provider starts from"),
    (View.THREE_QUARTER, "it shows the face and body in depth"),
    (View.FACE, "a close-up keeps the face consistent in close shots"),
    (View.SIDE, "it fixes the profile: nose, hair and silhouette"),
    (View.BACK, "it shows the hair and outfit from behind"),
)


def next_view_hint(views: Mapping[View, Image.Image | None] | Collection[View]) -> str | None:
    """Which view to add next and why, or None when every view is there.

    `views` is either the sheet's mapping (a None image means missing) or just the views that exist.
    """
    present = {view for view, image in views.items() if image is not None} if isinstance(views, Mapping) else set(views)
    for view, reason in _NEXT_VIEW:
        if view not in present:
            noun = "face close-up" if view is View.FACE else f"{view.label.lower()} view"
            return f"Next, add a {noun} with `/character view add` ({view.value}): {reason}."
    return None


def sheet_png(image: Image.Image) -> bytes:
    """PNG bytes, quick to make: mostly-white sheets compress well at a low zlib level."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=3)
    return buffer.getvalue()
