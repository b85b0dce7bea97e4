"""A character, its reference views and its elements as the prompt spine reads them (no storage)."""

from __future__ import annotations

from datetime import datetime

from bot.domain import Character, Element, ElementKind, ReferenceView, View

NOW = datetime(2025, 1, 1)
TRAITS = "tall woman, red bob, green eyes"
AVA = Character(
    id=1,
    guild_id=1,
    name="Ava",
    description=TRAITS,
    owner_id=10,
    locked=True,
    version=3,
    created_at=NOW,
    updated_at=NOW,
)


def view(which: View, *, cleaned: bool = True) -> ReferenceView:
    return ReferenceView(
        id=1,
        character_id=1,
        view=which,
        original_blob=f"orig-{which.value}",
        cleaned_blob=f"clean-{which.value}" if cleaned else None,
        cutout_blob=None,
        uploaded_by=10,
        created_at=NOW,
    )


def element(name: str, kind: ElementKind, *, bound: bool = True, cleaned: bool = True) -> Element:
    return Element(
        id=1,
        character_id=1,
        name=name,
        kind=kind,
        original_blob=f"orig-{name}",
        cleaned_blob=f"clean-{name}" if cleaned else None,
        cutout_blob=None,
        bound=bound,
        created_at=NOW,
    )
