"""The character card: kept cards are reused only while everything they show is the same."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.discord_io.embeds import character_embed
from bot.domain import Character, Element, ElementKind, ReferenceView, View
from bot.library.characters import CharacterDetails

NOW = datetime(2026, 12, 4, tzinfo=UTC)


def character(**changes: object) -> Character:
    fields: dict[str, object] = {
        "id": 1, "guild_id": 2, "name": "Mira", "description": "tall", "owner_id": 3, "locked": False,
        "version": 1, "created_at": NOW, "updated_at": NOW,
    }  # fmt: skip
    return Character.model_validate({**fields, **changes})


def view(kind: View) -> ReferenceView:
    return ReferenceView(
        id=1, character_id=1, view=kind, original_blob="a", cleaned_blob=None, cutout_blob=None, uploaded_by=3,
        created_at=NOW,
    )  # fmt: skip


def element(*, bound: bool) -> Element:
    return Element(
        id=1, character_id=1, name="lantern", kind=ElementKind.PROP, original_blob="b", cleaned_blob=None,
        cutout_blob=None, bound=bound, created_at=NOW,
    )  # fmt: skip


def fields_of(details: CharacterDetails) -> dict[str, str]:
    card = character_embed(details)
    return {str(f.name): str(f.value) for f in card.fields} | {
        "title": str(card.title),
        "footer": str(card.footer.text),
    }


def test_the_same_card_is_reused_and_every_change_shows() -> None:
    plain = CharacterDetails(character(), [], [])
    assert character_embed(plain) is character_embed(CharacterDetails(character(), [], []))
    before = fields_of(plain)
    with_front = fields_of(CharacterDetails(character(), [view(View.FRONT)], []))
    assert with_front["Reference views (1/5)"].startswith("✅ Front") and "Reference views (0/5)" in before
    assert before["footer"] == "Next view to add: Front" and with_front["footer"] == "Next view to add: Three-quarter"
    bound = fields_of(CharacterDetails(character(), [], [element(bound=True)]))["Elements"]
    unbound = fields_of(CharacterDetails(character(), [], [element(bound=False)]))["Elements"]
    assert bound.startswith("🔗") and unbound.startswith("⛓️‍💥")
    assert fields_of(CharacterDetails(character(locked=True), [], []))["title"] == "🔒 Mira"
    assert fields_of(CharacterDetails(character(description="short", version=2), [], []))["Version"] == "v2"
