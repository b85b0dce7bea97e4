"""Portable character cards: one zip with `card.json` and the character's images, byte for byte.

```
card.json                 {"format": "likeness-character", "format_version": 1, "name", "description",
                           "views": [{"view", "original", "cleaned", "cutout"}],
                           "elements": [{"name", "kind", "bound", "original", "cleaned", "cutout"}]}
images/<sha256>.<ext>     the stored blobs exactly (the blob store is content-addressed by the same sha256)
```

The format (`build_card`, `parse_card`) is pure: bytes in, bytes or a parsed card out, no I/O. `parse_card`
treats the zip as hostile (an import comes from anyone) and is blocking: run it in a thread. A built card is
deterministic (fixed timestamps, fixed order), so exporting an imported character gives the same bytes.

The service behind /character export and /character import (the library's rules, downloads, the database) is
`bot.library.cards`.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.domain import Element, ElementKind, ReferenceView, View
from bot.domain.errors import UserFacingError
from bot.imaging.intake import IntakeLimits, decode, kept_bytes, sniff_format

FORMAT = "likeness-character"
FORMAT_VERSION = 1
CARD_FILE = "card.json"
SUFFIX = ".likeness.zip"
MAX_ENTRIES = 64
MAX_RATIO = 100  # uncompressed / compressed, per entry: images are stored as they are, JSON barely compresses
MAX_CARD_JSON = 256 * 1024
_MAX_NUMBER = 1_000_000  # no number in a card is larger (format_version is 1)
_RATIO_FLOOR = 64 * 1024  # tiny entries may compress well without being bombs
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "WEBP": "webp", "AVIF": "avif"}
_IMAGE_PATH = re.compile(r"^images/([0-9a-f]{64})\.(png|jpg|gif|webp|avif)$")
_ZIP_CONTENT_TYPES = frozenset({"application/zip", "application/x-zip-compressed", "application/octet-stream"})
_NOT_A_CARD = (
    "This file isn't a Likeness character card. A card is the `.likeness.zip` file that `/character export` makes."
)


class CardRefusedError(UserFacingError):
    """A card we will not import; the message says why."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CardView(_Model):
    """A reference view and where its three images are inside the zip (`images/<sha256>.<ext>`)."""

    view: View
    original: str
    cleaned: str | None = None
    cutout: str | None = None


class CardElement(_Model):
    name: str = Field(max_length=100)
    kind: ElementKind
    bound: bool = True
    original: str
    cleaned: str | None = None
    cutout: str | None = None


def _paths(reference: CardView | CardElement) -> list[str]:
    return [p for p in (reference.original, reference.cleaned, reference.cutout) if p is not None]


class Card(_Model):
    format: Literal["likeness-character"]
    format_version: Literal[1]
    name: str = Field(max_length=200)
    description: str = Field(max_length=10_000)
    views: list[CardView] = Field(default=[], max_length=len(View))
    elements: list[CardElement] = Field(default=[], max_length=MAX_ENTRIES)


@dataclass(frozen=True)
class CardLimits:
    """What an imported card may be: its download size, entries, unpacked size and ratio, and its images."""

    image: IntakeLimits
    max_bytes: int  # the zip itself (and what it may unpack to: images are stored, not compressed)
    max_entries: int = MAX_ENTRIES
    max_ratio: int = MAX_RATIO

    @classmethod
    def for_images(cls, image: IntakeLimits) -> CardLimits:
        """A card holds several images: it may be 4x the upload limit of one."""
        return cls(image=image, max_bytes=4 * image.max_bytes)


@dataclass(frozen=True)
class ParsedCard:
    card: Card
    images: dict[str, bytes]  # zip path -> bytes to store, every image card.json names, checked (and scaled down)


def megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f}".removesuffix(".0")


# ---------------------------------------------------------------------------------------------------- build


def image_path(digest: str, data: bytes) -> str:
    """Where a blob goes in the zip: its sha256 and the extension of its real format."""
    return f"images/{digest}.{_EXTENSIONS.get(sniff_format(data[:64]) or '', 'bin')}"


def build_card(
    name: str,
    description: str,
    views: Sequence[ReferenceView],
    elements: Sequence[Element],
    blobs: Mapping[str, bytes],
) -> bytes:
    """The zip of a character: `blobs` maps every digest the views and elements use to its bytes. Blocking."""

    def located(digest: str | None) -> str | None:
        return None if digest is None else image_path(digest, blobs[digest])

    order = list(View)
    card = Card(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        name=name,
        description=description,
        views=[
            CardView(
                view=v.view,
                original=image_path(v.original_blob, blobs[v.original_blob]),
                cleaned=located(v.cleaned_blob),
                cutout=located(v.cutout_blob),
            )
            for v in sorted(views, key=lambda v: order.index(v.view))
        ],
        elements=[
            CardElement(
                name=e.name,
                kind=e.kind,
                bound=e.bound,
                original=image_path(e.original_blob, blobs[e.original_blob]),
                cleaned=located(e.cleaned_blob),
                cutout=located(e.cutout_blob),
            )
            for e in sorted(elements, key=lambda e: e.name.casefold())
        ],
    )
    files: dict[str, bytes] = {}
    for reference in [*card.views, *card.elements]:
        for file in _paths(reference):
            files[file] = blobs[PurePosixPath(file).stem]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        card_json = json.dumps(card.model_dump(mode="json"), indent=2, ensure_ascii=False).encode()
        archive.writestr(_entry(CARD_FILE, zipfile.ZIP_DEFLATED), card_json)
        for path in sorted(files):
            archive.writestr(_entry(path, zipfile.ZIP_STORED), files[path])  # already compressed images
    return buffer.getvalue()


def _entry(name: str, compression: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
    info.compress_type = compression
    info.external_attr = 0o644 << 16
    return info


# ---------------------------------------------------------------------------------------------------- parse


def check_declared_card(filename: str, size: int, content_type: str | None, limits: CardLimits) -> None:
    """Refuse an attachment from what Discord declares about it, before downloading a byte."""
    if size > limits.max_bytes:
        raise CardRefusedError(
            f"This file is {megabytes(size)} MB, over the {megabytes(limits.max_bytes)} MB limit for character cards."
        )
    if size <= 0:
        raise CardRefusedError(f"`{filename}` is empty. Please upload the card again.")
    base_type = (content_type or "").split(";", 1)[0].strip().lower()
    if not filename.lower().endswith(".zip") or (base_type and base_type not in _ZIP_CONTENT_TYPES):
        raise CardRefusedError(_NOT_A_CARD)


def _unsafe(name: str) -> bool:
    path = PurePosixPath(name)
    return (
        "\\" in name
        or "\x00" in name
        or name.startswith("/")
        or re.match(r"^[A-Za-z]:", name) is not None
        or any(part in ("..", ".") for part in name.split("/"))
        or path.is_absolute()
    )


def parse_card(data: bytes, limits: CardLimits) -> ParsedCard:
    """Open an untrusted card, or refuse it with a message for the member. Blocking: run it in a thread.

    Checked, in order: a zip at all, its size, the entry count, every entry's name (no traversal, only
    card.json and images/<sha256>.<ext>), no encryption, unpacked total and ratio (bombs), card.json against
    the model, every named image present, its sha256 matching its name, and it decoding within the pixel limits.
    An image larger than the bot needs (`IntakeLimits.max_side`) is kept scaled down, as an upload would be.
    """
    if len(data) > limits.max_bytes:
        raise CardRefusedError(f"This card is over the {megabytes(limits.max_bytes)} MB limit for character cards.")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError):
        raise CardRefusedError(_NOT_A_CARD) from None
    with archive:
        entries = _checked_entries(archive, limits)
        if CARD_FILE not in entries:
            raise CardRefusedError(f"This zip has no `{CARD_FILE}`. {_NOT_A_CARD}")
        card = _parse_json(_read(archive, entries[CARD_FILE]))
        images: dict[str, bytes] = {}
        for reference in [*card.views, *card.elements]:
            for path in _paths(reference):
                if path in images:
                    continue
                match = _IMAGE_PATH.match(path)
                if match is None or path not in entries:
                    raise CardRefusedError(f"This card's {CARD_FILE} names `{path[:80]}`, which isn't in the zip.")
                content = _read(archive, entries[path])
                if hashlib.sha256(content).hexdigest() != match.group(1):
                    raise CardRefusedError(
                        f"The image `{path}` doesn't match its checksum: the card was changed or damaged, "
                        "so I won't import it. Export the character again."
                    )
                images[path] = _checked_image(path, content, limits)
    return ParsedCard(card, images)


def _checked_entries(archive: zipfile.ZipFile, limits: CardLimits) -> dict[str, zipfile.ZipInfo]:
    infos = archive.infolist()
    if len(infos) > limits.max_entries:
        raise CardRefusedError(
            f"This card holds {len(infos)} files; a character card has at most {limits.max_entries} "
            f"({CARD_FILE} and its images). It can't be imported."
        )
    entries: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = info.filename
        if _unsafe(name):
            raise CardRefusedError(
                f"This card contains a file with an unsafe path (`{name[:80]}`), so I won't open it."
            )
        if info.is_dir():
            continue
        if name != CARD_FILE and not _IMAGE_PATH.match(name):
            raise CardRefusedError(
                f"This card contains an unexpected file (`{name[:80]}`): a card holds only {CARD_FILE} and images."
            )
        if name in entries:
            raise CardRefusedError(f"This card contains `{name[:80]}` twice, so I won't open it.")
        if info.flag_bits & 0x1:
            raise CardRefusedError("This card is password-protected; export the character again without a password.")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CardRefusedError("This card uses a compression I don't read. Export the character again.")
        total += info.file_size
        if total > limits.max_bytes:
            raise CardRefusedError(
                f"This card would unpack to more than {megabytes(limits.max_bytes)} MB, so I won't open it "
                "(it may be a zip bomb)."
            )
        if info.file_size > _RATIO_FLOOR and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise CardRefusedError(
                f"`{name[:80]}` in this card is packed {info.file_size // max(info.compress_size, 1):,} times "
                "smaller than it unpacks to, so I won't open it (it looks like a zip bomb)."
            )
        entries[name] = info
    return entries


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """An entry's bytes; zipfile stops at the declared size and checks the CRC, so a lying header fails here."""
    try:
        with archive.open(info) as handle:
            return handle.read(info.file_size + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
        raise CardRefusedError(f"`{info.filename[:80]}` in this card is damaged. Export the character again.") from exc


def _absurd_number(literal: str) -> CardRefusedError:
    shown = literal if len(literal) <= 24 else f"{literal[:12]}…({len(literal):,} characters)"
    return CardRefusedError(
        f"The {CARD_FILE} of this card holds the number `{shown}`, which no character card has "
        f"(numbers in a card are small: at most {_MAX_NUMBER:,}). It may not come from `/character export`."
    )


def _card_int(literal: str) -> int:
    """json's parse_int: a card's numbers are small; a huge one is refused before Python converts it (a
    5000-digit integer would raise a bare ValueError past the int-string limit)."""
    if len(literal.lstrip("-")) > len(str(_MAX_NUMBER)) or abs(number := int(literal)) > _MAX_NUMBER:
        raise _absurd_number(literal)
    return number


def _card_float(literal: str) -> float:
    """json's parse_float: a number too large for a float (1e999) would quietly become infinity."""
    number = float(literal)
    if len(literal) > 32 or not math.isfinite(number) or abs(number) > _MAX_NUMBER:
        raise _absurd_number(literal)
    return number


def _card_constant(literal: str) -> float:
    """json's parse_constant: NaN, Infinity and -Infinity are not JSON, though Python's json reads them."""
    raise CardRefusedError(
        f"The {CARD_FILE} of this card holds `{literal}`, which isn't a number (nor valid JSON). "
        "It may not come from `/character export`."
    )


def _parse_json(raw: bytes) -> Card:
    if len(raw) > MAX_CARD_JSON:
        raise CardRefusedError(f"The {CARD_FILE} of this card is too large to be a character card.")
    try:
        document = json.loads(
            raw.decode("utf-8"), parse_int=_card_int, parse_float=_card_float, parse_constant=_card_constant
        )
    except (ValueError, RecursionError):  # bad UTF-8, bad JSON, too deep (absurd numbers: the hooks say so)
        raise CardRefusedError(f"The {CARD_FILE} of this card isn't valid JSON. Export the character again.") from None
    try:  # a "\ud800" escape reads as half a character, which could be neither stored nor shown
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise CardRefusedError(
            f"The {CARD_FILE} of this card holds a broken character (half of a UTF-16 pair, like `\\ud800`). "
            "It may not come from `/character export`."
        ) from None
    if isinstance(document, dict) and document.get("format") == FORMAT:
        version = document.get("format_version")
        if isinstance(version, int) and FORMAT_VERSION < version <= _MAX_NUMBER:
            raise CardRefusedError(
                f"This card was made by a newer Likeness (card format {version}); this bot reads format "
                f"{FORMAT_VERSION}. Ask the bot's host to update it."
            )
    try:
        card = Card.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the card"
        raise CardRefusedError(
            f"The {CARD_FILE} of this card is not valid ({where}: {first['msg']}). "
            "It may not come from `/character export`."
        ) from None
    if len({v.view for v in card.views}) != len(card.views):
        raise CardRefusedError(f"The {CARD_FILE} of this card lists the same view twice.")
    if len({e.name.strip().casefold() for e in card.elements}) != len(card.elements):
        raise CardRefusedError(f"The {CARD_FILE} of this card lists the same element twice.")
    return card


def _checked_image(path: str, content: bytes, limits: CardLimits) -> bytes:
    """The intake's decode (format, damage, pixel limits; a cut-out may be smaller than an upload may), and the
    bytes to store: the image as it is, or scaled down (as PNG, or JPEG for a JPEG) when it is larger than needed."""
    try:
        decoded = decode(content, replace(limits.image, min_side=1))
    except UserFacingError as exc:
        raise CardRefusedError(f"`{path}` in this card: {exc}") from None
    if _EXTENSIONS[decoded.source_format] != PurePosixPath(path).suffix[1:]:
        raise CardRefusedError(
            f"`{path}` in this card is not the image type its name says. Export the character again."
        )
    return kept_bytes(content, decoded)
