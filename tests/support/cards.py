"""The pieces of a character card: digests, zips, and elements as a card carries them (every image one digest)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from datetime import UTC, datetime

from bot.domain import Element, ElementKind

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zip_of(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def element(name: str, digest: str) -> Element:
    """A prop as a card carries it: every image one digest, no ids (a card keeps none)."""
    return Element(
        id=0,
        character_id=0,
        name=name,
        kind=ElementKind.PROP,
        original_blob=digest,
        cleaned_blob=digest,
        cutout_blob=digest,
        bound=True,
        created_at=NOW,
    )
