"""Portable character cards: the format round trip, and every way a hostile zip is refused."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime
from typing import Any

import pytest
from PIL import Image

from bot.domain import Element, ElementKind, ReferenceView, View
from bot.imaging.intake import IntakeLimits
from bot.library.card_format import (
    CARD_FILE,
    CardLimits,
    CardRefusedError,
    build_card,
    check_declared_card,
    image_path,
    parse_card,
)
from bot.library.cards import card_filename
from tests.support import imaging_corpus as corpus
from tests.support.cards import sha, zip_of

LIMITS = CardLimits.for_images(IntakeLimits(max_bytes=20 * 1024 * 1024))
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def png(colour: tuple[int, ...], size: tuple[int, int] = (40, 60), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def card_json(**overrides: Any) -> bytes:
    document: dict[str, Any] = {
        "format": "likeness-character",
        "format_version": 1,
        "name": "Ava",
        "description": "28, silver hair",
        "views": [],
        "elements": [],
    }
    document.update(overrides)
    return json.dumps(document).encode()


def one_image_card(data: bytes, path: str | None = None) -> bytes:
    """A card with one front view whose original is `data` (stored under `path`, else its real name)."""
    path = path or image_path(sha(data), data)
    return zip_of({CARD_FILE: card_json(views=[{"view": "front", "original": path}]), path: data})


def refusal(data: bytes, limits: CardLimits = LIMITS) -> str:
    with pytest.raises(CardRefusedError) as caught:
        parse_card(data, limits)
    return str(caught.value)


# ---------------------------------------------------------------------------------------------------- round trip


def test_build_then_parse_round_trip_keeps_every_byte() -> None:
    original, cleaned, cutout = png((200, 10, 10)), png((255, 255, 255)), png((1, 2, 3, 0), mode="RGBA")
    jpeg = corpus.photo_jpeg((320, 240))
    blobs = {sha(b): b for b in (original, cleaned, cutout, jpeg)}
    views = [
        ReferenceView(
            id=2,
            character_id=1,
            view=View.SIDE,
            original_blob=sha(jpeg),
            cleaned_blob=sha(cleaned),
            cutout_blob=sha(cutout),
            uploaded_by=5,
            created_at=NOW,
        ),
        ReferenceView(
            id=1,
            character_id=1,
            view=View.FRONT,
            original_blob=sha(original),
            cleaned_blob=sha(cleaned),
            cutout_blob=None,
            uploaded_by=5,
            created_at=NOW,
        ),
    ]
    elements = [
        Element(
            id=1,
            character_id=1,
            name="jacket",
            kind=ElementKind.OUTFIT,
            original_blob=sha(original),
            cleaned_blob=sha(cleaned),
            cutout_blob=sha(cutout),
            bound=False,
            created_at=NOW,
        )
    ]
    data = build_card("Ava Prime", "28, silver hair", views, elements, blobs)
    assert build_card("Ava Prime", "28, silver hair", views, elements, blobs) == data  # deterministic

    parsed = parse_card(data, LIMITS)
    card = parsed.card
    assert (card.name, card.description, card.format_version) == ("Ava Prime", "28, silver hair", 1)
    assert [v.view for v in card.views] == [View.FRONT, View.SIDE]  # the views' own order
    front, side = card.views
    assert front.original == f"images/{sha(original)}.png" and front.cutout is None
    assert side.original == f"images/{sha(jpeg)}.jpg"
    [jacket] = card.elements
    assert (jacket.name, jacket.kind, jacket.bound) == ("jacket", ElementKind.OUTFIT, False)
    assert {path: sha(content) for path, content in parsed.images.items()} == {
        image_path(digest, content): digest for digest, content in blobs.items()
    }
    for path, content in parsed.images.items():
        assert blobs[path.removeprefix("images/").split(".")[0]] == content  # byte-identical
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist()[0] == CARD_FILE
        assert json.loads(archive.read(CARD_FILE))["format"] == "likeness-character"


def test_card_file_names() -> None:
    assert card_filename("Ava") == "Ava.likeness.zip"
    assert card_filename("Ava Prime") == "Ava_Prime.likeness.zip"
    assert card_filename("...") == "character.likeness.zip"


# ---------------------------------------------------------------------------------------------------- refusals


def test_declared_size_and_type_are_checked_before_download() -> None:
    with pytest.raises(CardRefusedError, match="over the 80 MB limit for character cards"):
        check_declared_card("ava.likeness.zip", 81 * 1024 * 1024, "application/zip", LIMITS)
    with pytest.raises(CardRefusedError, match="isn't a Likeness character card"):
        check_declared_card("ava.png", 1000, "image/png", LIMITS)
    check_declared_card("Ava.likeness.zip", 1000, "application/zip", LIMITS)


def test_not_a_zip() -> None:
    assert "isn't a Likeness character card" in refusal(png((1, 2, 3)))


@pytest.mark.parametrize("name", ["../evil.png", "images/../../etc/passwd", "/etc/passwd", "C:/x.png", "a\\..\\b"])
def test_path_traversal_is_refused(name: str) -> None:
    data = zip_of({CARD_FILE: card_json(), name: b"x"})
    assert "unsafe path" in refusal(data)


def test_unexpected_file_is_refused() -> None:
    assert "unexpected file (`run.sh`)" in refusal(zip_of({CARD_FILE: card_json(), "run.sh": b"rm -rf /"}))


def test_too_many_entries() -> None:
    entries = {CARD_FILE: card_json(), **{f"images/{i:064x}.png": b"x" for i in range(64)}}
    assert "holds 65 files; a character card has at most 64" in refusal(zip_of(entries))


def test_zip_bomb_by_ratio() -> None:
    bomb = zip_of({CARD_FILE: b" " * (8 * 1024 * 1024)})
    assert len(bomb) < 100_000
    assert "looks like a zip bomb" in refusal(bomb)


def test_zip_bomb_by_total_size() -> None:
    small = CardLimits(image=IntakeLimits(), max_bytes=300_000)
    # each entry small enough to escape the ratio check, together far more than the card may unpack to
    entries = {CARD_FILE: card_json(), **{f"images/{i:064x}.png": bytes(60_000) for i in range(6)}}
    data = zip_of(entries)
    assert len(data) < 10_000
    assert "would unpack to more than 0.3 MB" in refusal(data, small)


def test_entry_larger_than_its_header_says_is_refused() -> None:
    data = bytearray(zip_of({CARD_FILE: card_json()}))
    # shrink the declared uncompressed size in the local header and the central directory record
    local, central = data.find(b"PK\x03\x04"), data.rfind(b"PK\x01\x02")
    data[local + 22 : local + 26] = (10).to_bytes(4, "little")
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")
    assert f"`{CARD_FILE}` in this card is damaged" in refusal(bytes(data))


def test_missing_card_json() -> None:
    data = png((1, 2, 3))
    assert f"has no `{CARD_FILE}`" in refusal(zip_of({image_path(sha(data), data): data}))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"{not json", "isn't valid JSON"),
        (b"[1, 2]", "is not valid (the card: Input should be a valid dictionary"),
        (card_json(format="other"), "is not valid (format:"),
        (card_json(name=None), "is not valid (name:"),
        (card_json(views=[{"view": "top", "original": "x"}]), "is not valid (views.0.view:"),
        (card_json(format_version=2), "made by a newer Likeness (card format 2)"),
        (card_json(views=[{"view": "front", "original": "images/nothere.png"}]), "names `images/nothere.png`"),
    ],
)
def test_bad_card_json(document: bytes, message: str) -> None:
    assert message in refusal(zip_of({CARD_FILE: document}))


def test_same_view_twice() -> None:
    data = png((1, 2, 3))
    path = image_path(sha(data), data)
    views = [{"view": "front", "original": path}, {"view": "front", "original": path}]
    assert "same view twice" in refusal(zip_of({CARD_FILE: card_json(views=views), path: data}))


def test_sha_mismatch() -> None:
    data = png((1, 2, 3))
    wrong = f"images/{sha(b'something else')}.png"
    assert f"The image `{wrong}` doesn't match its checksum" in refusal(one_image_card(data, wrong))


def test_non_image_with_a_matching_name() -> None:
    text = b"#!/bin/sh\necho this is not a picture\n"
    message = refusal(one_image_card(text, f"images/{sha(text)}.png"))
    assert message.startswith(f"`images/{sha(text)}.png` in this card: This file isn't a PNG, JPEG, WebP, GIF or AVIF")


def test_image_over_the_pixel_limit() -> None:
    bomb = corpus.decompression_bomb()
    message = refusal(one_image_card(bomb, f"images/{sha(bomb)}.png"))
    assert "megapixel limit" in message


def test_damaged_image() -> None:
    cut = corpus.truncated_jpeg()
    assert "damaged or incomplete" in refusal(one_image_card(cut, f"images/{sha(cut)}.jpg"))


def test_image_type_must_match_its_name() -> None:
    data = corpus.photo_jpeg((64, 64))
    assert "not the image type its name says" in refusal(one_image_card(data, f"images/{sha(data)}.png"))


def test_encrypted_entry_is_refused() -> None:
    data = bytearray(zip_of({CARD_FILE: card_json()}, zipfile.ZIP_STORED))
    # set the "encrypted" flag bit in the central directory record (zipfile cannot write encrypted entries)
    central = data.rfind(b"PK\x01\x02")
    data[central + 8] |= 0x1
    assert "password-protected" in refusal(bytes(data))


# ---------------------------------------------------------------------------------------------------- absurd values


@pytest.mark.parametrize(
    ("document", "message"),
    [
        # past Python's int-string limit json.loads raised a bare ValueError ("Something went wrong" + a traceback)
        (card_json().replace(b'"format_version": 1', b'"format_version": ' + b"9" * 5000), "(5,000 characters)"),
        (card_json().replace(b'"views": []', b'"views": ' + b"1" * 5000), "(5,000 characters)"),
        (card_json().replace(b'"format_version": 1', b'"format_version": ' + b"7" * 4000), "(4,000 characters)"),
        (card_json().replace(b'"format_version": 1', b'"format_version": 1e999'), "`1e999`"),
        (card_json().replace(b'"format_version": 1', b'"format_version": NaN'), "holds `NaN`, which isn't a number"),
        (card_json().replace(b'"views": []', b'"views": -Infinity'), "holds `-Infinity`, which isn't a number"),
        (card_json(description="\ud800"), "holds a broken character"),
        (b"[" * 100_000 + b"]" * 100_000, "isn't valid JSON"),
    ],
)
def test_absurd_values_in_card_json_are_named(document: bytes, message: str) -> None:
    refused = refusal(zip_of({CARD_FILE: document}, zipfile.ZIP_STORED))
    assert message in refused and len(refused) < 400
